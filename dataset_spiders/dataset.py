"""The dataset on disk: its root folder, its manifest, and what earlier runs left there."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import stat
from typing import Any

from . import manifest
from .manifest import Entry, ManifestWriter
from .outcomes import KEPT_OUTCOMES, PRESENT, ImageRejected

logger = logging.getLogger(__name__)

STAGING_DIR = ".staging"  # temporary files, under the dataset root; emptied at every start
QUARANTINE_DIR = ".quarantine"  # files found bad, moved out of the image tree

#: The extensions a kept image may have, per Pillow format (the first is the one we give).
FORMAT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "JPEG": ("jpg", "jpeg"),
    "MPO": ("jpg", "jpeg"),
    "PNG": ("png",),
    "TIFF": ("tif", "tiff"),
    "GIF": ("gif",),
    "WEBP": ("webp",),
    "BMP": ("bmp",),
}
ALL_EXTENSIONS = tuple(dict.fromkeys(e for exts in FORMAT_EXTENSIONS.values() for e in exts))


def extension_for(image_format: str | None, named: str | None) -> str:
    """The extension for a kept file: the source's own when it fits the real format."""
    known = FORMAT_EXTENSIONS.get(image_format or "", ())
    if named and named.lower() in known:
        return named.lower()
    return known[0] if known else (named or "img").lower()


class FolderError(Exception):
    """An output folder cannot be used as it is; the message is one line naming it."""


class Dataset:
    """Paths and the manifest index of one dataset root (``out_dir``).

    ``folders`` are the other folders the user named (``images_dir`` and the like), which may
    lie outside the root. Every path taken from the manifest must lie inside the root or one
    of them; nothing is deleted or moved elsewhere, and never through a symlink.
    """

    def __init__(self, root: str, folders: list[str] | tuple[str, ...] = ()):
        self.root = os.path.abspath(root)
        self.manifest_path = os.path.join(self.root, manifest.MANIFEST_NAME)
        self.staging_dir = os.path.join(self.root, STAGING_DIR)  # emptied at every start
        self.quarantine_dir = os.path.join(self.root, QUARANTINE_DIR)
        self.folders = [self.root, *dict.fromkeys(os.path.abspath(f) for f in folders)]
        self.stagings: dict[str, str] = {}  # folder on another file system -> its sibling staging
        self.index: dict[str, Entry] = {}
        self.learned_placeholders: set[tuple[str, str]] = set()  # (url, sha256) from earlier runs
        self.latest: dict[tuple[str, str], str] = {}  # (kind, id) -> its latest outcome in this run
        self.ignored_lines = 0  # manifest lines whose path lies outside the dataset
        self.writer = ManifestWriter(self.manifest_path)  # opened at its first line

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
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        if not _under(os.path.realpath(os.path.dirname(aside)), os.path.realpath(self.quarantine_dir)):
            logger.warning("Not moving %s aside: a symlink inside .quarantine leads out of it", path)
            return None
        _move(path, aside)
        return aside

    # --- the manifest ---------------------------------------------------------------------------

    def load(self) -> None:
        """Read the manifest an earlier run left (blocking; at start-up only). Lines whose path
        lies outside the dataset are dropped here, with a warning, and never acted on."""
        index = manifest.load_index(self.manifest_path, self.learned_placeholders)
        for key, entry in list(index.items()):
            if entry.path is not None and (self.absolute(entry.path) is None or not _image_name(entry.path)):
                self.ignored_lines += 1
                if self.ignored_lines <= 5:
                    logger.warning("Ignoring the manifest line of %s: its path %r is outside the dataset "
                                   "or not an image's", key, entry.path[:200])
                del index[key]
        if self.ignored_lines > 5:
            logger.warning("Ignored %d manifest line(s) whose path is outside the dataset", self.ignored_lines)
        self.index = index

    def count_outcome(self, stats: Any, kind: str, image_id: str, outcome: str) -> None:
        """Count an image under its latest outcome of this run (an image tried twice, e.g. surplus
        then kept, or kept then withdrawn, counts once): the stats equal the manifest's last lines."""
        prefix = "outcome" if kind == "image" else f"outcome_{kind}"
        key = (kind, image_id)
        if key in self.latest:
            stats.inc_value(f"{prefix}/{self.latest[key]}", -1)
        self.latest[key] = outcome
        stats.inc_value(f"{prefix}/{outcome}")

    def entry(self, kind: str, image_id: str) -> Entry | None:
        return self.index.get(manifest.key(kind, image_id))

    def kept_path(self, kind: str, image_id: str) -> str | None:
        """The absolute path of the file the manifest says is kept for this image, or None."""
        known = self.entry(kind, image_id)
        if known and known.outcome in KEPT_OUTCOMES and known.path:
            return self.absolute(known.path)
        return None

    def find_present(self, kind: str, image_id: str, stem: str, limits: Any = None) -> Entry | None:
        """The image already kept under ``stem``.*, or None. Blocking: run it in a thread.

        A file the manifest vouches for (same size) is trusted without reading it. Any other
        file is decoded in full first (``limits``: the validation's); one that fails is not
        present, and the download replaces it. Only regular files count: a symlink under an
        image's name is never followed.
        """
        known = self.entry(kind, image_id)
        path = self.kept_path(kind, image_id)
        if known and path and _stem(path) == stem and known.sha256 and _regular_size(path) == known.bytes:
            return Entry(PRESENT, path, known.bytes, known.sha256, known.width, known.height, known.pixels)
        for ext in ALL_EXTENSIONS:
            path = f"{stem}.{ext}"
            if _regular_size(path) is not None:
                return _describe_file(path, limits)
        return None

    def take_stock(self, folder: str, limits: Any) -> tuple[dict[str, Entry], dict[str, Entry]]:
        """The images an earlier run left in ``folder``: those the manifest vouches for, and
        those it does not list (a crash between the rename and the manifest line), decoded in
        full. Anything else under an image name is moved to ``.quarantine``. Blocking."""
        vouched: dict[str, Entry] = {}
        unlisted: dict[str, Entry] = {}
        try:
            names = sorted(os.listdir(folder))
        except FileNotFoundError:
            return vouched, unlisted
        for name in names:
            stem, _, ext = name.rpartition(".")
            if ext.lower() not in ALL_EXTENSIONS or stem in vouched or stem in unlisted:
                continue
            path = os.path.join(folder, name)
            found = self.find_present("image", stem, os.path.join(folder, stem), limits)
            known = self.entry("image", stem)
            if found is None or os.path.islink(path):  # a link is junk in the dataset, never its target
                self.quarantine(path)
            elif known and known.outcome in KEPT_OUTCOMES and known.sha256 == found.sha256:
                vouched[stem] = found
            else:
                unlisted[stem] = found
        return vouched, unlisted


TEMP_NAME = re.compile(r"[0-9a-f]{32}\.part")  # what store.py names its temporary files


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _image_name(path: str) -> bool:
    return path.rpartition(".")[2].lower() in ALL_EXTENSIONS and "/" not in path.rpartition(".")[2]


def _regular_size(path: str) -> int | None:
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


def _describe_file(path: str, limits: Any) -> Entry | None:
    from .pipelines.validate import Limits, inspect_image

    try:
        width, height, _, pixels = inspect_image(path, limits or Limits(max_pixels=2**40))
    except ImageRejected:
        return None
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return Entry(PRESENT, path, size, digest.hexdigest(), width, height, pixels)
