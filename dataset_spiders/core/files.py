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
import os
import uuid

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
