"""The dataset on disk: its root folder, its manifest, and what earlier runs left there."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from . import manifest
from .manifest import Entry, ManifestWriter
from .outcomes import KEPT_OUTCOMES, PRESENT, ImageRejected

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


class Dataset:
    """Paths and the manifest index of one dataset root (``out_dir``)."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.manifest_path = os.path.join(self.root, manifest.MANIFEST_NAME)
        self.staging_dir = os.path.join(self.root, STAGING_DIR)  # emptied at every start
        self.index: dict[str, Entry] = {}
        self.learned_placeholders: set[tuple[str, str]] = set()  # (url, sha256) from earlier runs
        self.latest: dict[tuple[str, str], str] = {}  # (kind, id) -> its latest outcome in this run
        self.writer = ManifestWriter(self.manifest_path)  # opened at its first line

    def load(self) -> None:
        """Read the manifest an earlier run left (blocking; at start-up only)."""
        self.index = manifest.load_index(self.manifest_path, self.learned_placeholders)

    def count_outcome(self, stats: Any, kind: str, image_id: str, outcome: str) -> None:
        """Count an image under its latest outcome of this run (an image tried twice, e.g. surplus
        then kept, or kept then withdrawn, counts once): the stats equal the manifest's last lines."""
        prefix = "outcome" if kind == "image" else f"outcome_{kind}"
        key = (kind, image_id)
        if key in self.latest:
            stats.inc_value(f"{prefix}/{self.latest[key]}", -1)
        self.latest[key] = outcome
        stats.inc_value(f"{prefix}/{outcome}")

    def relative(self, path: str | None) -> str | None:
        return None if path is None else os.path.relpath(path, self.root)

    def absolute(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.root, path))

    def entry(self, kind: str, image_id: str) -> Entry | None:
        return self.index.get(manifest.key(kind, image_id))

    def find_present(self, kind: str, image_id: str, stem: str, limits: Any = None) -> Entry | None:
        """The image already kept under ``stem``.*, or None. Blocking: run it in a thread.

        A file the manifest vouches for (same size) is trusted without reading it. Any other
        file is decoded in full first (``limits``: the validation's); one that fails is not
        present, and the download replaces it.
        """
        known = self.entry(kind, image_id)
        if known and known.outcome in KEPT_OUTCOMES and known.path:
            path = self.absolute(known.path)
            if _stem(path) == stem and known.sha256:
                try:
                    if os.stat(path).st_size == known.bytes:
                        return Entry(PRESENT, path, known.bytes, known.sha256, known.width, known.height, known.pixels)
                except OSError:
                    pass
        for ext in ALL_EXTENSIONS:
            path = f"{stem}.{ext}"
            if os.path.isfile(path):
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
            found = self.find_present("image", stem, os.path.join(folder, stem), limits)
            known = self.entry("image", stem)
            if found is None:
                self.quarantine(os.path.join(folder, name))
            elif known and known.outcome in KEPT_OUTCOMES and known.sha256 == found.sha256:
                vouched[stem] = found
            else:
                unlisted[stem] = found
        return vouched, unlisted

    def quarantine(self, path: str) -> str:
        """Move a file out of the image tree, to ``{root}/.quarantine/`` (same relative path)."""
        aside = os.path.join(self.root, QUARANTINE_DIR, os.path.relpath(path, self.root))
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        os.replace(path, aside)
        return aside


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
