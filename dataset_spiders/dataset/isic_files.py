"""The files that describe an ``isic`` dataset as isic-cli writes it
(``isic image download``, isic_cli/cli/image.py): ``metadata.csv`` (isic_id, attribution,
copyright_license, then the sorted union of the acquisition and clinical fields; Python's
``csv`` with its CRLF line ends, values as ``csv`` writes them) with its rows in the archive's
order, and ``attribution.txt`` (the raw attribution strings by image count, then name,
``Anonymous`` last, joined by blank lines, no final newline). Built from the manifest and the
saved descriptions, so it also covers images kept by earlier or ``offset`` runs: the manifest
keeps each image's place in the archive's listing (``position``); images from manifests written
before it existed come after, by id. With ``splits``, a last column ``split``.

Beside the images, ``metadata.jsonl`` is what Hugging Face's ``imagefolder`` loads: one line
per image file really there under its final name (``file_name`` relative to ``images_dir``),
its ``label`` and the same fields, one type per column (``dataset_spiders.dataset.loaders``); with
``layout=by_split``, one in each split folder instead, where ``imagefolder`` reads a split's
metadata. With label folders (``by_label``, ``by_split``), ``classes.txt`` at the top gives the
class index the loaders assign, and every split folder holds the same class folders (those
without an image left empty: a missing folder would shift torchvision's indices); the summary
notes each label a split lacks.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..sources.isic import LABELS, IsicRecord, record_from_description, valid_id
from ..sources.splits import SPLIT_COLUMN, UNLABELED, Scheme, scheme
from . import manifest, provenance
from .disk import DatasetDisk, regular_size
from .files import open_regular, unlink_quietly
from .formats import is_image_name
from .loaders import (
    CLASSES_NAME,
    METADATA_NAME,
    class_folders,
    label_classes_txt,
    metadata_jsonl,
    reserved,
    split_metadata,
    unread_splits,
)
from .manifest import Record

logger = logging.getLogger(__name__)
FIRST_COLUMNS = ["isic_id", "attribution", "copyright_license"]


def kept_images(manifest_path: str) -> dict[str, Record]:
    """The last line of each image the manifest keeps, by id (valid ISIC ids only: an id names files)."""
    last: dict[str, Record] = {}
    for _, record in manifest.read(manifest_path):
        if record.kind == "image":
            last[record.id] = record
    return {key: last[key] for key in sorted(last) if last[key].kept and valid_id(key)}


def read_description(descs_dir: str, key: str) -> IsicRecord | None:
    try:
        with open_regular(os.path.join(descs_dir, f"{key}.json"), mode="r", encoding="utf-8") as f:
            return record_from_description(json.load(f))
    except (OSError, ValueError, RecursionError):
        return None


def recorded_split(record: Record, clinical: dict[str, Any] | None, splits: Scheme) -> str:
    """An image's split: as its manifest line says, or, on a line from before lines said it, the
    plain rule's (the one rule there was then, so where the image is)."""
    return record.split if record.split in splits.names() else splits.split_of(record.id, clinical)


def archive_order(kept: dict[str, Record]) -> list[str]:
    """The ids in the archive's order: by their place in its listing, then those without one
    (lines written before ``position`` existed) by id."""
    return sorted(kept, key=lambda key: (kept[key].position is None, kept[key].position or 0, key))


def _fields(key: str, record: IsicRecord) -> dict[str, Any]:
    """One row as isic-cli makes it (``_extract_metadata``): the three first, then acquisition, then clinical."""
    return {"isic_id": key, "attribution": record.attribution, "copyright_license": record.license,
            **record.acquisition, **record.clinical}


def attributions(rows: list[dict[str, Any]]) -> list[str]:
    """isic-cli's ``get_attributions``: by image count (descending), then name; ``Anonymous`` last.
    A record without an attribution string has none to list."""
    counts = Counter(row["attribution"] for row in rows if isinstance(row["attribution"], str))
    return [a for a, _ in sorted(counts.items(), key=lambda item: (item[0] == "Anonymous", -item[1], item[0]))]


def build_catalog(manifest_path: str, descs_dir: str, splits: Scheme | None = None) -> tuple[str, str, int]:
    """metadata.csv text, attribution.txt text, and the number of images described."""
    rows: list[dict[str, Any]] = []
    fields: set[str] = set()
    kept = kept_images(manifest_path)
    for key in archive_order(kept):
        if (record := read_description(descs_dir, key)) is not None:
            fields |= record.acquisition.keys() | record.clinical.keys()
            rows.append(_fields(key, record))
            if splits is not None:
                rows[-1][SPLIT_COLUMN] = recorded_split(kept[key], record.clinical, splits)
    header = FIRST_COLUMNS + sorted(fields)
    if splits is not None and SPLIT_COLUMN not in header:
        header.append(SPLIT_COLUMN)
    out = io.StringIO()
    writer = csv.DictWriter(out, header)  # isic-cli's writer: the csv module's defaults, "\r\n" line ends
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue(), "\n\n".join(attributions(rows)), len(rows)


def runs_arguments(root: str, images_dir: str) -> dict[str, Any]:
    """The arguments of the latest isic run that filled ``images_dir`` (from ``dataset.json``)."""
    found: dict[str, Any] = {}
    runs, _ = provenance.read_resolved(root, [images_dir])
    for run in runs:
        arguments = given if isinstance(given := run.get("arguments"), dict) else {}
        if run.get("spider") == "isic" and run["folders"].get("images_dir") == images_dir:
            found = arguments
    return found


def image_rows(
    disk: DatasetDisk, images_dir: str, descs_dir: str, splits: Scheme | None = None
) -> list[dict[str, Any]]:
    """The rows of ``metadata.jsonl``: each image the manifest keeps whose file is there (a
    regular file under an image name, inside ``images_dir``), with its label, its split (with
    ``splits``) and its fields."""
    images_dir = os.path.abspath(images_dir)
    rows = []
    for key, kept in kept_images(disk.manifest_path).items():
        path = disk.absolute(kept.path) if kept.path else None
        if path is None or not is_image_name(path) or regular_size(path) is None:
            continue
        relative = os.path.relpath(path, images_dir)
        if relative.startswith(os.pardir + os.sep) or os.path.isabs(relative):
            continue  # in another image folder (an earlier run's images_dir): not this tree's
        described = read_description(descs_dir, key)
        row: dict[str, Any] = {
            "file_name": relative.replace(os.sep, "/"),
            "label": kept.label or (described.label if described else None),
            "isic_id": key,
            "attribution": described.attribution if described else None,
            "copyright_license": described.license if described else None,
        }
        if splits is not None:
            row[SPLIT_COLUMN] = recorded_split(kept, described.clinical if described else None, splits)
        if described:
            fields = {**described.acquisition, **described.clinical}
            row.update((k, v) for k, v in fields.items() if k not in row and not reserved(k))
        rows.append(row)
    return rows


@dataclass
class LoaderFiles:
    """What ``write_loader_files`` did: how many images the metadata lists, and what the run's
    summary should say (a label a split lacks, columns the split files leave out)."""

    listed: int = 0
    notes: list[str] = field(default_factory=list)


def write_loader_files(
    disk: DatasetDisk, images_dir: str, descs_dir: str, splits: Scheme | None = None, layout: str | None = None
) -> LoaderFiles:
    """Write what the loaders read, atomically, from the images there: ``metadata.jsonl`` (at the
    top, or with ``by_split`` in each split folder; removed where no image is listed), and with
    label folders ``classes.txt`` and the same class folders in every split. ``splits`` and
    ``layout``: the run's; without, those of the latest run that filled ``images_dir``
    (``scrapy verify --fix`` keeps them). Blocking; the caller holds the dataset's lock."""
    if splits is None or layout is None:
        arguments = runs_arguments(disk.root, os.path.normpath(os.path.abspath(images_dir)))
        splits = splits or scheme(arguments.get("splits"), arguments.get("seed"))
        layout = layout or arguments.get("layout") or "flat"
    rows = image_rows(disk, images_dir, descs_dir, splits)
    done = LoaderFiles(len(rows))
    leading = [SPLIT_COLUMN, *FIRST_COLUMNS] if splits is not None else FIRST_COLUMNS
    top = os.path.join(images_dir, METADATA_NAME)
    if layout == "by_split" and splits is not None:
        done.notes += _write_split_metadata(disk, images_dir, rows, splits, leading)
        if os.path.lexists(top):
            unlink_quietly(top)  # an earlier version's: with split names imagefolder does not know, rows twice
    elif rows:
        disk.write_file(top, metadata_jsonl(rows, leading=leading))
        csv_path = os.path.join(disk.root, "metadata.csv")
        if os.path.commonpath([os.path.abspath(images_dir), csv_path]) == os.path.abspath(images_dir):
            logger.warning("%s holds isic-cli's metadata.csv as well as %s: Hugging Face's imagefolder refuses two "
                           "metadata files in one tree; name an images_dir apart from out_dir to load it with "
                           "data_dir", images_dir, METADATA_NAME)
    elif os.path.lexists(top):
        unlink_quietly(top)
    if layout in ("by_label", "by_split"):
        done.notes += _arrange_classes(disk, images_dir, splits.names() if layout == "by_split" and splits else ())
    if splits is not None and layout != "by_split":
        done.notes += _labels_missing(rows, splits)
    return done


def _write_split_metadata(
    disk: DatasetDisk, images_dir: str, rows: list[dict[str, Any]], splits: Scheme, leading: list[str]
) -> list[str]:
    """``{split}/metadata.jsonl`` for each split that has images, one schema for all (see
    ``imagefolder.split_metadata``); the notes for the summary."""
    by_split: dict[str, list[dict[str, Any]]] = {name: [] for name in splits.names()}
    for row in rows:
        split, _, rest = row["file_name"].partition("/")
        if split in by_split and rest:
            by_split[split].append({**row, "file_name": rest})
    files, dropped = split_metadata({name: found for name, found in by_split.items() if found}, leading)
    for name in splits.names():
        path = os.path.join(images_dir, name, METADATA_NAME)
        if name in files:
            disk.write_file(path, files[name])
        elif os.path.lexists(path):
            unlink_quietly(path)
    notes = []
    if dropped:
        shown = ", ".join(dropped[:10]) + (f" and {len(dropped) - 10} more" if len(dropped) > 10 else "")
        notes.append(f"the splits' {METADATA_NAME} leave out {len(dropped)} column(s) that have a value in some split "
                     f"but none in another ({shown}): Hugging Face's imagefolder loads splits of one schema only; "
                     "metadata.csv has them")
    if unread := unread_splits(splits.names()):
        notes.append(f"Hugging Face's imagefolder leaves out split folder(s) not named as its splits are (train, "
                     f"val, test, …) once others are: {', '.join(unread)}; load them with data_files")
    return notes


def _arrange_classes(disk: DatasetDisk, images_dir: str, split_names: tuple[str, ...]) -> list[str]:
    """``classes.txt`` for the label folders that hold an image; with splits, those same folders
    in every split, in the loaders' order: a label a split lacks keeps an empty folder there
    (torchvision indexes every folder, so a missing one would give the others other indices in
    that split, silently; an empty one makes its default refuse, loudly), and an empty folder of
    a label no split holds any more goes. The notes for the summary."""
    tops = {name: os.path.join(images_dir, name) for name in split_names} or {"": images_dir}
    held = {name: set(class_folders(top)) for name, top in tops.items()}
    classes = sorted(set().union(*held.values()))
    notes = []
    for name, top in tops.items():
        for label in {*LABELS, UNLABELED} - held[name]:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(top, label))  # only when empty, and never a link; made again below if needed
        for label in classes if split_names else ():
            folder = os.path.join(top, label)
            if label not in held[name] and disk.owns(os.path.join(folder, "x")):
                os.makedirs(folder, exist_ok=True)
        lacking = [label for label in classes if label not in held[name]]
        if lacking:
            what = "no image" if not held[name] else f"no {' or '.join(lacking)} image"
            empty = " and ".join(f"{name}/{label}/" for label in lacking)
            notes.append(f"split {name} holds {what}: {empty} {'is' if len(lacking) == 1 else 'are'} left empty, so "
                         f"that every split has the same classes in the same order ({CLASSES_NAME}); torchvision's "
                         f"ImageFolder needs allow_empty=True for {name}")
    path = os.path.join(images_dir, CLASSES_NAME)
    if classes:
        disk.write_file(path, label_classes_txt(classes))
    elif os.path.lexists(path):
        unlink_quietly(path)
    return notes


def _labels_missing(rows: list[dict[str, Any]], splits: Scheme) -> list[str]:
    """A note for each split that lacks a label the dataset has (the ``split`` column)."""
    held: dict[str, set[str]] = {name: set() for name in splits.names()}
    for row in rows:
        held.setdefault(row[SPLIT_COLUMN], set()).add(row["label"] or UNLABELED)
    labels = sorted(set().union(*held.values()))
    return [f"split {name} holds no {' or '.join(lacking)} image" for name in splits.names()
            if (lacking := [label for label in labels if label not in held[name]])]


def has_loader_files(images_dir: str) -> bool:
    """Whether a run left files for the loaders in ``images_dir`` (``scrapy verify --fix`` rewrites them)."""
    if any(os.path.lexists(os.path.join(images_dir, name)) for name in (METADATA_NAME, CLASSES_NAME)):
        return True
    with contextlib.suppress(OSError):
        for entry in os.scandir(images_dir):
            if entry.is_dir(follow_symlinks=False) and os.path.lexists(os.path.join(entry.path, METADATA_NAME)):
                return True
    return False
