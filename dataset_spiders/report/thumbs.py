"""The contact sheet's thumbnails: small JPEGs of kept files, made safely and cheaply.

A manifest is data, not trust: a line may name ``../../etc/passwd``, a symlink or a FIFO. A
thumbnail is made only from a regular file inside the dataset's folders (its real folder too),
opened without following a link, of the size the manifest recorded, that Pillow decodes; any
doubt and the image is left out. JPEGs are decoded at a reduced scale (``draft``), so a sheet of
hundreds of large photos costs little.
"""

from __future__ import annotations

import base64
import io
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

from PIL import Image

from ..dataset.disk import DatasetDisk
from ..dataset.formats import is_image_name
from ..dataset.validation import opened_image
from .gather import Gathered, Sample

MAX_FILE = 1 << 30  # bytes; a kept file is never larger (DOWNLOAD_MAXSIZE)
MAX_PIXELS = 178_956_970  # IMAGES_MAX_PIXELS: larger was never kept, so is not ours
QUALITY = 70


@dataclass
class Thumb:
    """One embedded thumbnail: the image's id, a ``data:`` URI and its size in pixels."""

    id: str
    uri: str
    width: int
    height: int


def open_safely(disk: DatasetDisk, rel: str, expect: int | None) -> io.BufferedReader | None:
    """The kept file a manifest ``path`` names, opened for reading, or None when it is not
    a regular file inside the dataset with the recorded size."""
    full = disk.absolute(rel)
    if full is None or not is_image_name(rel) or not disk.owns(full):
        return None
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None  # gone, a symlink (ELOOP), unreadable
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE or (expect is not None and st.st_size != expect):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def make_thumb(disk: DatasetDisk, sample: Sample, size: int) -> Thumb | None:
    """A JPEG thumbnail (at most ``size`` pixels a side) of one kept image, or None. Blocking."""
    f = open_safely(disk, sample.path, sample.bytes)
    if f is None:
        return None
    try:
        with f, opened_image(f) as im:
            if im.width * im.height > MAX_PIXELS:
                return None
            if im.format == "JPEG":
                im.draft("RGB", (size, size))  # decode at 1/2, 1/4 or 1/8 scale: far less work
            im.thumbnail((size, size))
            small = _rgb(im)
        out = io.BytesIO()
        small.save(out, "JPEG", quality=QUALITY, optimize=True)
    except Exception:  # Pillow raises many kinds on a bad file; none may stop the report
        return None
    uri = "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")
    return Thumb(sample.id, uri, small.width, small.height)


def _rgb(im: Image.Image) -> Image.Image:
    """``im`` as RGB; transparency over white, 16-bit and float scaled to 8 bits."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))
        return white
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        wide = im.convert("F")
        lo, hi = cast("tuple[float, float]", wide.getextrema())  # one band: (lowest, highest), not one per band
        scale = 255.0 / (hi - lo) if hi > lo else 1.0
        return wide.point(lambda v: (v - lo) * scale).convert("L").convert("RGB")
    return im.convert("RGB")


def contact_sheet(got: Gathered, size: int = 96, workers: int = 4) -> dict[str, list[Thumb]]:
    """Thumbnails of the chosen samples, by class or label, in sample order (those that could
    not be made are left out). Decoding runs in threads: Pillow releases the GIL while it works."""
    disk = DatasetDisk(got.root, got.folders)
    jobs = [(name, sample) for name, samples in got.samples.items() for sample in samples]
    sheet: dict[str, list[Thumb]] = {name: [] for name in got.samples}
    with ThreadPoolExecutor(max(1, min(workers, os.cpu_count() or 1))) as pool:
        made = pool.map(lambda job: make_thumb(disk, job[1], size), jobs)
        for (name, _), thumb in zip(jobs, made, strict=True):
            if thumb is not None:
                sheet[name].append(thumb)
    return sheet

