"""One id, one file: an image kept under a new path loses its old copy."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..items import ImageItem
    from .core import DatasetCore

logger = logging.getLogger(__name__)


def remove_old_copy(core: DatasetCore, item: ImageItem) -> None:
    """An image kept under a new path (ISIC relabelled it, or the layout changed) loses its
    old copy in the image folder, now that the new one is in place. Removed before the line
    is written, so a crash in between leaves the old line to redo this."""
    old = core.disk.kept_path(core.known(item.kind, item.image_id)) if item.key in core.index else None
    new = os.path.abspath(item.result.path or "")
    images_dir = core.folder_names.get("images_dir")
    if not old or old == new or not images_dir or not old.startswith(os.path.join(images_dir, "")):
        return
    if os.path.lexists(old) and core.disk.remove(old):
        note = f"moved from {core.disk.relative(old)} (the old copy was removed)"
        item.result.detail = f"{item.result.detail}; {note}" if item.result.detail else note
        core.stats.inc_value("images/moved")
        logger.info("%s %s", item.image_id, note)
