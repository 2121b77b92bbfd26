"""One run per dataset: an exclusive ``flock`` on every folder a run writes to, held for its life.

The kernel drops an ``flock`` when its process dies, however it dies, so a lock left by a
killed run never blocks the next one (a pid file would go stale). The lock is taken on the
folders themselves (a directory file descriptor), so nothing is created inside the image
tree. ``out_dir/.lock`` only says who holds it, for the message a second run prints when
``/proc/locks`` cannot name the holder: written fresh (mode 0600, never through a link, its
command line without secrets, ``secrets.redacted_command``) and removed when the run lets go.

Cooperating workers (``REDIS_URL``, ``dataset/worker_staging.py``) take ``LOCK_SH`` on the same
descriptors instead, so they share the folders with each other and never with a run without
Redis. POSIX systems only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
import time

from ..secrets import redacted_command
from .files import open_regular

INFO_NAME = ".lock"


class DatasetBusy(Exception):
    """Another run holds the dataset; the message is one line naming the folder and the holder."""


class DatasetLock:
    """Exclusive (or, for workers, shared) locks on ``folders`` (created if missing); ``root``
    gets the holder's note."""

    def __init__(self, root: str, folders: list[str], shared: bool = False):
        self.root = root
        self.folders = list(dict.fromkeys([root, *folders]))
        self.shared = shared
        self._fds: list[int] = []
        self._noted = False  # this lock wrote root/.lock (removed again on release)

    @property
    def held(self) -> bool:
        return bool(self._fds)

    def acquire(self, attempts: int = 3) -> None:
        """Lock every folder or none. Raises DatasetBusy, or OSError when a folder cannot be made.

        A read-only ``scrapy verify`` probes the lock for an instant; a few quick tries keep a
        crawl started at that instant from being refused.
        """
        for attempt in range(attempts):
            try:
                self._acquire_all()
                break
            except DatasetBusy:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2)
        self._write_info()

    def _acquire_all(self) -> None:
        made: list[str] = []  # folders this attempt created: removed again if it fails
        for folder in self.folders:
            if not os.path.isdir(folder):
                os.makedirs(folder, exist_ok=True)
                made.append(folder)
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BaseException as exc:
                os.close(fd)
                self.release()
                for created in reversed(made):
                    with contextlib.suppress(OSError):
                        os.rmdir(created)  # only if still empty: a refused run leaves nothing behind
                if isinstance(exc, BlockingIOError):
                    raise DatasetBusy(busy_message(folder, self.root, self.shared)) from None
                raise
            self._fds.append(fd)

    def _write_info(self) -> None:
        """``root/.lock``, made anew: a note an earlier run or version left (its command line may
        hold a token) goes, and a link or a hard link put there is replaced, never written through."""
        path = os.path.join(self.root, INFO_NAME)
        with contextlib.suppress(OSError):
            os.unlink(path)  # whoever wrote it holds no lock now (we hold it, or share it)
        if self.shared:
            return  # one note for many workers would name only the last
        note = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}: "
        note += " ".join(redacted_command(sys.argv))[:500] + "\n"
        # informative only (a read-only root is reported later, clearly)
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            self._noted = True
            with open(fd, "w", encoding="utf-8") as f:
                f.write(note)

    def release(self) -> None:
        if self._noted and self._fds:  # while still held: the next run's note is never the one removed
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.root, INFO_NAME))
        self._noted = False
        fds, self._fds = self._fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the last descriptor drops the flock


def is_locked(folder: str, follow_links: bool = True) -> bool:
    """Whether a run, or workers, hold ``folder`` now (probes with an exclusive lock, released at
    once: a starting crawl or worker retries for longer than the probe lasts)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | (0 if follow_links else os.O_NOFOLLOW))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def holder_pid(folder: str) -> tuple[int, bool] | None:
    """The pid holding an flock on ``folder`` and whether its lock is shared, from ``/proc/locks``
    (Linux), or None."""
    try:
        st = os.stat(folder)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    wanted = f":{st.st_ino}"
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (blocked waiters have a "->" field)
        if len(parts) >= 6 and parts[1] == "FLOCK" and "->" not in parts and parts[5].endswith(wanted):
            major, minor, _ = parts[5].split(":")
            if (int(major, 16), int(minor, 16)) == (os.major(st.st_dev), os.minor(st.st_dev)):
                with contextlib.suppress(ValueError):
                    return int(parts[4]), parts[3] == "READ"
    return None


def busy_message(folder: str, root: str, shared: bool = False) -> str:
    holder = holder_pid(folder)
    pid = holder[0] if holder else None
    if holder and holder[1] and not shared:
        return (f"{folder} is in use by workers sharing it through Redis (process {pid} and maybe more): "
                "run with the same -s REDIS_URL=... to join them, or wait for them to finish")
    if shared:
        who = f"process {pid}" if pid else "a run"
        return (f"{folder} is in use by {who}, a run without REDIS_URL: workers cannot share it with "
                "that run; wait for it to finish, or choose another out_dir")
    who = f"process {pid}" if pid else "another run"
    if pid is None:
        note = ""
        with contextlib.suppress(OSError), open_regular(os.path.join(root, INFO_NAME), mode="r", follow=False,
                                                        encoding="utf-8", errors="replace") as f:
            note = f.readline(300).strip()
        if note.startswith("pid "):
            who = f"process {note.split()[1]} (per {INFO_NAME})"
    return (f"{folder} is in use by {who}: one run per dataset at a time; "
            "wait for it to finish, or choose another out_dir")
