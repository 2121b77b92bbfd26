"""A files store that never leaves a partial file under a final name.

Scrapy's ``FSFilesStore`` writes straight to the final path. Ours writes the bytes to a
staging folder on the same file system, and a separate ``commit`` renames them into place once
every check has passed; a crash leaves only staging files, which the next run deletes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections import defaultdict
from io import BytesIO
from pathlib import Path
from typing import Any

from scrapy.pipelines.files import FSFilesStore

from ..dataset import STAGING_DIR


def _fsync_write(path: str, data: bytes, fsync: bool) -> None:
    with open(path, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def move_into_place(staged: str, final: str) -> None:
    """Rename ``staged`` to ``final``. Staging is on the final folder's file system (see
    ``Dataset.staging_for``), so this never copies, and never leaves a temporary file beside
    ``final``; a folder mounted inside the image tree fails here with EXDEV, clearly."""
    os.makedirs(os.path.dirname(final), exist_ok=True)
    os.replace(staged, final)


def atomic_write(path: str | os.PathLike[str], data: bytes, staging_dir: str, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` through a file in ``staging_dir`` and a rename, so a crash
    leaves nothing beside ``path`` (the staging folder is emptied at the next start)."""
    os.makedirs(staging_dir, exist_ok=True)
    tmp = os.path.join(staging_dir, f"{uuid.uuid4().hex}.part")
    try:
        _fsync_write(tmp, data, fsync)
        move_into_place(tmp, os.path.abspath(os.fspath(path)))
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class StagingFilesStore(FSFilesStore):
    """``FSFilesStore`` with a stage / commit / discard protocol; see the module docstring."""

    fsync: bool = True

    def __init__(self, basedir: str | os.PathLike[str]):
        # The stock store creates its folder here, where an error would be a traceback at
        # start-up; the spider checks the folders itself and stops with one line instead.
        try:
            super().__init__(basedir)
        except OSError:
            self.basedir = os.fspath(basedir).split("://", 1)[-1]
            self.created_directories = defaultdict(set)
        self.staging_dir = os.path.join(self.basedir, STAGING_DIR)

    def stage(self, data: bytes, staging_dir: str | None = None) -> tuple[str, str]:
        """Write ``data`` to a new file in ``staging_dir`` (the one on the final folder's file
        system); returns its path and the sha256 of the bytes. Blocking: call it from a thread."""
        staging_dir = staging_dir or self.staging_dir
        os.makedirs(staging_dir, exist_ok=True)
        staged = os.path.join(staging_dir, f"{uuid.uuid4().hex}.part")
        _fsync_write(staged, data, self.fsync)
        return staged, hashlib.sha256(data).hexdigest()

    def commit(self, staged: str, final: str) -> None:
        """Rename a staged file to its final path (copying across file systems). Blocking."""
        move_into_place(staged, final)

    def discard(self, staged: str | None) -> None:
        if staged:
            _unlink_quietly(staged)

    def persist_file(
        self,
        path: str | os.PathLike[str],
        buf: BytesIO,
        info: Any,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The stock entry point, made atomic."""
        final = str(Path(self.basedir, *os.fspath(path).split("/")))
        atomic_write(final, buf.getvalue(), self.staging_dir, self.fsync)
