"""The image formats a dataset keeps, and the file names they go by."""

from __future__ import annotations

import os

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


def is_image_name(path: str) -> bool:
    return path.rpartition(".")[2].lower() in ALL_EXTENSIONS and "/" not in path.rpartition(".")[2]


def in_place(final: str) -> str | None:
    """The image of the stem of ``final`` (any image extension) that is a regular file in its
    folder, or None."""
    folder, name = os.path.split(final)
    stem = name.rpartition(".")[0] if "." in name else name
    try:
        with os.scandir(folder) as entries:
            return next((e.path for e in entries if e.name.rpartition(".")[0] == stem and is_image_name(e.name)
                         and e.is_file(follow_symlinks=False)), None)
    except OSError:
        return None
