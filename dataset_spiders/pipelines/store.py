"""The files store of our image stage: Scrapy's ``FSFilesStore``, made atomic.

The image stage stages and renames files through the dataset core (``dataset/files.py``), which
is where our files are written; this store is what ``ImagesPipeline`` is configured with, so
that anything that still calls ``persist_file`` writes through a staging file and a rename,
never straight to the final name.
"""

from __future__ import annotations

import os
from collections import defaultdict
from io import BytesIO
from pathlib import Path
from typing import Any

from scrapy.pipelines.files import FSFilesStore

from ..dataset.files import STAGING_DIR, atomic_write


class StagingFilesStore(FSFilesStore):
    """``FSFilesStore`` whose ``persist_file`` writes through the staging folder."""

    def __init__(self, basedir: str | os.PathLike[str]):
        # The stock store creates its folder here: an error would be a traceback at start-up, and
        # a run refused by another run's lock would leave a folder behind. The core makes (and
        # checks) the folders itself, once it holds the dataset.
        self.basedir = os.fspath(basedir).split("://", 1)[-1]
        self.created_directories: defaultdict[Any, set[str]] = defaultdict(set)
        self.staging_dir = os.path.join(self.basedir, STAGING_DIR)

    def persist_file(
        self,
        path: str | os.PathLike[str],
        buf: BytesIO,
        info: Any,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        final = str(Path(self.basedir, *os.fspath(path).split("/")))
        atomic_write(final, buf.getvalue(), self.staging_dir)
