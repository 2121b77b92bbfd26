"""Step 2: decode every staged image in full, off the reactor thread, and apply the limits.

Only what Pillow decodes completely is kept: HTML served with 200, truncated files, unknown
formats and images outside the size limits are rejected with the reason in the manifest.
The pixel limit is checked from the header, before anything is decoded.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageFile, UnidentifiedImageError

from ..dataset import FORMAT_EXTENSIONS
from ..items import ImageItem
from ..outcomes import CORRUPT, DOWNLOADED, NOT_IMAGE, TOO_LARGE, TOO_SMALL, TRUNCATED, ImageRejected

# Our own limit (IMAGES_MAX_PIXELS) is checked before decoding, so Pillow's global one, which
# only warns between 89 and 179 megapixels, is not needed.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

_TEXT_STARTS = (b"<", b"{", b"[", b"\xef\xbb\xbf<")


@dataclass(frozen=True)
class Limits:
    min_width: int = 0
    min_height: int = 0
    max_pixels: int = 178_956_970
    pixel_digest: bool = False  # also hash the decoded pixels (for duplicate detection)

    @classmethod
    def from_settings(cls, s: Any) -> Limits:
        return cls(
            min_width=s.getint("IMAGES_MIN_WIDTH"),
            min_height=s.getint("IMAGES_MIN_HEIGHT"),
            max_pixels=s.getint("IMAGES_MAX_PIXELS"),
            pixel_digest=s.getbool("DEDUPLICATE_IMAGES"),
        )


def inspect_image(path: str, limits: Limits) -> tuple[int, int, str, str | None]:
    """Width, height, format and (if asked) pixel digest of the image at ``path``, decoded in full.

    Raises ``ImageRejected`` naming the reason. Blocking: call it from a worker thread.
    """
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    if head.startswith(_TEXT_STARTS):
        kind = "an HTML page" if head[:1] == b"<" or head[3:4] == b"<" else "text"
        raise ImageRejected(NOT_IMAGE, f"the server sent {kind}, not an image")
    try:
        im = Image.open(path)
    except UnidentifiedImageError:
        raise ImageRejected(NOT_IMAGE, "not an image format Pillow knows") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(CORRUPT, f"unreadable header: {exc}") from None
    with im:
        width, height = im.size
        fmt = im.format or "?"
        if fmt not in FORMAT_EXTENSIONS:
            raise ImageRejected(NOT_IMAGE, f"{fmt} images are not accepted")
        if width * height > limits.max_pixels:
            raise ImageRejected(TOO_LARGE, f"{width}x{height} is over {limits.max_pixels} pixels")
        if width < limits.min_width or height < limits.min_height:
            raise ImageRejected(TOO_SMALL, f"{width}x{height} < {limits.min_width}x{limits.min_height}")
        if fmt in ("JPEG", "MPO"):
            # Decoding at 1/8 scale still reads every byte of the entropy-coded data, so a
            # truncated file is caught at a fraction of the cost of a full decode.
            im.draft(im.mode, (max(1, width // 8), max(1, height // 8)))
        try:
            im.load()
        except OSError as exc:
            outcome = TRUNCATED if "truncated" in str(exc) or "broken data stream" in str(exc) else CORRUPT
            raise ImageRejected(outcome, str(exc)) from None
        except (SyntaxError, ValueError, EOFError, IndexError) as exc:
            raise ImageRejected(CORRUPT, f"{type(exc).__name__}: {exc}") from None
        digest = None
        if limits.pixel_digest:  # JPEGs are hashed at the decoded (1/8) scale: same pixels, same digest
            digest = hashlib.sha256(f"{width}x{height}:{im.mode}:".encode() + im.tobytes()).hexdigest()
    return width, height, fmt, digest


class ValidateImagesPipeline:
    """Rejects what does not decode in full or is outside ``IMAGES_MIN_*``/``IMAGES_MAX_PIXELS``."""

    def __init__(self, limits: Limits):
        self.limits = limits

    @classmethod
    def from_crawler(cls, crawler: Any) -> ValidateImagesPipeline:
        return cls(Limits.from_settings(crawler.settings))

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, ImageItem) or item.outcome != DOWNLOADED or not item.staged:
            return item
        # A mask is as large as its image; the minimum sizes are for images only.
        limits = Limits(max_pixels=self.limits.max_pixels) if item.kind == "mask" else self.limits
        try:
            item.width, item.height, item.format, item.pixels = await asyncio.to_thread(
                inspect_image, item.staged, limits
            )
        except ImageRejected as exc:
            item.outcome, item.detail = exc.outcome, exc.detail
        return item

