"""Worker mode on disk: many processes (``REDIS_URL``) share one dataset folder.

Each worker holds the folders with a shared ``flock`` (a run without Redis wants an exclusive
one, so the two never mix), and stages in a folder of its own, ``.staging/w-<worker>``, which
it holds with an exclusive ``flock`` for its life. That lock is the proof of life the lease in
Redis is not: a worker whose lease ran out is dead only once its staging folder can be locked
(the kernel drops the lock of a killed process), and only then are its staged files cleaned and
its images in mid-commit recovered from its journal.

``.workers.json`` at the root names the dataset's key space in Redis and the current epoch, and
where the manifest stood when the current group of workers began (``offset``), so a state lost
in Redis can be rebuilt from the lines written since. A run without Redis deletes it: the next
workers then rebuild from disk rather than trust what Redis held before.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import uuid
from collections.abc import Iterator
from typing import Any

from ..outcomes import Outcome
from . import manifest
from .disk import TEMP_NAME, DatasetDisk
from .files import atomic_write, open_regular, unlink_quietly
from .lock import is_locked
from .manifest import ManifestWriter, Record

SESSION_NAME = ".workers.json"
PREFIX = "w-"
_WORKER = re.compile(r"[A-Za-z0-9._-]{1,120}")


def new_worker_id() -> str:
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:60] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class WorkerFolder:
    """This worker's staging folder (locked for its life), its peers', and the session file."""

    def __init__(self, disk: DatasetDisk, worker: str):
        self.disk, self.worker = disk, worker
        self.parent = disk.staging_dir  # .staging: every worker's folder is in it
        self._fd: int | None = None

    @property
    def session_path(self) -> str:
        return os.path.join(self.disk.root, SESSION_NAME)

    def enter(self) -> None:
        """Make and lock this worker's staging folders (the disk then stages there). Blocking."""
        os.makedirs(self.parent, exist_ok=True)
        self.disk.use_worker_staging(PREFIX + self.worker)
        for staging in self.disk.all_stagings()[1:]:
            os.makedirs(staging, exist_ok=True)
        # made and locked under a name no peer looks at, then renamed: a peer never sees it unlocked
        hidden = os.path.join(self.parent, f".{PREFIX}{self.worker}")
        os.mkdir(hidden)
        self._fd = os.open(hidden, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(hidden, self.disk.staging_dir)

    @contextlib.contextmanager
    def starting(self) -> Iterator[bool]:
        """While held, no other worker of this folder decides whether it is alone (yields
        whether this one is: no other worker holds a staging folder here). Blocking."""
        fd = os.open(self.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield not self.live_peers()
        finally:
            os.close(fd)

    def leave(self, finished: bool) -> None:
        """Give the staging folder back; remove it when nothing in it is needed any more."""
        if self._fd is None:
            return  # never entered (the dataset was refused): the staging folders are not ours
        if finished:
            for staging in self.disk.all_stagings():
                with contextlib.suppress(OSError):
                    os.rmdir(staging)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # --- peers ---------------------------------------------------------------------------------

    def peers(self) -> dict[str, bool]:
        """Every other worker with a staging folder here: whether it is alive (holds its lock)."""
        found = {}
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.parent):
                name = entry.name
                if not name.startswith(PREFIX) or name == PREFIX + self.worker:
                    continue
                if entry.is_dir(follow_symlinks=False) and _WORKER.fullmatch(name[len(PREFIX):]):
                    found[name[len(PREFIX):]] = is_locked(entry.path, follow_links=False)
        return found

    def live_peers(self) -> list[str]:
        return [w for w, alive in self.peers().items() if alive]

    def reap(self, worker: str, writer: ManifestWriter, held: dict[str, str]) -> list[str] | None:
        """Clean a dead worker's staging folders: what its journal says reached its final name
        gets its ``kept`` line (if the line was lost), its temporary files go. Returns which of
        its admitted images (``held``) are on disk, or None while it is alive. Blocking."""
        if not _WORKER.fullmatch(worker):
            return []
        name = PREFIX + worker
        mine = os.path.join(self.parent, name)
        fd = None
        try:
            fd = os.open(mine, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # (from flock: the folder was opened)
            if fd is not None:
                os.close(fd)
            return None
        except OSError:
            fd = None  # no folder (already cleaned): nothing to recover
        try:
            if fd is not None:
                self._adopt(mine, writer)
                for staging in {os.path.join(os.path.dirname(s), name) for s in self.disk.all_stagings()}:
                    _remove(staging)
            return [key for key, value in held.items() if self._on_disk(value)]
        finally:
            if fd is not None:
                os.close(fd)

    def fence(self, worker: str, writer: ManifestWriter, held: dict[str, str]) -> list[str]:
        """A frozen worker (its lease long out, its folder still locked) is fenced off: its
        staging folders are renamed away, so that, thawed, it can rename nothing into the
        dataset (it commits by path); then it is reaped as a dead one. Blocking."""
        if not _WORKER.fullmatch(worker):
            return []
        name = PREFIX + worker
        for staging in {os.path.join(os.path.dirname(s), name) for s in self.disk.all_stagings()}:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                fenced = os.path.join(os.path.dirname(staging), f"fenced-{worker}-{uuid.uuid4().hex[:8]}")
                os.rename(staging, fenced)
                self._adopt(fenced, writer)
                _remove(fenced)
        return [key for key, value in held.items() if self._on_disk(value)]

    def _adopt(self, folder: str, writer: ManifestWriter) -> None:
        """What the journal in a stopped worker's ``folder`` says reached its final name gets
        its ``kept`` line (the worker may have lost it)."""
        for _, intent in manifest.read(os.path.join(folder, os.path.basename(self.disk.journal_path))):
            path = self.disk.absolute(intent.path or "")
            if path and os.path.isfile(path) and not os.path.islink(path):
                writer.write(_as_kept(intent))
        writer.flush()

    def reap_all_dead(self, writer: ManifestWriter) -> int:
        """Clean every dead peer's folder (at a rebuild, before the disk is recounted)."""
        dead = [w for w, alive in self.peers().items() if not alive]
        for worker in dead:
            self.reap(worker, writer, {})
        return len(dead)

    def _on_disk(self, value: str) -> bool:
        path = self.disk.absolute(value.split("\0")[-1])
        return bool(path and os.path.isfile(path) and not os.path.islink(path))

    # --- the session file ----------------------------------------------------------------------

    def session(self) -> dict[str, Any]:
        """``.workers.json``: read, or (missing, or not ours) made anew with a new dataset id.
        Under an flock of ``.staging``, so that workers starting together agree on one id."""
        fd = os.open(self.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with contextlib.suppress(OSError, ValueError, RecursionError):
                with open_regular(self.session_path, mode="r", follow=False, encoding="utf-8") as f:
                    data = json.loads(f.read(4096))
                if isinstance(data, dict) and isinstance(data.get("dataset"), str) and re.fullmatch(
                    r"[0-9a-f]{32}", data["dataset"]
                ):
                    return data
            data = {"dataset": uuid.uuid4().hex, "offset": 0}
            self.write_session(data)  # replaces a foreign file or a link (never writes through it)
            return data
        finally:
            os.close(fd)

    def renew_session(self) -> dict[str, Any]:
        """A new dataset id for this folder (it is a copy: the id it holds is another folder's
        in Redis). Only while ``starting`` is held, which keeps this folder's workers in turn."""
        data = {"dataset": uuid.uuid4().hex, "offset": 0}
        self.write_session(data)
        return data

    def write_session(self, data: dict[str, Any]) -> None:
        atomic_write(self.session_path, json.dumps(data).encode(), self.disk.staging_dir)


def forget_session(root: str) -> None:
    """A run without Redis changes the dataset: the shared state of earlier workers is stale."""
    path = os.path.join(root, SESSION_NAME)
    if os.path.lexists(path):
        unlink_quietly(path)


def _as_kept(intent: Record) -> Record:
    intent.outcome = Outcome.KEPT
    intent.detail = "recovered from a stopped worker's journal"
    return intent


def _remove(staging: str) -> None:
    """A stopped worker's staging folder: our files in it go, then the folder if empty."""
    _clear(staging)
    with contextlib.suppress(OSError):
        os.rmdir(staging)


def _clear(staging: str) -> None:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(staging):
            if entry.is_file(follow_symlinks=False) and (
                TEMP_NAME.fullmatch(entry.name) or entry.name.endswith(".jsonl") or entry.name.startswith(".session-")
            ):
                unlink_quietly(entry.path)
