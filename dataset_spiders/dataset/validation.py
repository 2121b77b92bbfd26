"""The checks of the image stage, as plain functions run in a worker thread: digests, known
placeholders, and a full decode within the limits.

Only what Pillow decodes completely is kept: HTML served with 200, truncated files, unknown
formats and images outside the size limits are rejected with the reason in the manifest.
The pixel limit is checked from the header, before anything is decoded. The bytes are read
once: one pass computes every digest the checks need, and the decode reads the same buffer.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from PIL import Image, UnidentifiedImageError

from ..outcomes import ImageRejected, Outcome
from .files import open_regular
from .formats import FORMAT_EXTENSIONS
from .near_copies import perceptual_hash

_TEXT_STARTS = (b"<", b"{", b"[", b"\xef\xbb\xbf<")


_PILLOW_LIMIT = threading.Lock()


@contextmanager
def opened_image(f: IO[bytes]) -> Iterator[Image.Image]:
    """``Image.open`` judged by our pixel limit, not Pillow's. Pillow's is process-wide (it warns
    between 89 and 179 megapixels and refuses above, on open and again on decode); ours
    (``IMAGES_MAX_PIXELS``) is checked on the header before any decoding. So Pillow's is lifted
    only for our own opens and, for an image over it, while that image is decoded (one such image
    at a time, under a lock); it is never changed for the process we run in."""
    with _PILLOW_LIMIT:
        pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            im = Image.open(f)
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit
    with im:
        if pillow_limit is None or im.width * im.height <= pillow_limit:
            yield im
            return
        with _PILLOW_LIMIT:
            Image.MAX_IMAGE_PIXELS = None
            try:
                yield im
            finally:
                Image.MAX_IMAGE_PIXELS = pillow_limit


@dataclass(frozen=True)
class Limits:
    min_width: int = 0
    min_height: int = 0
    max_pixels: int = 178_956_970
    pixel_digest: bool = False  # also hash the decoded pixels (for duplicate detection)
    near: bool = False  # also compute the perceptual hash (for near-copies; dataset/near_copies.py)

    @classmethod
    def from_settings(cls, s: Any) -> Limits:
        return cls(
            min_width=s.getint("IMAGES_MIN_WIDTH"),
            min_height=s.getint("IMAGES_MIN_HEIGHT"),
            max_pixels=s.getint("IMAGES_MAX_PIXELS"),
            pixel_digest=s.getbool("DEDUPLICATE_IMAGES"),
            near=s.getbool("NEAR_DUPLICATES"),
        )


@dataclass(frozen=True)
class Decoded:
    """What a full decode tells of an image."""

    width: int
    height: int
    format: str
    pixels: str | None = None  # sha256 of the decoded pixels, if asked
    phash: str | None = None  # perceptual hash, if asked


def inspect_image(source: str | bytes, limits: Limits) -> Decoded:
    """Width, height, format and (if asked) pixel digest and perceptual hash of an image (a
    path, or its bytes), decoded in full. Raises ``ImageRejected`` naming the reason. Blocking: run it in a thread.
    """
    if isinstance(source, bytes):
        return _inspect(io.BytesIO(source), limits)
    with open_regular(source, follow=False) as f:  # never a FIFO or device, never through a link
        return _inspect(f, limits)


def _inspect(f: IO[bytes], limits: Limits) -> Decoded:
    head = f.read(64).lstrip()
    f.seek(0)
    if head.startswith(_TEXT_STARTS):
        kind = "an HTML page" if head[:1] == b"<" or head[3:4] == b"<" else "text"
        raise ImageRejected(Outcome.NOT_IMAGE, f"the server sent {kind}, not an image")
    try:
        with opened_image(f) as im:
            return _decode(im, limits)
    except UnidentifiedImageError:
        raise ImageRejected(Outcome.NOT_IMAGE, "not an image format Pillow knows") from None
    except (OSError, SyntaxError, ValueError) as exc:  # (the decode's own errors are ImageRejected)
        raise ImageRejected(Outcome.CORRUPT, f"unreadable header: {exc}") from None


def _decode(im: Image.Image, limits: Limits) -> Decoded:
    width, height = im.size
    fmt = im.format or "?"
    if fmt not in FORMAT_EXTENSIONS:
        raise ImageRejected(Outcome.NOT_IMAGE, f"{fmt} images are not accepted")
    if width * height > limits.max_pixels:
        raise ImageRejected(Outcome.TOO_LARGE, f"{width}x{height} is over {limits.max_pixels} pixels")
    if width < limits.min_width or height < limits.min_height:
        raise ImageRejected(Outcome.TOO_SMALL, f"{width}x{height} < {limits.min_width}x{limits.min_height}")
    if fmt in ("JPEG", "MPO"):
        # Decoding at 1/8 scale still reads every byte of the entropy-coded data, so a
        # truncated file is caught at a fraction of the cost of a full decode.
        im.draft(im.mode, (max(1, width // 8), max(1, height // 8)))
    try:
        im.load()
    except OSError as exc:
        cut = "truncated" in str(exc) or "broken data stream" in str(exc)
        outcome = Outcome.TRUNCATED if cut else Outcome.CORRUPT
        raise ImageRejected(outcome, str(exc)) from None
    except (SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise ImageRejected(Outcome.CORRUPT, f"{type(exc).__name__}: {exc}") from None
    except Image.DecompressionBombError as exc:  # a frame larger than the header said
        raise ImageRejected(Outcome.TOO_LARGE, str(exc)) from None
    digest = None
    if limits.pixel_digest:  # JPEGs are hashed at the decoded (1/8) scale: same pixels, same digest
        digest = hashlib.sha256(f"{width}x{height}:{im.mode}:".encode() + im.tobytes()).hexdigest()
    # JPEGs too at the decoded scale: the hash is of a 32x32 reduction anyway
    phash = perceptual_hash(im) if limits.near else None
    return Decoded(width, height, fmt, digest, phash)


class Placeholders:
    """Known "image unavailable" stand-ins: by a redirect hop or final URL matching a pattern, or
    by the bytes (``sha256:``, ``sha1:``, ``md5:`` digests, or ``size:``)."""

    def __init__(self, url_patterns: list[str], digests: list[str]):
        self.url_patterns = [re.compile(p) for p in url_patterns]
        signatures = {d.split(":", 1)[0]: set[str]() for d in digests}
        for d in digests:
            kind, _, value = d.partition(":")
            signatures[kind].add(value.lower())
        self.sha256 = signatures.get("sha256", set())
        self.sha1 = signatures.get("sha1", set())
        self.md5 = signatures.get("md5", set())
        self.sizes = {int(v) for v in signatures.get("size", set()) if v.isdigit()}

    def by_url(self, urls: list[str]) -> str | None:
        """Why the image is a placeholder, from the URLs it was fetched through, or None."""
        for url in urls:
            if any(p.search(url) for p in self.url_patterns):
                return f"redirected to the placeholder {url}"
        return None

    def by_bytes(self, data: bytes, sha256: str) -> str | None:
        """Why these bytes are a known placeholder, or None (SHA-1 and MD5 only if listed)."""
        if len(data) in self.sizes:
            return f"{len(data)} bytes: the size of a known placeholder image"
        if (
            sha256 in self.sha256
            or (self.sha1 and hashlib.sha1(data).hexdigest() in self.sha1)
            or (self.md5 and hashlib.md5(data).hexdigest() in self.md5)
        ):
            return "the bytes are a known placeholder image"
        return None


def examine(data: bytes, limits: Limits, placeholders: Placeholders) -> tuple[str, Decoded]:
    """Every check of downloaded bytes, in one worker-thread call: sha256, known placeholder
    bytes, then a full decode. Returns the sha256 and what the decode found, or raises
    ``ImageRejected`` (with the sha256 of the bytes as its ``sha256``)."""
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        why = placeholders.by_bytes(data, sha256)
        if why:
            raise ImageRejected(Outcome.PLACEHOLDER, why)
        decoded = inspect_image(data, limits)
    except ImageRejected as exc:
        exc.sha256 = sha256
        raise
    return sha256, decoded


#: X-Robots-Tag directives that opt an image out of AI datasets (as img2dataset honours them)
NOAI_DIRECTIVES = frozenset({"noai", "noimageai"})
ROBOTS_TOKEN = "dataset-spiders"  # a directive may name the robot it is for: ``dataset-spiders: noai``


def opted_out(values: list[bytes]) -> str | None:
    """The opt-out directive among ``X-Robots-Tag`` header values that applies to us, or None."""
    for value in values:
        text = value.decode("latin-1").lower()
        robot = ""
        for part in text.split(","):
            if ":" in part:  # "otherbot: noai, nofollow" names the robot of what follows
                robot, _, part = part.partition(":")
                robot = robot.strip()
            if part.strip() in NOAI_DIRECTIVES and robot in ("", ROBOTS_TOKEN, "*"):
                return part.strip()
    return None

