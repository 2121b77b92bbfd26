"""One process on its dataset: the shared decisions made in memory.

The same few operations as ``scaleout/decisions.py``'s ``WorkerMode`` (which makes them in Redis for many
workers): admit a checked image or say why not, give an admission back, take a kept image's
count back, settle an image once its line is written. Here each runs synchronously on the
reactor, so no two downloads can interleave inside one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..outcomes import ImageRejected, Outcome
from .identity import site_of
from .near_copies import near_detail
from .worker_staging import WorkerFolder, forget_session

if TYPE_CHECKING:
    from ..items import ImageItem
    from .core import DatasetCore


logger = logging.getLogger(__name__)


FENCED = ("this worker stopped answering for longer than its lease (frozen? suspended?) and the other workers "
          "took its share over; it stops (what it had not finished is theirs)")


class SharedGone(Exception):
    """Redis stayed out of reach too long; the message is one line."""


class LocalMode:
    """The quota, the digests of kept images and the learned placeholders of one process.

    The decisions protocol (``scaleout/decisions.py``'s ``WorkerMode`` offers the same): ``shared``
    (whether other processes share the folder and its decisions), ``enter`` / ``join`` /
    ``leave`` / ``leave_folder`` (the run's life), ``works_alone``, ``counts``, ``run_fields``, then the decisions
    themselves: ``admit``, ``give_back``, ``revoke``, ``count_present``, ``committed``,
    ``reconcile``, ``settle``."""

    shared = False  # one process: the folder and its decisions are this run's alone

    def __init__(self, core: DatasetCore):
        self.core = core

    def enter(self) -> int:
        """Take the folder alone: no worker can be alive (they share the lock this run holds
        alone), so clean up after dead ones and a stopped run's staging. Files removed. Blocking."""
        core = self.core
        forget_session(core.disk.root)
        WorkerFolder(core.disk, "").reap_all_dead(core.writer)
        return core.disk.clear_staging()

    def run_fields(self) -> dict[str, str]:
        """What dataset.json records of this process beside the run."""
        return {}

    async def join(self, extra: Any = None, terms: Any = None) -> None:
        """Nothing to join: the decisions are this process's."""

    async def leave(self) -> None:
        """Nothing to hand over."""

    def leave_folder(self, finished: bool) -> None:
        """Nothing of the folder is this process's alone."""

    def works_alone(self) -> bool:
        """Whether no other process works on the dataset now (always, here). Blocking."""
        return True

    async def counts(self, groups: list[str]) -> dict[str, int] | None:
        """Each group's count across the processes sharing the dataset: None, none share it."""
        return None

    def reconcile(self, item: ImageItem) -> bool:
        """Before an image's line is written: a late withdrawal is settled; its line is written."""
        self.withdraw_late(item)
        return True

    async def learn(self, item: ImageItem) -> None:
        """The one place a process learns placeholders: the same bytes served for many photo URLs
        of one site (or two of one class) are one. Refuse this copy (ImageRejected) and withdraw
        those kept before (their classes are topped up)."""
        core = self.core
        learner, site = core.learner, site_of(item.result.url)
        known = learner.is_placeholder(site, item.result.sha256 or "")
        withdraw = learner.observe(site, item.result.sha256 or "", item.result.url or "", item.group)
        if withdraw is None:
            return
        detail = f"the same image was served for {learner.threshold}+ photo URLs of {site}, or 2 of one class"
        if not known:
            core.stats.inc_value("placeholders/learned")
            logger.warning("Learned a placeholder of %s (the same image for %d URLs); withdrawing %d "
                           "image(s) kept before", site, learner.threshold, len(withdraw))
        for ref, pixels in withdraw:
            await core.withdraw(ref, item.result.sha256, pixels, detail)
        item.result.learned = True
        raise ImageRejected(Outcome.PLACEHOLDER, detail)

    async def admit(self, item: ImageItem) -> tuple[str, str] | None:
        """Refuse a checked image (outcome, detail), or admit it (None)."""
        core, counted, result = self.core, item.kind == "image", item.result
        if core.learner.is_placeholder(site_of(result.url), result.sha256 or ""):
            return Outcome.PLACEHOLDER, "the same image was served for many photo URLs of this site"
        if counted and core.seen is not None and (first := core.seen.duplicate_of(result.sha256, result.pixels)):
            where = f" in {first.group}" if first.group else ""
            return Outcome.DUPLICATE, f"the same image as {first.image_id}{where} ({first.url})"
        if counted and core.near is not None and (near := core.near.copy_of(result.phash)):
            return Outcome.DUPLICATE, near_detail(*near)
        if counted and not core.quota.admit(item.group):
            return Outcome.SURPLUS, f"{item.group or 'the selection'} was already full"
        ref = item.ref()
        if counted and core.seen is not None:
            core.seen.add_known(item.result.sha256, item.result.pixels, ref)
        if counted and core.near is not None:
            core.near.add(item.result.phash, ref)
        return None

    def committed(self) -> None:
        """An admitted image reached its final name (nothing to note in one process)."""

    async def give_back(self, item: ImageItem, admitted: bool = True) -> None:
        self.undo(item)

    def undo(self, item: ImageItem) -> None:
        if item.kind == "image":
            self.core.quota.revoke(item.group)
            if self.core.seen is not None:
                self.core.seen.forget(item.result.sha256, item.result.pixels)
            if self.core.near is not None:
                self.core.near.forget(item.image_id)

    async def revoke(self, group: str, image_id: str, sha: str | None, pixels: str | None, url: str | None) -> None:
        """A kept image is out of the dataset (withdrawn, trimmed): its count and bytes go."""
        if self.core.seen is not None:
            self.core.seen.forget(sha, pixels)
        if self.core.near is not None:
            self.core.near.forget(image_id)
        self.core.quota.revoke(group)

    async def count_present(self, item: ImageItem) -> None:
        """Counted by the core's own quota already; its perceptual hash joins the index."""
        if self.core.near is not None and item.kind == "image":
            self.core.near.add(item.result.phash, item.ref())

    def withdraw_late(self, item: ImageItem) -> None:
        """A placeholder was learned while this copy was being kept: take it back out."""
        core, result = self.core, item.result
        if result.outcome != Outcome.KEPT or not core.learner.is_placeholder(site_of(result.url), result.sha256 or ""):
            return
        if result.path:
            core.disk.remove(result.path)
        self.undo(item)
        result.path = None
        result.decide(Outcome.PLACEHOLDER, "withdrawn: the same image was served for many photo URLs")
        result.learned = True

    def settle(self, item: ImageItem) -> None:
        """The image's line is written: the learner notes a kept copy, the slot is free again."""
        core = self.core
        if item.result.outcome == Outcome.KEPT and item.result.sha256:
            core.learner.note_kept_ref(site_of(item.result.url), item.result.sha256, item.ref(), item.result.pixels)
        if item.kind == "image":
            core.quota.release(item.group)
