"""The classes an ImageNet run asked for, with their words, from the files it left beside them.

The manifest names a class only once an image of it was tried; a class whose URLs all vanished
must still show in the report, at 0 of N. Its words ("tench") make the contact sheet readable.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any

CLASSES_TXT_MAX = 16 << 20  # bytes; a larger class list is not ours
WNID = re.compile(r"n[0-9]{8}")


def asked_classes(run: dict[str, Any]) -> list[tuple[str, str]]:
    """The classes the last imagenet run asked for, in order, with their words: from
    ``classes_given.txt`` (index, wnid, label) or else ``classes.txt`` (whose columns have
    changed over versions: the wnid is the first that looks like one, the label the last).
    Only a regular file of sane size; anything odd gives []."""
    folders = given if isinstance(given := run.get("folders"), dict) else {}
    images_dir = folders.get("images_dir")
    if not isinstance(images_dir, str) or not os.path.isabs(images_dir):
        return []
    for name in ("classes_given.txt", "classes.txt"):
        text = _small_file(os.path.join(images_dir, name))
        if text is not None:
            break
    else:
        return []
    found = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split("\t")]
        at = next((i for i, part in enumerate(parts) if WNID.fullmatch(part)), None)
        if at is not None:
            found.append((parts[at], parts[-1] if len(parts) - 1 > at else ""))
    return found


def _small_file(path: str) -> str | None:
    """The text of a regular file (never through a link, never a FIFO) under CLASSES_TXT_MAX."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > CLASSES_TXT_MAX:
            return None
        return f.read().decode("utf-8", errors="replace")
