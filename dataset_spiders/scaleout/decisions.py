"""This process as one of many workers building one dataset (``REDIS_URL``).

The dataset core hands its shared decisions here: admitting an image (the one atomic step in
Redis that refuses placeholders, duplicates and surplus), giving an admission back, settling
an image once its line is written, counting an image found in place. The candidates (an
ImageNet class's list, or ISIC's listed records) are handed out here too, each to one worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..dataset import manifest
from ..dataset.formats import in_place
from ..dataset.identity import KeptRef, site_of
from ..dataset.near_copies import is_hash, near_detail
from ..dataset.worker_staging import WorkerFolder, new_worker_id
from ..outcomes import Outcome
from .state import Hooks, Rebuilt, SharedGone, SharedState, reference, text

if TYPE_CHECKING:
    from ..dataset.core import DatasetCore
    from ..items import ImageItem

logger = logging.getLogger(__name__)

SETTLE_DELAY = 0.025  # seconds a recorded image waits to be settled with others in one round trip


@dataclass(frozen=True)
class Taken:
    """TAKE's answer: ``verdict`` is ``take`` (``indices``: the candidates handed to this
    worker, their places in the class's list), ``wait``, ``full`` or ``done``; ``kept``: the
    class's count across workers."""

    verdict: str
    kept: int
    indices: tuple[int, ...] = ()


@dataclass(frozen=True)
class Dequeued:
    """DEQUEUE's answer: ``verdict`` is ``take`` (``index`` and ``record``: the listed record's
    place and JSON), ``wait``, ``full`` or ``empty`` (``pending``: records still in flight);
    ``kept``: the selection's count across workers."""

    verdict: str
    kept: int
    index: str = ""
    record: str = ""
    pending: int = 0


class WorkerMode:
    """See the module docstring; ``DatasetCore.workers`` when ``REDIS_URL`` is set."""

    def __init__(self, core: DatasetCore, url: str, settings: Any):
        self.core, self.url = core, url
        self.worker = new_worker_id()
        self.folder = WorkerFolder(core.disk, self.worker)
        self.lease = settings.getfloat("DATASET_LEASE")
        self.retry_for = settings.getfloat("REDIS_RETRY_FOR")
        self.state: SharedState | None = None
        self.in_hand = 0  # admitted images whose line is not yet written (or given back)
        self.alone = False  # the first worker of the dataset (no other held it when this one joined)
        self.extra: Callable[[], dict[str, set[str]]] | None = None
        self.requeued: set[str] = set()
        self._settling: set[asyncio.Task[None]] = set()
        self._to_settle: list[ImageItem] = []
        self._decided: set[str] = set()
        self._decided_at = 0
        self._settle_timer: asyncio.TimerHandle | None = None

    shared = True  # many processes: the folder and its decisions are shared through Redis

    def enter(self) -> int:
        """This worker's own staging folder, locked, and its commit journal in it (blocking; the
        core's claim); the others' are cleaned once they are dead. Files removed: none."""
        self.folder.enter()
        self.core.journal.path = self.core.disk.journal_path
        return 0

    def run_fields(self) -> dict[str, str]:
        return {"worker": self.worker}

    def leave_folder(self, finished: bool) -> None:
        self.folder.leave(finished=finished)

    def works_alone(self) -> bool:
        """Whether no other worker is live on the dataset now. Blocking."""
        return not self.folder.live_peers()

    async def counts(self, groups: list[str]) -> dict[str, int] | None:
        """Each group's count across all workers (None before joining)."""
        return await self.state.counts(groups) if self.state is not None else None

    async def join(self, extra: Callable[[], dict[str, set[str]]] | None = None,
                   terms: dict[str, Any] | None = None) -> None:
        """Join the shared state (rebuilding it from disk when first). ``extra`` adds what the
        spider counts on disk (ImageNet: the files in each class folder); ``terms``, what the
        run is (spider, target, selection): a worker whose terms differ from those of the live
        workers is refused. Raises SharedGone."""
        try:
            session = await asyncio.to_thread(self.folder.session)
        except OSError as exc:
            raise SharedGone(f"cannot use {self.folder.session_path}: {exc.strerror or exc}") from None
        self.extra = extra
        try:
            self.state = SharedState(self.url, f"dataset-spiders:{session['dataset']}:", self.worker,
                                     self.core.disk.staging_dir, self.lease, self.retry_for)
        except ValueError as exc:
            raise SharedGone(f"REDIS_URL is not a Redis URL ({exc}); e.g. redis://localhost:6379/0") from None
        starting = self.folder.starting()
        self.alone = await asyncio.to_thread(starting.__enter__)
        try:
            if self.alone and await self.state.others_alive():
                # workers hold leases on this dataset's keys, yet none works in this folder: it
                # is a copy (cp -r) of theirs, and gets keys of its own
                await self.state.close()
                session = await asyncio.to_thread(self.folder.renew_session)
                self.state = SharedState(self.url, f"dataset-spiders:{session['dataset']}:", self.worker,
                                         self.core.disk.staging_dir, self.lease, self.retry_for)
                logger.warning("%s is a copy of a dataset whose workers run elsewhere: it gets a dataset id of "
                               "its own in Redis", self.core.disk.root)
            if self.alone:  # what Redis holds may be stale (the folder changed since): rebuild
                await self.state.forget_epoch()
        finally:
            starting.__exit__(None, None, None)
        hooks = Hooks(self._drain, self.folder.live_peers, self._recount, self._reap_dead, self._withdraw,
                      self._fence)
        await self.state.join(hooks)
        self.state.on_fenced = self.core.writer.fence
        self.core.writer.may_write = self.state.lease_holds
        if terms is not None:
            mine = json.dumps(terms, sort_keys=True)
            theirs = await self.state.agree(mine)
            if theirs is not None:
                raise SharedGone(disagreement(json.loads(theirs), terms))
        if self.core.hosts.enabled:
            self.core.hosts.shared = SharedHosts(self.state, self.core.hosts)
        logger.info("Worker %s joined the dataset's shared state in Redis (%s)", self.worker,
                    "first of its workers" if self.alone else "with other workers")

    async def leave(self) -> None:
        if isinstance(self.core.hosts.shared, SharedHosts):
            self.core.hosts.shared.stop()
        self._start_settling()
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        if self.state is not None:
            with contextlib.suppress(SharedGone):
                await self._reap_the_dead_before_leaving()
            await self.state.close()

    async def _reap_the_dead_before_leaving(self) -> None:
        """A peer that died (its staging folder is free) may have renamed images whose lines it
        never wrote, and its admissions still count: its classes look full. Before this worker
        leaves, wait for such a peer's lease to run out and reap it, so the dataset it leaves has
        a line for every file. (Two leases and two seconds at most: a busy machine can be slow to
        tell Redis; a peer not reaped by then is reaped by the next run, on disk.)"""
        assert self.state is not None
        deadline = asyncio.get_running_loop().time() + 2 * self.lease + 2
        while any(not alive for alive in (await asyncio.to_thread(self.folder.peers)).values()):
            await self.state.reap()
            if asyncio.get_running_loop().time() > deadline:
                logger.warning("A stopped worker's folder could not be reaped before leaving; the next run "
                               "recovers its images' lines")
                return
            await asyncio.sleep(0.1)

    # --- decisions -----------------------------------------------------------------------------

    async def learn(self, item: ImageItem) -> None:
        """Nothing here: with workers, placeholders are learned in the one shared decision
        (ADMIT, ``scaleout/scripts.py``), where every worker's copies are counted."""

    async def admit(self, item: ImageItem) -> tuple[str, str] | None:
        """The shared keep-or-reject decision of a checked image: None admits it."""
        assert self.state is not None
        core, counted = self.core, item.kind == "image"
        sha, pixels, site = item.result.sha256 or "", item.result.pixels or "", site_of(item.result.url)
        key = f"{site}|{sha}" if sha else ""
        path = core.disk.relative(item.result.path) or ""
        ref = reference(item.image_id, item.group, path, item.result.url or "", pixels)
        target = core.quota.target if core.quota.target is not None else -1
        answer = await self.state.batched(
            "ADMIT", self.worker, item.group, item.image_id, sha, pixels, key, item.result.url or "", target,
            core.learner.threshold, int(counted), int(core.seen is not None), ref, path, *self._near(item),
        )
        verdict = answer[0]
        if verdict == "ok":
            if counted:
                self.in_hand += 1
                core.quota.observe(item.group, int(answer[1]))
            return None
        if verdict == "surplus":
            core.quota.observe(item.group, int(answer[1]))
            return Outcome.SURPLUS, f"{item.group or 'the selection'} was already full"
        if verdict == "duplicate":
            first = json.loads(answer[1])
            where = f" in {first['group']}" if first.get("group") else ""
            return Outcome.DUPLICATE, f"the same image as {first['id']}{where} ({first['url']})"
        if verdict == "near":
            first = json.loads(answer[1])
            return Outcome.DUPLICATE, near_detail(KeptRef(first["id"], first["group"], first["path"], first["url"]),
                                                  int(answer[2]))
        if verdict == "present":
            return Outcome.PRESENT, "another worker kept it (fetched again after Redis lost its state)"
        item.result.learned = True
        detail = f"the same image was served for {core.learner.threshold}+ photo URLs of {site}"
        if verdict == "learned":
            core.stats.inc_value("placeholders/learned")
            logger.warning("Learned a placeholder of %s (the same image for %d URLs); withdrawing %d image(s) "
                           "kept before", site, core.learner.threshold, len(answer) - 1)
            for raw in answer[1:]:
                first = json.loads(raw)
                await core.withdraw(KeptRef(first["id"], first["group"], core.disk.absolute(first["path"]) or "",
                                            first["url"]), sha, first.get("px"), detail)
        return Outcome.PLACEHOLDER, detail

    def committed(self) -> None:
        """Renamed into place; it stays in hand until its line is written (``settle``)."""

    async def give_back(self, item: ImageItem, admitted: bool = True) -> None:
        """An admission whose file never reached its name (or was withdrawn) no longer counts."""
        assert self.state is not None
        if admitted:
            self.in_hand -= 1
        await self.revoke(item.group, item.image_id, item.result.sha256, item.result.pixels, item.result.url)

    async def revoke(self, group: str, image_id: str, sha: str | None, pixels: str | None, url: str | None) -> None:
        assert self.state is not None
        key = f"{site_of(url)}|{sha}" if sha else ""
        answer = await self.state.run("REVOKE", group, image_id, sha or "", pixels or "", key)
        self.core.quota.observe(group, int(answer[1]))

    async def count_present(self, item: ImageItem) -> None:
        assert self.state is not None
        path = self.core.disk.relative(item.result.path) or ""
        ref = reference(item.image_id, item.group, path, item.result.url or "")
        answer = await self.state.run("PRESENT", item.group, item.image_id, *self._near(item), ref)
        self.core.quota.observe(item.group, int(answer[1]))

    def _near(self, item: ImageItem) -> tuple[str, int]:
        """The image's perceptual hash and the distance within which a kept one is its original."""
        near = self.core.near
        if near is None or item.kind != "image" or not is_hash(item.result.phash):
            return "", -1
        return item.result.phash or "", near.distance

    def reconcile(self, item: ImageItem) -> bool:
        """Whether the image's line is to be written. After Redis lost its state the candidates
        are handed out again from the start, and one another worker was still fetching may be
        fetched here too: if that worker's copy is in place, this image is ``present``; a line
        saying it was not needed (``surplus``) is not written at all, as it could land after the
        other worker's ``kept`` line. Blocking-light, and only after a rebuild."""
        if not self.state or not self.state.rebuilds or item.kind != "image" or not item.result.stem:
            return True
        if item.result.outcome in (Outcome.KEPT, Outcome.PRESENT):
            return True
        found = in_place(item.result.stem)
        if found is not None:
            item.result.outcome, item.result.path = Outcome.PRESENT, found
            item.result.detail = "another worker kept it (it was fetched twice after Redis lost its state)"
            return True
        return item.result.outcome != Outcome.SURPLUS

    def settle(self, item: ImageItem) -> None:
        """The image's line is written: its candidate is done (and its slot free) for everyone.
        Settled in batches, one round trip for all the images recorded within ``SETTLE_DELAY``."""
        if item.kind == "image" and item.result.outcome == Outcome.KEPT and item.result.path:
            self.in_hand -= 1  # its line is queued: a drain's flush writes it
        self._to_settle.append(item)
        if len(self._to_settle) >= 64 or self._settle_timer is None:
            loop = asyncio.get_event_loop()
            if self._settle_timer is not None:
                self._settle_timer.cancel()
            delay = 0 if len(self._to_settle) >= 64 else SETTLE_DELAY
            self._settle_timer = loop.call_later(delay, self._start_settling)

    def _start_settling(self) -> None:
        self._settle_timer = None
        batch, self._to_settle = self._to_settle, []
        if batch:
            task = asyncio.get_event_loop().create_task(self._settle(batch))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)

    def _settle_args(self, item: ImageItem) -> tuple[Any, ...]:
        kept = item.kind == "image" and item.result.outcome == Outcome.KEPT and bool(item.result.path)
        spare = -1
        if item.result.outcome == Outcome.SURPLUS and item.flight and item.image_id not in self.requeued:
            self.requeued.add(item.image_id)  # not needed now; wanted if a withdrawal makes room
            spare = item.spare
        sha = item.result.sha256 or ""
        key = f"{site_of(item.result.url)}|{sha}" if sha and self.core.learner.threshold else ""
        pixels = item.result.pixels or ""
        return (self.worker, item.group, item.flight, item.image_id, int(kept), sha, pixels, key, spare)

    async def _settle(self, batch: list[ImageItem]) -> None:
        core = self.core
        try:
            assert self.state is not None
            answers = await self.state.run_many("SETTLE", [self._settle_args(item) for item in batch])
            for item, answer in zip(batch, answers, strict=True):
                if answer[0] == "withdraw" and item.result.path:
                    detail = "withdrawn: the same image was served for many photo URLs"
                    await core.withdraw(item.ref(), item.result.sha256, item.result.pixels, detail)
        except SharedGone as exc:
            core.fail(str(exc))
        finally:
            for item in batch:
                if item.kind == "image":
                    core.quota.release(item.group)

    # --- candidates ----------------------------------------------------------------------------

    async def decided(self) -> set[str]:
        """Image ids that already have their outcome in this group of workers' run. Empty until
        Redis lost its state: from then on, as the manifest says (the candidates are handed out
        from the start again, and those must not be fetched, nor recorded, twice)."""
        assert self.state is not None
        if self.state.rebuilds != self._decided_at:
            self._decided_at = self.state.rebuilds
            self._decided = await asyncio.to_thread(self._read_decided)
        return self._decided

    def _read_decided(self) -> set[str]:
        self.core.writer.flush()
        offset = self.folder.session().get("offset")
        start = offset if isinstance(offset, int) and offset >= 0 else 0
        lines = manifest.read(self.core.disk.manifest_path, start)
        found = {record.id for _, record in lines if record.kind == "image"}
        return found | {key.id for key in self.core.latest if key.kind == "image"}

    async def take(self, group: str, total: int, slack: int, want: int, mine: int = 0) -> Taken:
        """Up to ``want`` candidates of ``group`` for this worker (their places in the class's
        list), or why none: ``full``, ``done`` (out of candidates, none in flight) or ``wait``."""
        assert self.state is not None
        target = self.core.quota.target if self.core.quota.target is not None else -1
        answer = await self.state.run("TAKE", self.worker, group, total, target, slack, want, mine)
        taken = Taken(str(answer[0]), int(answer[1]), tuple(int(i) for i in answer[2:]))
        self.core.quota.observe(group, taken.kept)
        return taken

    async def dequeue(self, slack: int) -> Dequeued:
        """The next listed record for this worker (``take``, with its place and its JSON), or why
        none: ``full``, ``wait``, or ``empty`` (with how many are in flight)."""
        assert self.state is not None
        target = self.core.quota.target if self.core.quota.target is not None else -1
        answer = await self.state.run("DEQUEUE", self.worker, target, slack)
        verdict, kept = str(answer[0]), int(answer[1])
        self.core.quota.observe("", kept)
        if verdict == "take":
            return Dequeued(verdict, kept, index=str(answer[2]), record=str(answer[3]))
        return Dequeued(verdict, kept, pending=int(answer[2]) if verdict == "empty" else 0)

    async def enqueue(self, image_id: str, record: str) -> None:
        assert self.state is not None
        await self.state.run("ENQUEUE", self.worker, image_id, record)

    async def release(self, group: str, flight: str) -> None:
        """A candidate handed out that needs no download (it is in place already, or failed before)."""
        assert self.state is not None
        await self.state.run("SETTLE", self.worker, group, flight, "", 0, "", "", "", -1)

    # --- the state's hooks ---------------------------------------------------------------------

    async def _drain(self) -> None:
        while self.in_hand > 0:
            await asyncio.sleep(0.02)
        await asyncio.to_thread(self.core.writer.flush)
        self.core.disk.forget_listings()  # files other workers kept since: look again before fetching

    async def _withdraw(self, found: list[tuple[str, str]]) -> None:
        for raw, sha in found:
            ref = json.loads(raw)
            path = self.core.disk.absolute(ref["path"]) or ""
            why = "the same image was served for too many photo URLs (counted again after Redis lost its state)"
            await self.core.withdraw(KeptRef(ref["id"], ref["group"], path, ref["url"]), sha, ref.get("px"), why)

    async def _reap_dead(self, worker: str, staging: str, held: dict[str, str]) -> list[str] | None:
        return await asyncio.to_thread(self.folder.reap, worker, self.core.writer, held)

    async def _fence(self, worker: str, held: dict[str, str]) -> list[str]:
        return await asyncio.to_thread(self.folder.fence, worker, self.core.writer, held)

    async def _recount(self) -> Rebuilt:
        return await asyncio.to_thread(self._recount_now)

    def _recount_now(self) -> Rebuilt:
        """The disk's truth: every image of this group of workers in place, and what to refuse."""
        core, disk = self.core, self.core.disk
        self.folder.reap_all_dead(core.writer)
        core.writer.flush()
        session = self.folder.session()
        size = os.path.getsize(disk.manifest_path) if os.path.exists(disk.manifest_path) else 0
        offset = session.get("offset")
        if not self.folder.live_peers() or not isinstance(offset, int) or not 0 <= offset <= size:
            offset = session["offset"] = size  # a new group of workers: counting starts now
            self.folder.write_session(session)
        truth = Rebuilt()
        if core.seen is not None:
            for name, by_digest in (("bytes", core.seen.by_bytes), ("pixels", core.seen.by_pixels)):
                for digest, ref in by_digest.items():
                    truth.digests[name][digest] = reference(ref.image_id, ref.group, disk.relative(ref.path) or "",
                                                            ref.url)
        truth.learned.update(f"{site}|{sha}" for site, sha in core.learner.learned)
        for (site, sha), seen in core.learner.urls.items():  # earlier runs', as read at start-up
            truth.urls.setdefault(f"{site}|{sha}", set()).update([seen] if isinstance(seen, str) else seen)
        last: dict[manifest.Key, manifest.Record] = {}
        for _, record in manifest.read(disk.manifest_path, offset):
            last[record.key] = record
        for record in last.values():
            if record.kind != "image":
                continue
            if record.outcome == Outcome.PLACEHOLDER and record.learned and record.sha256:
                truth.learned.add(f"{site_of(record.url)}|{record.sha256}")
            key = f"{site_of(record.url)}|{record.sha256}" if record.sha256 and record.url else ""
            if key and core.learner.threshold:
                truth.urls.setdefault(key, set()).add(record.url or "")
            path = disk.absolute(record.path) if record.path else None
            if record.kept and path and os.path.isfile(path):
                truth.counted.setdefault(record.group or "", {})[record.id] = ""
                if key and core.learner.threshold:
                    truth.refs.setdefault(key, {})[record.id] = reference(
                        record.id, record.group or "", record.path or "", record.url or "", record.pixels or "")
                if core.seen is not None:
                    stored = reference(record.id, record.group or "", record.path or "", record.url or "")
                    for name, recorded in (("bytes", record.sha256), ("pixels", record.pixels)):
                        if recorded:
                            truth.digests[name].setdefault(recorded, stored)
                if core.near is not None and is_hash(record.phash):
                    truth.add_near(record.phash or "", record.group or "", record.id, reference(
                        record.id, record.group or "", record.path or "", record.url or ""))
        if core.near is not None:  # earlier runs' kept images, as read at start-up
            truth.near_distance = core.near.distance
            for phash, ref in core.near.hashes().items():
                truth.add_near(phash, ref.group, ref.image_id,
                               reference(ref.image_id, ref.group, disk.relative(ref.path) or "", ref.url))
        for group, ids in (self.extra() if self.extra else {}).items():
            truth.counted.setdefault(group, {}).update(dict.fromkeys(ids, ""))
        threshold = core.learner.threshold or float("inf")
        for (site, sha), kept in core.learner.kept.items():  # earlier runs' kept copies, as read at start-up
            for ref, pixels in kept.values() if isinstance(kept, dict) else [kept]:
                truth.refs.setdefault(f"{site}|{sha}", {})[ref.image_id] = reference(
                    ref.image_id, ref.group, disk.relative(ref.path) or "", ref.url, pixels or "")
        for key in [k for k, urls in truth.urls.items() if k in truth.learned or len(urls) >= threshold]:
            del truth.urls[key]
            refs = truth.refs.pop(key, {})
            if key not in truth.learned:  # a placeholder now that every worker's URLs are counted together
                truth.learned.add(key)
                truth.withdraw.extend((ref, key.rpartition("|")[2]) for ref in refs.values())
        return truth


class SharedHosts:
    """Host health across workers: a host one worker found down is down for all. Advisory (it
    decides what to try, never what is kept), so a small hash in the dataset's key space,
    ``hosts_down`` (host -> JSON ``{"until": epoch seconds, "why": ...}``), written when a host goes
    down or answers again and read every ``EVERY`` seconds; a Redis error only skips a beat."""

    EVERY = 1.0

    def __init__(self, state: SharedState, health: Any):
        self.state, self.health = state, health
        self.key = state.key("hosts_down")
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reader = asyncio.ensure_future(self._read_forever())

    def _send(self, call: Callable[[], Any]) -> None:
        async def send() -> None:
            with contextlib.suppress(Exception):
                await call()

        task = asyncio.ensure_future(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def down(self, host: str, why: str, wait: float) -> None:
        note = json.dumps({"until": time.time() + wait, "why": why})
        self._send(lambda: self.state.redis.hset(self.key, host, note))

    def up(self, host: str) -> None:
        self._send(lambda: self.state.redis.hdel(self.key, host))

    async def _read_forever(self) -> None:
        while True:
            try:
                found = await self.state.redis.hgetall(self.key)
            except Exception:
                found = {}
            self._take(found)
            await asyncio.sleep(self.EVERY)

    def _take(self, found: dict[bytes | str, bytes | str]) -> None:
        now, mono = time.time(), time.monotonic()
        for raw_host, raw in found.items():
            with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
                note = json.loads(raw)
                left = float(note["until"]) - now
                if left > 0:
                    self.health.mark_down(text(raw_host), f"found by another worker: {note['why']}"[:300],
                                          publish=False, now=mono, wait=left)

    def stop(self) -> None:
        self._reader.cancel()


def disagreement(theirs: dict[str, Any], mine: dict[str, Any]) -> str:
    """One line: what the live workers run on, against this one's terms."""
    keys = [k for k in dict.fromkeys([*theirs, *mine]) if theirs.get(k) != mine.get(k)]

    def shown(terms: dict[str, Any]) -> str:
        return ", ".join(f"{k}={json.dumps(terms.get(k)) if not isinstance(terms.get(k), str) else terms[k]}"
                         for k in keys)

    return (f"the workers already running on this dataset have {shown(theirs)}, this one {shown(mine)}: give every "
            "worker the same arguments, or start this one after they end")
