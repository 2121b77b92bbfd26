"""What earlier runs left: the manifest, read at start-up.

The first pass builds the index (the last line of each image), drops lines whose path lies outside
the dataset; the second feeds every earlier image to the placeholder learner and the duplicate
indexes (exact, and near-copies with NEAR_DUPLICATES), so a re-run refuses the same duplicates and
placeholders an uninterrupted run would. Kept images that turn out to be a placeholder (served for
too many URLs, counting earlier runs) are returned, to be withdrawn.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from .disk import DatasetDisk
from .files import open_regular
from .formats import ALL_EXTENSIONS, is_image_name
from .identity import KeptRef, PlaceholderLearner, SeenImages, site_of
from .manifest import MAX_LINE, ManifestIndex, Record, decode
from .near_copies import NearCopies

logger = logging.getLogger(__name__)


@dataclass
class EarlierRuns:
    index: ManifestIndex
    ignored: int = 0  # lines whose path lies outside the dataset, or names no image
    skipped: int = 0  # lines that are not records
    withdraw: dict[str, tuple[KeptRef, str | None, str | None]] = field(default_factory=dict)  # ref, sha, pixels


#: The start of every line ``ManifestWriter`` writes: enough to index it without decoding it
#: all (the line is decoded in full when it is needed; ``ManifestIndex.get``).
IMAGE_EXTENSIONS = frozenset(ALL_EXTENSIONS)


def _key_of(obj: Any) -> str | None:
    """The index key of a parsed line that needs no closer look (an image or mask, its path none
    or plainly an image's inside the root, not a placeholder); None sends the line to the full
    decoder, which checks every field and warns. A line indexed here is decoded in full again,
    and checked, whenever it is read back (``ManifestIndex.get``)."""
    if type(obj) is not dict:
        return None
    image_id, kind, path = obj.get("id"), obj.get("kind"), obj.get("path")
    if type(image_id) is not str or not image_id or type(obj.get("outcome")) is not str:
        return None
    if obj["outcome"] == "placeholder" or kind not in ("image", "mask"):
        return None
    if path is not None and (
        type(path) is not str or path[:1] == "/" or ".." in path
        or path.rpartition(".")[2].lower() not in IMAGE_EXTENSIONS
    ):
        return None
    return image_id if kind == "image" and ":" not in image_id else f"{kind}:{image_id}"


def load(
    disk: DatasetDisk, learner: PlaceholderLearner, seen: SeenImages | None, near: NearCopies | None = None,
    repair: bool = False,
) -> EarlierRuns:
    """Read the manifest (blocking; at start-up, off the reactor).

    A line as we write it is indexed from its first bytes; any other line (an older version's,
    a hand edit, junk) is decoded in full and checked, and skipped with a warning if it is not
    a record. A path outside the dataset is never acted on: such a line is dropped here when it
    is decoded, and ``DatasetDisk.kept_path`` refuses it when it is read back. With ``repair``
    (a single run holding the dataset), a torn line (a write cut short by a crash or a full disk)
    is repaired once instead of warned about at every run: see ``repair_torn``."""
    found = EarlierRuns(ManifestIndex(disk.manifest_path))
    offsets = found.index.offsets
    torn: list[tuple[int, bytes]] = []
    for offset, raw in _lines(disk.manifest_path):
        try:
            key = _key_of(orjson.loads(raw))
        except orjson.JSONDecodeError:
            key = None
        if key is not None:
            offsets[key] = offset
            continue
        record = decode(raw) if len(raw) < MAX_LINE else f"over {MAX_LINE} bytes"
        if isinstance(record, str) and repair and record.startswith("not JSON"):
            torn.append((offset, raw))
        elif isinstance(record, str):
            _skipped(found, disk.manifest_path, offset, record)
        elif record.path is not None and (disk.absolute(record.path) is None or not is_image_name(record.path)):
            found.ignored += 1
            if found.ignored <= 5:
                logger.warning("Ignoring the manifest line of %s: its path %r is outside the dataset "
                               "or not an image's", record.key, record.path[:200])
        else:
            found.index.add(offset, record)
            if record.learned and record.sha256:
                learner.add_learned(site_of(record.url), record.sha256)
    if found.ignored > 5:
        logger.warning("Ignored %d manifest line(s) whose path is outside the dataset", found.ignored)
    if found.skipped > 5:
        logger.warning("%s: skipped %d malformed line(s) in all", disk.manifest_path, found.skipped)
    if torn:
        repair_torn(disk, torn)
    if learner.threshold or seen is not None or near is not None:  # a second pass, over each image's last line
        last = set(offsets.values())
        for offset, raw in _lines(disk.manifest_path):
            if offset in last and b'"sha256": null' not in raw and (record := decode(raw)) and (
                isinstance(record, Record) and record.kind == "image" and record.sha256
            ):
                _remember(disk, record, learner, seen, near, found.withdraw)
    return found


def repair_torn(disk: DatasetDisk, torn: list[tuple[int, bytes]]) -> None:
    """Set torn manifest lines aside, once: their bytes are appended to
    ``.quarantine/manifest.torn-lines``, then each is blanked in place (spaces, which every reader
    skips, so no other line moves) or, at the end of the file, cut off. Blocking; the caller holds
    the dataset alone."""
    aside = os.path.join(disk.quarantine_dir, "manifest.torn-lines")
    os.makedirs(disk.quarantine_dir, exist_ok=True)
    with open_regular(aside, os.O_WRONLY | os.O_CREAT | os.O_APPEND, "ab", follow=False) as saved:
        saved.write(b"".join(raw if raw.endswith(b"\n") else raw + b"\n" for _, raw in torn))
        saved.flush()
        os.fsync(saved.fileno())
    with open_regular(disk.manifest_path, os.O_RDWR, "r+b", follow=False) as f:
        end = f.seek(0, os.SEEK_END)
        for offset, raw in reversed(torn):
            if offset + len(raw) >= end:
                f.truncate(offset)  # the last line: cut off, the next line starts where it began
                end = offset
            else:
                f.seek(offset)
                f.write(b" " * (len(raw) - 1) + b"\n")
        f.flush()
        os.fsync(f.fileno())
    logger.warning("Repaired %s: %d line(s) cut short by a crash or a full disk, set aside to %s", disk.manifest_path,
                   len(torn), aside)


def _lines(path: str) -> Iterator[tuple[int, bytes]]:
    """Every line of the file with its offset (an overlong line is cut at MAX_LINE: decoding fails)."""
    if not os.path.exists(path):
        return
    with open_regular(path, follow=False) as f:
        offset = 0
        while raw := f.readline(MAX_LINE):
            yield offset, raw
            offset += len(raw)
            if not raw.endswith(b"\n") and len(raw) >= MAX_LINE:
                while (rest := f.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                    offset += len(rest)
                offset += len(rest)


def _skipped(found: EarlierRuns, path: str, offset: int, why: str) -> None:
    found.skipped += 1
    if found.skipped <= 5:
        logger.warning("%s: skipping a line (at byte %d): %s", path, offset, why)


def _remember(
    disk: DatasetDisk, record: Record, learner: PlaceholderLearner, seen: SeenImages | None,
    near: NearCopies | None, withdraw: dict[str, tuple[KeptRef, str | None, str | None]],
) -> None:
    sha256 = record.sha256 or ""
    site = site_of(record.url)
    ref = None
    path = disk.kept_path(record) if record.kept else None
    if path:
        ref = KeptRef(record.id, record.group or "", path, record.url or "")
        learner.note_kept_ref(site, sha256, ref, record.pixels)
    # every copy counts as one more URL serving those bytes, kept or not (duplicate, surplus)
    for earlier, pixels in learner.observe(site, sha256, record.url or "", record.group or "") or []:
        withdraw[earlier.image_id] = (earlier, sha256, pixels)
    if ref is None:
        return
    if learner.is_placeholder(site, sha256):
        withdraw[record.id] = (ref, sha256, record.pixels)
        return
    if seen is not None:
        seen.add_known(sha256, record.pixels, ref)
    if near is not None:
        near.add(record.phash, ref)
