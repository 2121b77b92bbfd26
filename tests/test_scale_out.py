"""Several `scrapy crawl` processes (workers, ``-s REDIS_URL=...``) build one dataset together
against a real redis-server: exact counts across workers, a killed worker's share taken over,
Redis restarted or gone, late workers, and the folder lock between workers and plain runs.

Each worker gets its own photo-host proxy, so the test knows which worker fetched what."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dataset_spiders.sources import splits
from tests.conftest import ROOT, clean_env, crawl_command, run_scrapy, start_scrapy
from tests.emulators import FakeImage, ImageHost, IsicV2Server, images, make_archive
from tests.emulators.imagenet import FakePhoto, GeturlsServer, PhotoHosts, make_classes, placeholder_png
from tests.emulators.server import Request
from tests.redis_server import RedisServer
from tests.test_imagenet_crawl import FolderWatcher
from tests.test_isic_catalog import assert_whole_groups, group_of, grouped_archive

PER_CLASS = 5
FAST = (0.02, 0.1)
MID_RUN = (0.25, 0.5)  # seconds per photo: a run of two workers lasts a few seconds


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server (no persistence) in ``tmp_path/redis``, stopped at the end."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


def test_the_redis_helper_restarts_on_its_port_with_or_without_its_data(redis_server, tmp_path):
    with RedisServer(tmp_path / "kept", persist=True) as durable:
        for server in (redis_server, durable):
            server.client().set("k", "v")
            port = server.port
            server.restart(crash=True)
            assert (server.port, server.url) == (port, f"redis://127.0.0.1:{port}/0")
            assert server.client().get("k") == (b"v" if server is durable else None)
    assert not durable.running


# -- workers ------------------------------------------------------------------------------------
@dataclass
class Worker:
    """One `scrapy crawl` process; its stderr goes to a file (a pipe could fill and stall it)."""

    name: str
    proc: Any  # subprocess.Popen, or a warm start (tests/conftest.py start_scrapy)
    err: Path
    hosts: PhotoHosts | None = None

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        """The exit status; killed and failed after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} still running after {timeout} s; stderr ends:\n{self.stderr[-3000:]}")

    def kill(self) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


Spawn = Callable[..., Worker]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """``spawn(spider, out, *args, settings=..., hosts=...)`` starts a crawl; all are killed at the end."""
    started: list[Worker] = []

    def start(spider: str, out: Path, *args: str, settings: Mapping[str, str] | None = None,
              hosts: PhotoHosts | None = None, env: dict[str, str] | None = None) -> Worker:
        name = f"{spider}-{len(started)}"
        err = tmp_path / f"{name}.stderr"
        with open(err, "wb") as f:
            proc = start_scrapy(crawl_command(spider, out, *args, settings=dict(settings or {})),
                                env=clean_env(hosts.proxy_env() if hosts else env), stderr=f)
        started.append(Worker(name, proc, err, hosts))
        return started[-1]

    yield start
    for worker in started:
        worker.kill()


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def assert_running(workers: Sequence[Worker], before: str) -> None:
    """Every worker is still running (else the moment tested came too late: say why they ended)."""
    ended = [w for w in workers if not w.running]
    assert not ended, "\n\n".join(f"{w.name} ended (exit {w.proc.returncode}) before {before}:\n"
                                  f"{w.stderr[-2500:]}" for w in ended)


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def settings_for(redis: RedisServer | None, **extra: str) -> dict[str, str]:
    """Few requests at a time per worker, so no worker can do the whole dataset alone at once."""
    base = {"CONCURRENT_REQUESTS": "4", "CONCURRENT_REQUESTS_PER_DOMAIN": "4"}
    return base | ({"REDIS_URL": redis.url} if redis else {}) | extra


# -- the dataset --------------------------------------------------------------------------------
def scenario(latency: tuple[float, float], n_classes: int = 8, seed: int = 21) -> dict[str, list[FakePhoto]]:
    """``n_classes`` x 14 candidates, ~30 % failing; the last class has only 3 good URLs; a redirect
    to Flickr's placeholder; Flickr's placeholder served as the photo by 3 URLs near the top of 3
    classes (always tried, so always learned, and any copy kept before then withdrawn); one image
    under two URLs of two classes (kept at most once)."""
    classes = make_classes(n_classes, 14, seed=seed, failure_rate=0.3, latency=latency)
    w = list(classes)
    for i, photo in enumerate(classes[w[-1]]):
        photo.behaviour = "ok" if i in (3, 8, 12) else "404"
    classes[w[0]][1].behaviour = classes[w[3]][0].behaviour = classes[w[5]][1].behaviour = "placeholder_direct"
    classes[w[1]][2].behaviour = "redirect_placeholder"
    classes[w[1]][5].behaviour = classes[w[2]][4].behaviour = "ok"
    classes[w[2]][4].body = classes[w[1]][5].body
    return classes


def expected_counts(classes: Mapping[str, Sequence[FakePhoto]]) -> dict[str, int]:
    """min(N, good URLs) per class; the shared image leaves both its classes with more than N."""
    counts = {w: min(PER_CLASS, sum(p.is_good for p in ps)) for w, ps in classes.items()}
    *full, short = classes
    assert counts == {**dict.fromkeys(full, PER_CLASS), short: 3}, "the scenario no longer has the shape tested"
    assert all(sum(p.is_good for p in classes[w]) > PER_CLASS for w in full[1:3])
    return counts


def imagenet_args(api: GeturlsServer, classes: Mapping[str, object]) -> tuple[str, ...]:
    return (f"api_url={api.geturls_url('x').split('?')[0]}", f"wnids={','.join(classes)}", f"per_class={PER_CLASS}")


def last_lines(out: Path) -> dict[str, dict]:
    """The manifest's last line per id (lines that do not parse are skipped, as the crawl does)."""
    path = out / "manifest.jsonl"
    last: dict[str, dict] = {}
    if path.exists():
        for raw in path.read_bytes().splitlines():
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if isinstance(line, dict) and "id" in line:
                    last[line["id"]] = line
    return last


def kept_urls(out: Path) -> set[str]:
    return {line["url"] for line in last_lines(out).values() if line.get("outcome") == "kept"}


def class_tree(out: Path, classes: Mapping[str, object]) -> dict[str, dict[str, bytes]]:
    """Every entry of every class folder (a stray folder or link shows up as b"")."""
    tree: dict[str, dict[str, bytes]] = {}
    for wnid in classes:
        folder = out / "Images" / wnid
        entries = sorted(os.listdir(folder)) if folder.is_dir() else []
        tree[wnid] = {name: (folder / name).read_bytes() if (folder / name).is_file() else b"" for name in entries}
    return tree


def decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception:
        return False
    return True


def check_files(out: Path, classes: Mapping[str, Sequence[FakePhoto]]) -> dict[str, dict[str, bytes]]:
    """Whatever is in the class folders: good, whole, distinct photos of their own class."""
    tree = class_tree(out, classes)
    placeholders = {placeholder_png(), placeholder_png("GIF")}
    seen: dict[str, str] = {}
    for wnid, files in tree.items():
        assert len(files) <= PER_CLASS, f"{wnid} holds {len(files)} > {PER_CLASS}: {sorted(files)}"
        for name, data in files.items():
            where = f"{wnid}/{name}"
            assert name.startswith(f"{wnid}_") and not name.endswith(".part"), where
            assert data not in placeholders, f"{where} is a placeholder"
            assert decodes(data), f"{where} is not a whole image"
            assert any(p.is_good and p.body == data for p in classes[wnid]), f"{where} is no good photo of {wnid}"
            digest = hashlib.sha256(data).hexdigest()
            assert digest not in seen, f"{where} has the same bytes as {seen[digest]}"
            seen[digest] = where
    return tree


def check_dataset(out: Path, classes: Mapping[str, Sequence[FakePhoto]], kept: Sequence[str] = ("kept",)) -> None:
    """Exact counts, good distinct photos, and the manifest's last line per id vouches for each file."""
    tree = check_files(out, classes)
    assert {w: len(files) for w, files in tree.items()} == expected_counts(classes)
    on_disk = {f"Images/{w}/{name}" for w, files in tree.items() for name in files}
    vouched = {line["path"] for line in last_lines(out).values() if line.get("outcome") in kept}
    assert vouched == on_disk, f"kept in the manifest, not on disk: {sorted(vouched - on_disk)}; " \
                               f"on disk, not kept in the manifest: {sorted(on_disk - vouched)}"


def run_workers(workers: Sequence[Worker], timeout: float = 60) -> None:
    """All exit 0 within ``timeout`` (those still running then are killed), with no error line."""
    deadline = time.monotonic() + timeout
    codes: list[int | str] = []
    for w in workers:
        try:
            codes.append(w.proc.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            codes.append(f"still running after {timeout} s")
            w.kill()
    assert codes == [0] * len(workers), "\n\n".join(
        f"{w.name} ({code}):\n{w.stderr[-2500:]}" for w, code in zip(workers, codes, strict=True))
    for w in workers:
        assert error_lines(w.stderr) == [], w.name


@contextlib.contextmanager
def watching(out: Path) -> Iterator[FolderWatcher]:
    watcher = FolderWatcher(out / "Images")
    watcher.start()
    try:
        yield watcher
    finally:
        watcher.stop.set()
        watcher.join()


def assert_never_over(watcher: FolderWatcher) -> None:
    over = {w: n for w, n in watcher.peak.items() if n > PER_CLASS}
    assert not over, f"more than {PER_CLASS} files in a class folder at one moment: {over}"


# -- imagenet -----------------------------------------------------------------------------------
@pytest.mark.parametrize("n_workers", [2, 3])
def test_workers_build_one_dataset_with_exact_counts(n_workers, spawn, redis_server, out):
    classes = scenario(MID_RUN)
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(GeturlsServer(classes))
        proxies = [stack.enter_context(PhotoHosts(classes)) for _ in range(n_workers)]
        watcher = stack.enter_context(watching(out))
        workers = [spawn("imagenet", out, *imagenet_args(api, classes), settings=settings_for(redis_server),
                         hosts=hosts) for hosts in proxies]
        run_workers(workers)
    assert_never_over(watcher)
    check_dataset(out, classes)
    kept = kept_urls(out)
    for w in workers:
        assert w.hosts is not None
        assert kept & set(w.hosts.url_log), f"{w.name} kept nothing: another worker did all the work"
    # the workers' dataset reads as any other: `scrapy verify` finds nothing to say
    done = run_scrapy([sys.executable, "-m", "scrapy", "verify", str(out)], timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_workers_refuse_a_near_copy_the_other_worker_kept(spawn, redis_server, out):
    """NEAR_DUPLICATES across workers: the perceptual hashes of kept images are shared in Redis."""
    from tests.emulators.images import encode, photo
    from tests.test_imagenet_inputs import WNIDS, _near_copies, _photos

    originals, copies = _near_copies()
    distinct = [encode(photo(seed), quality=85) for seed in (11, 12, 13)]
    tench, goldfish = WNIDS[:2]
    classes = {tench: _photos("a", originals), goldfish: _photos("b", copies, delay=0.6) + _photos("d", distinct, 1.2)}
    settings = settings_for(redis_server, NEAR_DUPLICATES="true")
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(GeturlsServer(classes))
        workers = [spawn("imagenet", out, f"api_url={api.geturls_url('x').split('?')[0]}", f"wnids={tench},{goldfish}",
                         "per_class=3", settings=settings, hosts=stack.enter_context(PhotoHosts(classes)))
                   for _ in range(2)]
        run_workers(workers)
    kept = sorted(p.read_bytes() for p in (out / "Images").rglob("*.*") if p.parent != out / "Images")
    assert kept == sorted(originals + distinct)
    lines = last_lines(out)
    refused = [line for line in lines.values() if line.get("outcome") == "duplicate"]
    assert refused and all(line["detail"].startswith("a near-copy of ") for line in refused)
    assert {line["url"] for line in refused} <= {p.url for p in _photos("b", copies)}


def test_a_killed_worker_s_share_is_taken_over_and_a_rerun_fetches_nothing_kept(spawn, redis_server, out):
    classes = scenario((0.3, 0.6))
    settings = settings_for(redis_server, DATASET_LEASE="1")
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(GeturlsServer(classes))
        victim_hosts, survivor_hosts = (stack.enter_context(PhotoHosts(classes)) for _ in range(2))
        with watching(out) as watcher:
            victim = spawn("imagenet", out, *imagenet_args(api, classes), settings=settings, hosts=victim_hosts)
            survivor = spawn("imagenet", out, *imagenet_args(api, classes), settings=settings, hosts=survivor_hosts)
            wait_until(lambda: len(kept_urls(out) & set(victim_hosts.url_log)) >= 3 or not victim.running, 60,
                       "the victim to keep 3 images")
            assert_running([victim, survivor], "the kill")
            victim.kill()
            kept_at_kill = len(kept_urls(out))
            run_workers([survivor])
        assert kept_at_kill < sum(expected_counts(classes).values()), "the run was over before the kill"
        assert_never_over(watcher)
        try:
            check_dataset(out, classes, kept=("kept", "present"))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nthe survivor's log ends:\n{survivor.stderr[-4000:]}") from None
        before = class_tree(out, classes)
        kept = kept_urls(out)

        rerun_hosts = stack.enter_context(PhotoHosts(classes))
        rerun = spawn("imagenet", out, *imagenet_args(api, classes), settings=settings, hosts=rerun_hosts)
        run_workers([rerun], timeout=60)
        fetched = set(rerun_hosts.url_log)
    assert not kept & fetched, f"the re-run fetched kept images again: {sorted(kept & fetched)}"
    assert class_tree(out, classes) == before
    check_dataset(out, classes, kept=("kept", "present"))
    parts = sorted(str(p.relative_to(out)) for p in (out / ".staging").rglob("*.part"))
    assert parts == [], f"temporary files left in staging: {parts}"


@pytest.mark.parametrize("persist", [True, False], ids=["with_its_data", "empty"])
def test_redis_restarted_mid_run(persist, spawn, tmp_path, out):
    classes = scenario(MID_RUN)
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer(tmp_path / "redis", persist=persist))
        api = stack.enter_context(GeturlsServer(classes))
        proxies = [stack.enter_context(PhotoHosts(classes)) for _ in range(2)]
        watcher = stack.enter_context(watching(out))
        workers = [spawn("imagenet", out, *imagenet_args(api, classes), settings=settings_for(redis), hosts=hosts)
                   for hosts in proxies]
        wait_until(lambda: len(kept_urls(out)) >= 8 or not all(w.running for w in workers), 60, "8 kept images")
        assert_running(workers, "Redis restarted")
        redis.restart(crash=True, down_for=1.0)
        kept_at_restart = len(kept_urls(out))
        run_workers(workers)
    assert kept_at_restart < sum(expected_counts(classes).values()), "the run was over before the restart"
    assert_never_over(watcher)
    check_dataset(out, classes, kept=("kept", "present"))  # a worker may count a file again after a rebuild


def test_redis_gone_for_good_stops_every_worker_with_one_line(spawn, redis_server, out):
    classes = scenario((1.0, 1.5))  # two workers would need ~15 s: Redis goes long before the end
    settings = settings_for(redis_server, REDIS_RETRY_FOR="3", CONCURRENT_REQUESTS="2")
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(GeturlsServer(classes))
        proxies = [stack.enter_context(PhotoHosts(classes)) for _ in range(2)]
        watcher = stack.enter_context(watching(out))
        workers = [spawn("imagenet", out, *imagenet_args(api, classes), settings=settings, hosts=hosts)
                   for hosts in proxies]
        wait_until(lambda: len(kept_urls(out)) >= 4 or not all(w.running for w in workers), 60, "4 kept images")
        assert_running(workers, "Redis went away")
        redis_server.kill()
        codes = [w.wait(45) for w in workers]  # they stop by themselves (REDIS_RETRY_FOR), else fail
    assert codes == [1, 1], "\n\n".join(w.stderr[-2500:] for w in workers)
    for w in workers:
        errors = error_lines(w.stderr)
        assert len(errors) == 1 and "redis" in errors[0].lower(), (w.name, errors)
    assert_never_over(watcher)
    # nothing damaged: every file under a final name is whole (a placeholder kept before it was
    # learned may be there, as after any stopped run: the next run withdraws it)
    for wnid, files in class_tree(out, classes).items():
        assert len(files) <= PER_CLASS, wnid
        for name, data in files.items():
            assert not name.endswith(".part") and decodes(data), f"{wnid}/{name}"


def test_a_worker_with_other_arguments_than_the_live_workers_is_refused(spawn, redis_server, out):
    """per_class=3 joining workers of per_class=5: one line naming both, exit 1, nothing done;
    the live worker ends exact. (Every class used to end with the largest N, and the worker of
    the smaller one said it had kept its own N.)"""
    classes = scenario(MID_RUN)
    settings = settings_for(redis_server)
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(GeturlsServer(classes))
        proxies = [stack.enter_context(PhotoHosts(classes)) for _ in range(2)]
        first = spawn("imagenet", out, *imagenet_args(api, classes), settings=settings, hosts=proxies[0])
        wait_until(lambda: len(kept_urls(out)) >= 1 or not first.running, 60, "a first kept image")
        assert_running([first], "the second worker started")
        args = [a if not a.startswith("per_class=") else "per_class=3" for a in imagenet_args(api, classes)]
        other = spawn("imagenet", out, *args, settings=settings, hosts=proxies[1])
        code = other.wait(60)
        run_workers([first])
        assert proxies[1].url_log == [], "the refused worker fetched photos"
    assert code == 1, other.stderr[-3000:]
    errors = error_lines(other.stderr)
    assert len(errors) == 1 and "target=5 per class" in errors[0] and "target=3 per class" in errors[0], errors
    check_dataset(out, classes)


def test_a_copy_made_while_its_workers_run_is_a_dataset_of_its_own(spawn, redis_server, tmp_path):
    """``cp -r`` of a dataset whose two workers are running (held still for the copy), then a
    worker on the copy with the same REDIS_URL: the copy gets keys of its own, and both end
    exact. (The copy's worker used to share the original's keys: 14-16 of 20 per class.) The
    copy is made once the placeholder is learned: one kept before that is in a copy as in any
    stopped run's folder."""
    classes = scenario(MID_RUN)
    settings = settings_for(redis_server, CONCURRENT_REQUESTS="2")
    first, copy = tmp_path / "W1", tmp_path / "W2"
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(GeturlsServer(classes))
        proxies = [stack.enter_context(PhotoHosts(classes)) for _ in range(3)]
        workers = [spawn("imagenet", first, *imagenet_args(api, classes), settings=settings, hosts=proxies[i])
                   for i in range(2)]
        def on_disk() -> int:
            return sum(len(files) for files in class_tree(first, classes).values())

        def learned() -> bool:
            return any(line.get("outcome") == "placeholder" for line in last_lines(first).values())

        wait_until(lambda: (on_disk() >= 3 and learned()) or not all(w.running for w in workers), 60,
                   "3 images on disk and the placeholder learned")
        assert_running(workers, "the copy")
        for w in workers:
            w.proc.send_signal(signal.SIGSTOP)
        try:
            subprocess.run(["cp", "-r", str(first), str(copy)], check=True, timeout=60)
        finally:
            for w in workers:
                w.proc.send_signal(signal.SIGCONT)
        copied = spawn("imagenet", copy, *imagenet_args(api, classes), settings=settings, hosts=proxies[2])
        run_workers([*workers, copied])
    assert "is a copy of a dataset whose workers run elsewhere" in copied.stderr
    check_dataset(first, classes)
    check_dataset(copy, classes)


def test_a_frozen_worker_is_fenced_off_the_others_finish_and_it_stops_when_thawed(spawn, redis_server, out):
    """SIGSTOP of one of three workers (Ctrl-Z, a paused VM): once its lease is long out the
    others fence it off (though it still holds its folder's lock) and finish exact while it is
    frozen; thawed, it stops with one line and changes nothing. (The others used to wait for it
    as long as it was frozen.)"""
    classes = scenario(MID_RUN)
    settings = settings_for(redis_server, DATASET_LEASE="1", CONCURRENT_REQUESTS="2")
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(GeturlsServer(classes))
        proxies = [stack.enter_context(PhotoHosts(classes)) for _ in range(3)]
        workers = [spawn("imagenet", out, *imagenet_args(api, classes), settings=settings, hosts=hosts)
                   for hosts in proxies]
        wait_until(lambda: sum(len(f) for f in class_tree(out, classes).values()) >= 4
                   or not all(w.running for w in workers), 60, "4 images on disk")
        assert_running(workers, "the freeze")
        frozen, others = workers[0], workers[1:]
        frozen.proc.send_signal(signal.SIGSTOP)
        try:
            run_workers(others, timeout=90)
            check_dataset(out, classes, kept=("kept", "present"))  # present: its image, adopted, met again
            before = class_tree(out, classes)
        finally:
            frozen.proc.send_signal(signal.SIGCONT)
        code = frozen.wait(60)
    assert code == 1, frozen.stderr[-3000:]
    errors = error_lines(frozen.stderr)
    assert len(errors) == 1 and "took its share over" in errors[0], errors
    assert class_tree(out, classes) == before
    check_dataset(out, classes, kept=("kept", "present"))
    assert any("fencing it off" in w.stderr for w in others)


def test_a_worker_started_after_the_dataset_is_done_downloads_nothing(spawn, redis_server, out):
    classes = scenario(FAST)
    settings = settings_for(redis_server)
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(GeturlsServer(classes))
        proxies = [stack.enter_context(PhotoHosts(classes)) for _ in range(2)]
        run_workers([spawn("imagenet", out, *imagenet_args(api, classes), settings=settings, hosts=hosts)
                     for hosts in proxies])
        check_dataset(out, classes)
        before = class_tree(out, classes)
        late_hosts = stack.enter_context(PhotoHosts(classes))
        late = spawn("imagenet", out, *imagenet_args(api, classes), settings=settings, hosts=late_hosts)
        run_workers([late], timeout=60)
        assert late_hosts.url_log == [], "a worker started after the end fetched photos"
    assert class_tree(out, classes) == before


@pytest.mark.parametrize("holder", ["worker", "plain_run"])
def test_workers_and_a_plain_run_never_share_a_folder(holder, spawn, redis_server, out):
    classes = make_classes(1, 4, seed=31, failure_rate=0.0, latency=(5.0, 5.5))
    worker, plain = settings_for(redis_server), settings_for(None)
    first_settings, second_settings = (worker, plain) if holder == "worker" else (plain, worker)
    with GeturlsServer(classes) as api, PhotoHosts(classes) as first_hosts, PhotoHosts(classes) as second_hosts:
        args = (f"api_url={api.geturls_url('x').split('?')[0]}", f"wnids={','.join(classes)}", "per_class=2")
        first = spawn("imagenet", out, *args, settings=first_settings, hosts=first_hosts)
        wait_until(lambda: first_hosts.url_log or not first.running, 60, "the first run to ask for a photo")
        second = spawn("imagenet", out, *args, settings=second_settings, hosts=second_hosts)
        code = second.wait(60)
        overlapped = first.running
        first_code = first.wait(60)
        assert second_hosts.url_log == [], "the refused run fetched photos"
    assert overlapped, f"the first run ended before the second was refused:\n{first.stderr[-2500:]}"
    assert code == 1, second.stderr[-2500:]
    errors = error_lines(second.stderr)
    assert len(errors) == 1 and "in use" in errors[0], errors
    assert first_code == 0, first.stderr[-2500:]
    assert len(os.listdir(out / "Images" / next(iter(classes)))) == 2


# -- isic ---------------------------------------------------------------------------------------
class SlowImageHost(ImageHost):
    """The image host, answering each image after ``delay`` seconds."""

    def __init__(self, fake_images: list[FakeImage], delay: float) -> None:
        self.delay = delay
        super().__init__(fake_images)

    def _image(self, req: Request) -> None:
        self._stopping.wait(self.delay)
        super()._image(req)


def test_isic_workers_keep_exactly_n_images_in_total(spawn, redis_server, out):
    records = make_archive(60)
    for i in (2, 17):
        records[i].behaviour = "404"
    records[5].behaviour = "html"
    records[9].body = images.truncated(records[9].body)
    records[23].behaviour = "500"
    bad = {records[i].isic_id for i in (2, 5, 9, 17, 23)}
    served = {f"{r.isic_id}.{r.ext}": r.body for r in records if r.isic_id not in bad}
    settings = settings_for(redis_server, CONCURRENT_REQUESTS="3", CONCURRENT_REQUESTS_PER_DOMAIN="3")
    with SlowImageHost(records, delay=0.3) as host, IsicV2Server(records, host) as api:
        workers = [spawn("isic", out, f"api_url={api.url}/api/v2", "num_images=30", settings=settings)
                   for _ in range(2)]
        run_workers(workers)
        assert not api.errors and not host.errors
    files = {p.name: p.read_bytes() for p in (out / "Images").iterdir() if p.name != "metadata.jsonl"}
    assert len(files) == 30, sorted(files)
    for name, data in files.items():
        assert served.get(name) == data, f"{name}: not the bytes of a good record"
    assert len({hashlib.sha256(d).hexdigest() for d in files.values()}) == 30
    stems = {name.rsplit(".", 1)[0] for name in files}
    assert {p.stem for p in (out / "Descriptions").iterdir()} == stems
    kept = {i for i, line in last_lines(out).items() if line.get("outcome") == "kept"}
    assert kept == stems
    with open(out / "metadata.csv", newline="") as f:
        assert sorted(row["isic_id"] for row in csv.DictReader(f)) == sorted(stems)


def test_isic_workers_split_whole_groups_and_leave_groups_already_placed_where_they_are(spawn, redis_server, out):
    """Workers meet new groups apart, so they give them the plain rule (the seed and the group
    alone: every worker the same split, no Redis needed); the groups an earlier plain run placed
    by stratifying stay in their splits, and their images added now join them."""
    records = grouped_archive(36)
    scheme = splits.scheme([["train", 60], ["val", 20], ["test", 20]], 0)
    assert scheme is not None
    settings = settings_for(redis_server, CONCURRENT_REQUESTS="3", CONCURRENT_REQUESTS_PER_DOMAIN="3")
    with SlowImageHost(records, delay=0.1) as host, IsicV2Server(records, host) as api:
        args = (f"api_url={api.url}/api/v2", "splits=train:60,val:20,test:20", "layout=by_split")
        first = subprocess.run(crawl_command("isic", out, *args, "num_images=10"), cwd=ROOT, env=clean_env(),
                               capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stderr[-2500:]
        before = split_of_files(out)
        run_workers([spawn("isic", out, *args, settings=settings) for _ in range(2)])
    after = split_of_files(out)
    assert len(before) == 10 and len(after) == 36
    assert {i: after[i] for i in before} == before, "a group placed before moved"
    by_id = {r.isic_id: r for r in records}
    assert_whole_groups(after, by_id)
    placed = {group_of(by_id[i]) for i in before}
    for isic_id, split in after.items():
        record = by_id[isic_id]
        if group_of(record) not in placed:
            assert split == scheme.split_of(isic_id, record.clinical()), isic_id


def split_of_files(out: Path) -> dict[str, str]:
    """id -> split, from a by_split tree ({split}/{label}/{id}.jpg)."""
    return {p.stem: p.relative_to(out / "Images").parts[0] for p in (out / "Images").glob("*/*/*.jpg")}


@pytest.mark.parametrize(("url", "code"), [("http://127.0.0.1:6379/0", 2), ("redis://127.0.0.1:notaport/0", 1)])
def test_a_bad_redis_url_is_one_line_and_exit_1(url, code, tmp_path):
    """Not a Redis URL at all: a bad setting, exit 2 before anything; a Redis URL Redis refuses: exit 1."""
    proc = subprocess.run(crawl_command("imagenet", tmp_path / "Data", "wnids=n01440764", "per_class=1",
                                        settings={"REDIS_URL": url}),
                          cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60)
    errors = error_lines(proc.stderr)
    assert proc.returncode == code and len(errors) == 1 and "REDIS_URL" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr

