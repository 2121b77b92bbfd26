"""Real, small test images built in memory with Pillow; every helper returns bytes.

Pixels are seeded noise, so different seeds give different pixels and bytes.
"""

from __future__ import annotations

import io
import random
from functools import lru_cache

from PIL import Image, ImageCms, ImageDraw, ImageFilter

ORIENTATION = 0x0112
MAKE = 0x010F
MODEL = 0x0110


def _noise(mode: str, w: int, h: int, seed: int) -> Image.Image:
    channels = Image.getmodebands(mode)
    rng = random.Random(f"{mode}:{seed}")
    return Image.frombytes(mode, (w, h), rng.randbytes(w * h * channels))


def _save(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def photo(seed: int, w: int = 320, h: int = 240) -> Image.Image:
    """A photo-like RGB image: overlapping coloured shapes, softened, as a camera's are (noise
    has no low frequencies for a perceptual hash to keep). Save it with :func:`encode`."""
    rng = random.Random(f"photo:{seed}")
    img = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x, y = rng.randrange(w), rng.randrange(h)
        box = (x, y, x + rng.randrange(20, w // 2), y + rng.randrange(20, h // 2))
        draw.ellipse(box, fill=tuple(rng.randrange(256) for _ in range(3)))
    return img.filter(ImageFilter.GaussianBlur(3))


def encode(img: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    return _save(img, fmt, **params)


def srgb_icc() -> bytes:
    """An sRGB ICC profile as bytes."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def jpeg(w: int, h: int, seed: int = 0, exif: bool = False, icc: bool = False) -> bytes:
    """RGB noise JPEG; ``exif`` adds Orientation=6 plus Make/Model, ``icc`` an sRGB profile."""
    params: dict[str, object] = {"quality": 90}
    if exif:
        tags = Image.Exif()
        tags[ORIENTATION] = 6
        tags[MAKE] = "ISIC Test Camera"
        tags[MODEL] = f"Dermatoscope {seed}"
        params["exif"] = tags.tobytes()
    if icc:
        params["icc_profile"] = srgb_icc()
    return _save(_noise("RGB", w, h, seed), "JPEG", **params)


def png_rgba(w: int, h: int, seed: int = 0) -> bytes:
    """RGBA noise PNG whose top-left quadrant is fully transparent (alpha 0)."""
    img = _noise("RGBA", w, h, seed)
    alpha = Image.new("L", (w, h), 255)
    ImageDraw.Draw(alpha).rectangle((0, 0, w // 2 - 1, h // 2 - 1), fill=0)
    img.putalpha(alpha)
    return _save(img, "PNG")


def png_gray(w: int, h: int, seed: int = 0) -> bytes:
    """8-bit grayscale (mode L) noise PNG, like ISIC's grayscale PNG originals."""
    return _save(_noise("L", w, h, seed), "PNG")


def png_rgb(w: int, h: int, seed: int = 0) -> bytes:
    """RGB noise PNG."""
    return _save(_noise("RGB", w, h, seed), "PNG")


def mask_png(w: int, h: int, seed: int = 0) -> bytes:
    """8-bit L segmentation mask with values only 0 and 255 (a lesion ellipse)."""
    rng = random.Random(f"mask:{seed}")
    img = Image.new("L", (w, h), 0)
    dx, dy = rng.randint(0, max(w // 8, 0)), rng.randint(0, max(h // 8, 0))
    ImageDraw.Draw(img).ellipse((w // 4 + dx, h // 4 + dy, 3 * w // 4, 3 * h // 4), fill=255)
    return _save(img, "PNG")


def cmyk_jpeg(w: int, h: int, seed: int = 0) -> bytes:
    """CMYK noise JPEG (Pillow must convert it before saving as RGB)."""
    return _save(_noise("CMYK", w, h, seed), "JPEG", quality=90)


def tiff(w: int, h: int, seed: int = 0) -> bytes:
    """RGB noise TIFF, deflate-compressed (stripped; Pillow cannot write tiles)."""
    return _save(_noise("RGB", w, h, seed), "TIFF", compression="tiff_adobe_deflate")


def truncated(data: bytes, fraction: float = 0.6) -> bytes:
    """The first ``fraction`` (default 60%) of ``data``: a corrupt, undecodable image."""
    return data[: int(len(data) * fraction)]


@lru_cache(maxsize=8192)
def pixel_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from the image header, or None when not an image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def thumbnail_jpeg(data: bytes, size: int = 256) -> bytes:
    """A JPEG thumbnail (longest side <= ``size``) of ``data``; grey if undecodable."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            thumb = img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        thumb = Image.new("RGB", (size, size), (128, 128, 128))
    thumb.thumbnail((size, size))
    return _save(thumb, "JPEG", quality=80)
