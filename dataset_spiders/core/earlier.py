"""What earlier runs left: the manifest, read at start-up.

The first pass builds the index (the last line of each image), drops lines whose path lies outside
the dataset; the second feeds every earlier image to the placeholder learner and the duplicate index,
so a re-run refuses the same duplicates and placeholders an uninterrupted run would. Kept
images that turn out to be a placeholder (served for too many URLs, counting earlier runs) are
returned, to be withdrawn.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .disk import DatasetDisk, is_image_name
from .manifest import ManifestIndex, Record, read
from .seen import KeptRef, PlaceholderLearner, SeenImages, site_of

logger = logging.getLogger(__name__)


@dataclass
class EarlierRuns:
    index: ManifestIndex
    ignored: int = 0  # lines whose path lies outside the dataset, or names no image
    withdraw: dict[str, tuple[KeptRef, str | None, str | None]] = field(default_factory=dict)  # ref, sha, pixels


def load(disk: DatasetDisk, learner: PlaceholderLearner, seen: SeenImages | None) -> EarlierRuns:
    """Read the manifest (blocking; at start-up, off the reactor)."""
    found = EarlierRuns(ManifestIndex(disk.manifest_path))
    for offset, record in read(disk.manifest_path):
        if record.path is not None and (disk.absolute(record.path) is None or not is_image_name(record.path)):
            found.ignored += 1
            if found.ignored <= 5:
                logger.warning("Ignoring the manifest line of %s: its path %r is outside the dataset "
                               "or not an image's", record.key, record.path[:200])
            continue
        found.index.add(offset, record)
        if record.learned and record.sha256:
            learner.add_learned(site_of(record.url), record.sha256)
    if found.ignored > 5:
        logger.warning("Ignored %d manifest line(s) whose path is outside the dataset", found.ignored)
    if learner.threshold or seen is not None:  # a second pass, over each image's last line only
        for record in found.index.records():
            if record.kind == "image" and record.sha256:
                _remember(disk, record, learner, seen, found.withdraw)
    return found


def _remember(
    disk: DatasetDisk, record: Record, learner: PlaceholderLearner, seen: SeenImages | None,
    withdraw: dict[str, tuple[KeptRef, str | None, str | None]],
) -> None:
    sha256 = record.sha256 or ""
    site = site_of(record.url)
    ref = None
    path = disk.kept_path(record) if record.kept else None
    if path:
        ref = KeptRef(record.id, record.group or "", path, record.url or "")
        learner.note_kept_ref(site, sha256, ref, record.pixels)
    # every copy counts as one more URL serving those bytes, kept or not (duplicate, surplus)
    for earlier, pixels in learner.observe(site, sha256, record.url or "") or []:
        withdraw[earlier.image_id] = (earlier, sha256, pixels)
    if ref is None:
        return
    if learner.is_placeholder(site, sha256):
        withdraw[record.id] = (ref, sha256, record.pixels)
    elif seen is not None:
        seen.add_known(sha256, record.pixels, ref)
