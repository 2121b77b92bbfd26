"""A run that fails before its first image leaves nothing it made: no empty image folders, no
staging folder, and no dataset folder holding only its own bookkeeping (an offline first run
used to leave ``Data/Images``, ``Data/Descriptions`` and ``Data/.staging`` behind).

Only folders that did not exist when the run started are removed, only when empty, and only
while the run still holds the dataset's lock.
"""

from __future__ import annotations

import contextlib
import os
import shutil

from .files import unlink_quietly

#: The files a run writes in a dataset folder before its first image.
BOOKKEEPING = (".lock", "dataset.json", "manifest.jsonl")
CACHE_DIR = ".cache"  # what a run reads once and keeps (isic: the mask archives' directories)


class MadeByThisRun:
    """The folders a run is about to make (noted before it makes any)."""

    def __init__(self, root: str, folders: list[str]):
        self.root = os.path.abspath(root)
        self.new = [f for f in dict.fromkeys(os.path.abspath(p) for p in [root, *folders]) if not os.path.lexists(f)]

    def remove_new_empty_folders(self) -> None:
        """The folders this run made that are still empty (deepest first; never the root)."""
        for folder in sorted((f for f in self.new if f != self.root), key=len, reverse=True):
            _remove_empty_tree(folder)

    def remove_if_unused(self, manifest_path: str) -> bool:
        """Remove what this run made if nothing came of it (no manifest line). Blocking."""
        with contextlib.suppress(OSError):
            if os.path.getsize(manifest_path) > 0:
                return False
        self.remove_new_empty_folders()
        if self.root in self.new:
            for name in BOOKKEEPING:
                unlink_quietly(os.path.join(self.root, name))
            shutil.rmtree(os.path.join(self.root, CACHE_DIR), ignore_errors=True)  # ours, made by this run
            _remove_empty_tree(self.root)
        return True


def _remove_empty_tree(folder: str) -> None:
    """``folder`` and its subfolders, if they hold no file (a symlink is a file here: kept)."""
    if os.path.islink(folder) or not os.path.isdir(folder):
        return
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            _remove_empty_tree(entry.path)
    with contextlib.suppress(OSError):
        os.rmdir(folder)  # fails, as it should, if anything is left in it
