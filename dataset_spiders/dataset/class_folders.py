"""What a class folder held when the run started, and what the core does about it.

Files the manifest vouches for count towards the class; files a crash left without their
manifest line are checked like new downloads (not a duplicate, not a known placeholder) and
recorded as ``present``; a class over its target is brought back to it. The spider calls these
with what it knows of the class (its folder, its candidates in list order).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import TYPE_CHECKING, Any

from ..outcomes import Outcome
from .formats import is_image_name
from .identity import KeptRef, site_of
from .manifest import Key, Record

if TYPE_CHECKING:
    from .core import DatasetCore

logger = logging.getLogger(__name__)


def take(core: DatasetCore, folder: str, limits: Any) -> tuple[dict[str, Record], dict[str, Record]]:
    """The images in ``folder``: vouched for by the manifest, and not listed there. Blocking."""
    core.disk.refuse_symlinks([folder])
    return core.disk.take_stock(folder, lambda stem: core.known("image", stem), limits)


def adopt(core: DatasetCore, group: str, label: str | None, unlisted: dict[str, Record]) -> set[str]:
    """Record files found without a manifest line as ``present`` once they pass the checks a
    download would; the others are moved aside. Returns the ids moved aside."""
    moved = set()
    for stem, found in unlisted.items():
        if (core.seen and core.seen.by_bytes.get(found.sha256 or "")) or core.learner.is_sha_learned(found.sha256):
            core.disk.quarantine(found.path or "")
            moved.add(stem)
            continue
        ref = KeptRef(stem, group, found.path or "", "")
        if core.seen is not None:
            core.seen.add_known(found.sha256, found.pixels, ref)
        if core.near is not None:
            core.near.add(found.phash, ref)
        core.writer.write(Record(stem, Outcome.PRESENT, group=group, label=label,
                                 detail="found without a manifest line", path=core.disk.relative(found.path),
                                 bytes=found.bytes, sha256=found.sha256, width=found.width, height=found.height,
                                 pixels=found.pixels, phash=found.phash))
    return moved


async def learn(core: DatasetCore, group: str, unlisted: dict[str, Record], urls: dict[str, str]) -> None:
    """Files found without their manifest line count towards learning placeholders as their
    downloads would have; now that the candidates are known (``urls`` by id), so are their URLs."""
    for stem, found in unlisted.items():
        url = urls.get(stem)
        if url is None or not found.sha256:
            continue
        site, ref = site_of(url), KeptRef(stem, group, found.path or "", url)
        core.learner.note_kept_ref(site, found.sha256, ref, found.pixels)
        withdraw = {r.image_id: (r, px) for r, px in core.learner.observe(site, found.sha256, url) or []}
        if core.learner.is_placeholder(site, found.sha256):
            withdraw[stem] = (ref, found.pixels)
        for r, px in withdraw.values():
            await core.withdraw(r, found.sha256, px, f"the same image was served for many photo URLs of {site}")


async def trim(
    core: DatasetCore, group: str, label: str | None, on_disk: dict[str, Record], vouched: set[str],
    order: list[str], target: int,
) -> set[str]:
    """A class folder that held more than ``target`` images when the run started (placed by
    hand, an older run with a larger N) is brought back to it: the surplus (those the manifest
    does not vouch for first, then the last in list ``order``) is moved to ``.quarantine`` and
    recorded, never deleted. Returns the ids moved."""
    surplus = await asyncio.to_thread(over_target, on_disk, vouched, order, target)
    moved: dict[str, str] = {}
    for stem, found in surplus:
        aside = await asyncio.to_thread(core.disk.quarantine, found.path or "")
        if aside is None:
            continue
        moved[stem] = aside
        await core.mode.revoke(group, stem, found.sha256, found.pixels, None)  # (a worker's recount counted it)
        detail = f"trimmed: the class held more than per_class={target} images; moved to {core.disk.relative(aside)}"
        core.writer.write(Record(stem, Outcome.SURPLUS, group=group, label=label, detail=detail,
                                 bytes=found.bytes, sha256=found.sha256))
        core.count(Key("image", stem), Outcome.SURPLUS)
        core.stats.inc_value("images/trimmed")
    if moved:
        logger.warning("%s held %d images, over per_class=%d: moved %d to %s", group, target + len(surplus),
                       target, len(moved), os.path.dirname(next(iter(moved.values()))))
    return set(moved)


def image_stems(folder: str) -> set[str]:
    """The ids of the images in a class folder now (what a worker's recount counts). Blocking."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return set()
    return {name.rpartition(".")[0] for name in names if not name.startswith(".") and is_image_name(name)}


def over_target(
    on_disk: dict[str, Record], vouched: set[str], order: list[str], target: int
) -> list[tuple[str, Record]]:
    """The images beyond ``target``, in the order to move them aside. Blocking (checks which files
    are still there)."""
    there = [(stem, r) for stem, r in on_disk.items() if r.path and os.path.lexists(r.path)]
    if len(there) <= target:
        return []
    position = {image_id: i for i, image_id in enumerate(order)}
    there.sort(key=lambda pair: (pair[0] not in vouched, position.get(pair[0], len(position)), _natural(pair[0])))
    return there[target:]


def _natural(text: str) -> list[tuple[int, Any]]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text)]
