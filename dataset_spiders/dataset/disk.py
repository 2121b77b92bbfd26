"""The dataset on disk: its folders, staging and quarantine, and what earlier runs left there.

Every path taken from the manifest must lie inside the root or a folder the user named; a file
is deleted or moved only when its real folder is inside one of them, and never through a link.
Folders are made once and remembered, so the hot path makes no stat call for them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import stat
from collections.abc import Callable
from typing import Any

from ..outcomes import ImageRejected, Outcome
from .files import STAGING_DIR, NotRegularFile, atomic_write, open_regular, refuse_special
from .formats import ALL_EXTENSIONS
from .manifest import MANIFEST_NAME, Record
from .validation import Limits, inspect_image

logger = logging.getLogger(__name__)

JOURNAL_NAME = "committing.jsonl"  # intent lines of images being renamed into place
QUARANTINE_DIR = ".quarantine"  # files found bad, moved out of the image tree
# names under which the dataset keeps files of its own: in out_dir, and at the top of each named folder
ROOT_FILES = ("dataset.json", MANIFEST_NAME, ".workers.json", "metadata.csv", "attribution.txt", "report.html", ".lock")
FOLDER_FILES = ("classes.txt", "classes_given.txt", "metadata.jsonl")

class FolderError(Exception):
    """An output folder cannot be used as it is; the message is one line naming it."""


class DatasetDisk:
    """The folders of one dataset: the root (``out_dir``) and the ``folders`` the user named
    (``images_dir`` and the like), which may lie outside it."""

    def __init__(self, root: str, folders: list[str] | tuple[str, ...] = ()):
        self.root = os.path.abspath(root)
        self.manifest_path = os.path.join(self.root, MANIFEST_NAME)
        self.staging_dir = os.path.join(self.root, STAGING_DIR)  # emptied at every start
        self.quarantine_dir = os.path.join(self.root, QUARANTINE_DIR)
        self.journal_path = os.path.join(self.staging_dir, JOURNAL_NAME)  # see dataset/durability.py
        self.folders = [self.root, *dict.fromkeys(os.path.abspath(f) for f in folders)]
        self.stagings: dict[str, str] = {}  # folder on another file system -> its sibling staging
        self._made: set[str] = set()  # folders known to exist
        self._listed: dict[str, frozenset[str]] = {}  # folder -> the names it held when first asked

    # --- the folders --------------------------------------------------------------------------

    def plan_staging(self) -> None:
        """A folder on another file system than the root stages beside itself (a rename never
        crosses file systems, and no temporary file is ever made inside it). Blocking."""
        root_dev = os.stat(self.root).st_dev
        for folder in self.folders[1:]:
            os.makedirs(folder, exist_ok=True)
            if os.stat(folder).st_dev == root_dev:
                continue
            real = os.path.realpath(folder)
            sibling = os.path.join(os.path.dirname(real), f".{os.path.basename(real)}.staging")
            if os.path.dirname(real) == real or os.stat(os.path.dirname(real)).st_dev != os.stat(real).st_dev:
                raise FolderError(
                    f"{folder} is on another file system than {self.root} and is its mount point, so it "
                    "cannot be staged beside; name a folder below the mount point, or put out_dir there too"
                )
            self.stagings[folder] = sibling

    def use_worker_staging(self, name: str) -> None:
        """Stage in a folder of this worker's own inside each staging folder (worker mode)."""
        self.staging_dir = os.path.join(self.staging_dir, name)
        self.journal_path = os.path.join(self.staging_dir, JOURNAL_NAME)
        self.stagings = {folder: os.path.join(staging, name) for folder, staging in self.stagings.items()}

    def all_stagings(self) -> list[str]:
        return [self.staging_dir, *self.stagings.values()]

    def staging_for(self, path: str) -> str:
        """The staging folder on the same file system as ``path``."""
        for folder, staging in self.stagings.items():
            if _under(os.path.abspath(path), folder):
                return staging
        return self.staging_dir

    def refuse_symlinks(self, folders: list[str]) -> None:
        """Folders the project makes itself must be real folders: a symlink there could carry a
        write, a clean-up or a move out of the dataset. Raises FolderError. Blocking."""
        for folder in folders:
            if os.path.islink(folder):
                raise FolderError(
                    f"{folder} is a symlink; the spiders make this folder themselves and do not follow "
                    "links there (remove the link, or point out_dir/images_dir at the real folder)"
                )
        if os.path.islink(self.manifest_path):  # appended to: a link would carry the writes elsewhere
            raise FolderError(f"{self.manifest_path} is a symlink; the manifest must be a real file of the dataset")

    def refuse_special_files(self) -> None:
        """Where the dataset keeps a file of its own (``ROOT_FILES``, ``FOLDER_FILES``), anything
        but a regular file or a symlink (a FIFO, a socket, a device, a folder) is refused: reading
        a FIFO would wait for good, and the spiders replace none of these. Raises FolderError."""
        names = [os.path.join(self.root, name) for name in ROOT_FILES]
        names += [os.path.join(folder, name) for folder in self.folders[1:] for name in FOLDER_FILES]
        for path in names:
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue  # not there: nothing to refuse
            try:
                refuse_special(path, mode)
            except NotRegularFile as exc:
                raise FolderError(f"{exc}; the dataset keeps a file of its own under this name (move it away, "
                                  "or choose another out_dir)") from None

    def clear_staging(self) -> int:
        """Delete what a stopped run left in the staging folders: our own temporary files only
        (by name), in real folders. Returns how many. Blocking."""
        self.refuse_symlinks(self.all_stagings())
        removed = 0
        for staging in self.all_stagings():
            os.makedirs(staging, exist_ok=True)
            for entry in os.scandir(staging):
                if TEMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                    removed += 1
        return removed

    # --- paths from the manifest --------------------------------------------------------------

    def relative(self, path: str | None) -> str | None:
        return None if path is None else os.path.relpath(path, self.root)

    def absolute(self, path: str) -> str | None:
        """The absolute path of a manifest ``path``, or None when it lies outside the dataset."""
        full = os.path.normpath(os.path.join(self.root, path))
        return full if path and self.inside(full) else None

    def inside(self, path: str) -> bool:
        """Whether ``path`` lies inside the root or a named folder (by its words)."""
        return any(_under(path, folder) and path != folder for folder in self.folders)

    def owns(self, path: str) -> bool:
        """Whether ``path`` may be deleted or moved: inside the dataset by its words, and its
        folder really there too (no symlinked folder on the way leads out)."""
        if not self.inside(path):
            return False
        real = os.path.realpath(os.path.dirname(path))
        return any(_under(real, os.path.realpath(folder)) for folder in self.folders)

    def remove(self, path: str) -> bool:
        """Delete a file of the dataset (a symlink itself, never its target); False if refused."""
        if not self.owns(path) or (os.path.isdir(path) and not os.path.islink(path)):
            logger.warning("Not removing %s: it is not a file inside the dataset's folders", path)
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return True

    def quarantine(self, path: str) -> str | None:
        """Move a file (or a symlink, not its target) to ``{root}/.quarantine/``, under the path
        it had in its folder; never overwrites, never outside. Returns where, or None if refused."""
        if not self.owns(path) or not os.path.lexists(path) or (os.path.isdir(path) and not os.path.islink(path)):
            logger.warning("Not moving %s aside: it is not a file inside the dataset's folders", path)
            return None
        base = self.root if _under(path, self.root) else next(f for f in self.folders if _under(path, f))
        tag = [] if base == self.root else ["_outside", os.path.basename(base) or "folder"]
        aside = os.path.join(self.quarantine_dir, *tag, os.path.relpath(path, base))
        stem, n = aside, 1
        while os.path.lexists(aside):
            aside, n = f"{stem}.{n}", n + 1
        if os.path.islink(self.quarantine_dir):
            logger.warning("Not moving %s aside: %s is a symlink", path, self.quarantine_dir)
            return None
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        if not _under(os.path.realpath(os.path.dirname(aside)), os.path.realpath(self.quarantine_dir)):
            logger.warning("Not moving %s aside: a symlink inside .quarantine leads out of it", path)
            return None
        _move(path, aside)
        return aside

    # --- files --------------------------------------------------------------------------------

    def make_folder(self, folder: str) -> None:
        """Create ``folder`` once; later calls cost nothing."""
        if folder not in self._made:
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)

    def listed(self, folder: str) -> frozenset[str]:
        """The names ``folder`` held when first asked (one listing per folder per run). Blocking."""
        if folder not in self._listed:
            try:
                self._listed[folder] = frozenset(os.listdir(folder))
            except OSError:
                self._listed[folder] = frozenset()
        return self._listed[folder]

    def forget_listings(self) -> None:
        self._listed = {}

    def has_listing(self, folder: str) -> bool:
        return folder in self._listed

    def may_hold(self, stem: str) -> bool:
        """Whether a file ``stem``.* may be in place from before this run (else: surely not)."""
        folder, name = os.path.split(stem)
        names = self.listed(folder)
        return any(f"{name}.{ext}" in names for ext in ALL_EXTENSIONS)

    def write_file(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically, through the staging on its file system. Blocking."""
        atomic_write(path, data, self.staging_for(path), fsync=False)

    def find_present(self, known: Record | None, stem: str, limits: Any = None) -> Record | None:
        """The image already kept under ``stem``.*, or None. Blocking: run it in a thread.

        A file the manifest vouches for (same size; with its perceptual hash when ``limits``
        asks for one) is trusted without reading it. Any other
        file is decoded in full first (``limits``: the validation's); one that fails is not
        present, and the download replaces it. Only regular files count: a symlink under an
        image's name is never followed.
        """
        path = self.kept_path(known)
        hashed = known is not None and (known.phash is not None or not getattr(limits, "near", False))
        if known and hashed and path and _stem(path) == stem and known.sha256 and known.bytes is not None and (
            regular_size(path) == known.bytes
        ):
            return Record(known.id, Outcome.PRESENT, path=path, bytes=known.bytes, sha256=known.sha256,
                          width=known.width, height=known.height, pixels=known.pixels, phash=known.phash)
        for ext in ALL_EXTENSIONS:  # the first file under this name that decodes in full
            path = f"{stem}.{ext}"
            if regular_size(path) is not None and (found := _describe_file(path, limits)) is not None:
                return found
        return None

    def kept_path(self, known: Record | None) -> str | None:
        """The absolute path of the file a record says is kept, or None."""
        if known and known.path and known.kept:
            return self.absolute(known.path)
        return None

    def take_stock(
        self, folder: str, lookup: Callable[[str], Record | None], limits: Any
    ) -> tuple[dict[str, Record], dict[str, Record]]:
        """The images an earlier run left in ``folder``: those the manifest (``lookup`` by id)
        vouches for, and those it does not (a crash between the rename and the manifest line),
        decoded in full. Anything else under an image name is moved to ``.quarantine``. Blocking."""
        vouched: dict[str, Record] = {}
        unlisted: dict[str, Record] = {}
        try:
            names = sorted(os.listdir(folder))
        except FileNotFoundError:
            return vouched, unlisted
        for name in names:
            stem, _, ext = name.rpartition(".")
            if ext.lower() not in ALL_EXTENSIONS:
                continue
            path = os.path.join(folder, name)
            taken = vouched.get(stem) or unlisted.get(stem)
            if taken is None:
                known = lookup(stem)
                found = self.find_present(known, os.path.join(folder, stem), limits)
                if found is not None:
                    (vouched if known and known.kept and known.sha256 == found.sha256 else unlisted)[stem] = found
                    taken = found
            if taken is None or taken.path != path:  # junk, a link, or a second file of one image
                self.quarantine(path)
        return vouched, unlisted


TEMP_NAME = re.compile(r"[0-9a-f]{32}\.part")  # what store.py names its temporary files


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def regular_size(path: str) -> int | None:
    """The size of a regular file (not a symlink), or None."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _move(src: str, dst: str) -> None:
    """Rename, or copy then delete when ``dst`` is on another file system. A symlink moves as one."""
    try:
        os.replace(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
    else:
        tmp = f"{dst}.incomplete"
        shutil.copyfile(src, tmp, follow_symlinks=False)
        os.replace(tmp, dst)
    os.unlink(src)


def _stem(path: str) -> str:
    return os.path.splitext(path)[0]


def _describe_file(path: str, limits: Any) -> Record | None:
    try:
        decoded = inspect_image(path, limits or Limits(max_pixels=2**40))
    except ImageRejected:
        return None
    digest = hashlib.sha256()
    size = 0
    with open_regular(path, follow=False) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    name = os.path.basename(_stem(path))
    return Record(name, Outcome.PRESENT, path=path, bytes=size, sha256=digest.hexdigest(), width=decoded.width,
                  height=decoded.height, pixels=decoded.pixels, phash=decoded.phash)
