"""File primitives of the dataset: staged writes, renames into place, and syncing in batches.

Bytes are written to a staging folder on the destination's file system and renamed into place,
so no partial file is ever under a final name. Durability is bought per batch, not per file:
``sync_filesystem`` flushes every write of one file system at once (see ``core.durability``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import stat
import uuid
from typing import IO, Any

STAGING_DIR = ".staging"  # temporary files, under the dataset root; emptied at every start


def temp_name() -> str:
    """The name of one of our temporary files (start-up clean-up deletes these names only)."""
    return f"{uuid.uuid4().hex}.part"


def write_staged(staging_dir: str, data: bytes) -> str:
    """Write ``data`` to a new file in ``staging_dir`` (which exists); returns its path. Blocking."""
    path = os.path.join(staging_dir, temp_name())
    try:
        with open(path, "wb") as f:
            f.write(data)
    except BaseException:
        unlink_quietly(path)  # a full disk: no partial file left behind
        raise
    return path


def move_into_place(staged: str, final: str) -> None:
    """Rename ``staged`` to ``final`` (whose folder exists). Staging is on the final folder's file
    system, so this never copies, and never leaves a temporary file beside ``final``; a folder
    mounted inside the image tree fails here with EXDEV, clearly."""
    os.replace(staged, final)


def atomic_write(path: str | os.PathLike[str], data: bytes, staging_dir: str, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` through a file in ``staging_dir`` and a rename, so a crash
    leaves nothing beside ``path`` (the staging folder is emptied at the next start)."""
    os.makedirs(staging_dir, exist_ok=True)
    final = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = write_staged(staging_dir, data)
    try:
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        move_into_place(tmp, final)
    except BaseException:
        unlink_quietly(tmp)
        raise


class NotRegularFile(OSError):
    """A file of the dataset is something else: a FIFO, a socket, a device or a folder."""

    def __init__(self, path: str, what: str):
        super().__init__(errno.EINVAL, f"{what}, not a regular file", path)

    def __str__(self) -> str:
        return f"{self.filename} is {self.strerror}"


def kind_of(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words."""
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symlink"))
    return next((what for test, what in kinds if test(mode)), "not a regular file")


def refuse_special(path: str, mode: int) -> None:
    """NotRegularFile unless ``mode`` is a regular file's (or a symlink's: the caller decides on links)."""
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise NotRegularFile(path, kind_of(mode))


def open_regular(path: str, flags: int = os.O_RDONLY, mode: str = "rb", *, follow: bool = True,
                 **kwargs: Any) -> IO[Any]:
    """``path`` opened (``os.open`` ``flags``, then ``open`` ``mode``), only if it is a regular file:
    a FIFO, a socket, a device or a folder is refused (NotRegularFile, naming it) and never waited on
    (O_NONBLOCK until ``fstat`` has said what was opened); with ``follow=False`` a symlink is refused
    too (ELOOP), for callers that never follow one."""
    try:
        refuse_special(path, os.stat(path, follow_symlinks=follow).st_mode)  # a device is never opened
    except FileNotFoundError:
        if not flags & os.O_CREAT:
            raise
    extra = os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags | extra, 0o644)
    except OSError as exc:  # replaced since the stat: a FIFO with no reader (ENXIO), a socket, a folder
        if exc.errno in (errno.ENXIO, errno.EISDIR, errno.EOPNOTSUPP):
            refuse_special(path, os.stat(path, follow_symlinks=follow).st_mode)
        raise
    try:
        refuse_special(path, os.fstat(fd).st_mode)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return open(fd, mode, **kwargs)  # the caller closes it
    except BaseException:
        os.close(fd)
        raise


def unlink_quietly(path: str | None) -> None:
    if path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)


def sync_filesystem(path: str) -> None:
    """Make every write so far to the file system holding ``path`` durable: one ``syncfs`` (Linux)
    for a whole batch of files, or ``sync`` where there is none. Blocking."""
    if _syncfs is not None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if _syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    os.sync()


def check_writable(folders: list[str], stagings: list[str]) -> None:
    """Every folder may be written: a real write in each staging folder (they share their file
    systems with the folders), and an access check of the folders themselves, where no file of
    ours may appear, not even for an instant. Raises OSError naming the folder."""
    for staging in stagings:
        os.makedirs(staging, exist_ok=True)
        unlink_quietly(write_staged(staging, b"ok"))
    for folder in dict.fromkeys(os.path.abspath(f) for f in folders):
        os.makedirs(folder, exist_ok=True)
        if not os.access(folder, os.W_OK):
            code = errno.EROFS if os.statvfs(folder).f_flag & os.ST_RDONLY else errno.EACCES
            raise OSError(code, os.strerror(code), folder)
