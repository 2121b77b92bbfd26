"""One dataset per folder: a run's selection against the one the folder holds.

A selection is what a dataset's images are (ISIC: filter, query, collections, image size,
layout, splits; ImageNet: flickr_only, layout, the source), not how many: counts change with
every re-run, selections never silently. A run whose spider or selection differs from the
folder's latest run stops with one line (``difference``), unless it was asked to turn the folder
into its own selection (``reselect``): then every image, mask and description the folder holds
is set aside to ``.quarantine/`` and recorded (``set_aside_everything``) before anything else.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from typing import Any

from ..outcomes import Outcome
from . import manifest
from .disk import DatasetDisk
from .manifest import ManifestWriter, Record

Selection = dict[str, Any]


def normal(selection: Selection) -> Selection:
    """``selection`` as plain JSON values (tuples as lists), so a recorded one compares equal."""
    plain: Selection = json.loads(json.dumps(selection, default=str))
    return plain


def latest_run(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The latest run recorded in ``dataset.json`` that says which spider it was."""
    return next((run for run in reversed(runs) if isinstance(run.get("spider"), str)), None)


def shown(selection: Selection) -> str:
    """``filter=benign, layout=flat``: the values that are set."""
    parts = [f"{k}={_value(v)}" for k, v in selection.items() if v not in (None, [], "")]
    return ", ".join(parts) or "everything"


def _value(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(":".join(map(str, v)) if isinstance(v, list) else str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def difference(spider: str, mine: Selection, runs: list[dict[str, Any]],
               selection_of: Callable[[dict[str, Any]], Selection]) -> str | None:
    """What sets this run apart from the dataset the folder holds (None: the same dataset).
    ``selection_of`` reads a recorded run's arguments as this spider's selection."""
    earlier = latest_run(runs)
    if earlier is None:
        return None
    if earlier["spider"] != spider:
        return f"it holds an {earlier['spider']} dataset and this is an {spider} run"
    arguments = given if isinstance(given := earlier.get("arguments"), dict) else {}
    theirs = normal(selection_of(arguments))
    mine = normal(mine)
    changed = [name for name in mine if mine[name] != theirs.get(name)]
    if not changed:
        return None
    return "; ".join(f"{name} is {_value(theirs.get(name)) if theirs.get(name) not in (None, [], '') else 'unset'} "
                     f"there, {_value(mine[name]) if mine[name] not in (None, [], '') else 'unset'} now"
                     for name in changed)


def refusal(root: str, why: str) -> str:
    """The one line for a run that would mix two datasets in one folder."""
    return (f"{root} holds another dataset ({why}): one dataset per folder, never mixed. Give another out_dir "
            "(--out-dir), or reselect=true (--reselect) to turn this folder into this run's selection: the "
            "images there now are set aside to .quarantine/ and recorded, then this run's are fetched")


def set_aside_everything(disk: DatasetDisk, writer: ManifestWriter, descs_dirs: list[str], why: str) -> int:
    """Move every image and mask the manifest keeps, and their descriptions, to ``.quarantine/``
    (never deleted) and record each as ``set_aside``; then remove the folders that were left
    empty inside the image folders. Returns how many were set aside. Blocking; the caller holds
    the dataset's lock, before anything reads the manifest for this run."""
    index = manifest.ManifestIndex(disk.manifest_path)
    for offset, line in manifest.read(disk.manifest_path):
        index.add(offset, line)
    count = 0
    emptied: set[str] = set()
    try:
        for record in index.records():
            if not record.kept:
                continue
            path = disk.absolute(record.path) if record.path else None
            if path is not None and os.path.lexists(path):
                if disk.quarantine(path) is None:
                    continue  # refused (the log says why): left where it is, still recorded as it was
                emptied.add(os.path.dirname(path))
            if record.kind == "image":
                for folder in descs_dirs:
                    description = os.path.join(folder, f"{record.id}.json")
                    if os.path.lexists(description):
                        disk.quarantine(description)
            writer.write(Record(record.id, Outcome.SET_ASIDE, record.kind, record.group, record.label, record.url,
                                detail=f"set aside: {why}"))
            count += 1
    finally:
        index.close()
    writer.sync()
    tops = [os.path.normpath(f) for f in disk.folders]
    for folder in sorted(emptied, key=len, reverse=True):  # deepest first; never a named folder itself
        while folder not in tops and disk.inside(folder) and not os.path.islink(folder):
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only when empty
            if os.path.isdir(folder):
                break
            folder = os.path.dirname(folder)
    return count
