"""What the image loaders read: Hugging Face's ``imagefolder`` and torchvision's ``ImageFolder``.

- ``metadata_jsonl``: the ``metadata.jsonl`` that ``imagefolder`` reads beside the images. Every
  line has every column, and each column one JSON type (pyarrow infers one type per column:
  an int in one row and a string in another fails the load); a missing value is ``null``. The
  ``datasets`` library takes the features from the first 10 MB of the file, so a column that is
  null all through them fails the load when a value comes later: the rows that first carry a
  value of some column go first.
- ``split_metadata``: one ``metadata.jsonl`` per split folder (ISIC's ``by_split``), which is
  where ``imagefolder`` looks for a split's metadata; all of them with one schema.
- ``class_folders`` and ``classes_txt``: the class index both loaders assign (sorted folder
  names), written as ``classes.txt`` (``label_classes_txt`` for ISIC's label folders);
  ``classes_given_txt`` keeps the order the user gave.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .files import open_regular
from .formats import is_image_name

METADATA_NAME = "metadata.jsonl"
CLASSES_NAME = "classes.txt"
CLASSES_GIVEN_NAME = "classes_given.txt"
FIRST_COLUMNS = ("file_name", "label")
_WNID_AT_END = re.compile(r"(?:^|_)(n[0-9]{8})$")
#: The words Hugging Face's ``datasets`` reads as a split's in a folder's name (data_files.py,
#: ``SPLIT_KEYWORDS``), whole or set apart by ``-._ `` or digits (``train``, ``val_2``, ``x-test``)
_HF_SPLIT = re.compile(r"(?:^|[-._ 0-9])(?:train|training|validation|valid|dev|val|test|testing|eval|evaluation)"
                       r"(?:$|[-._ 0-9])")


# --- metadata.jsonl -------------------------------------------------------------------------


def reserved(column: str) -> bool:
    """Names ``imagefolder`` gives a meaning of its own (file columns, the image, the label):
    a metadata field so named would turn into an image column or clash with ours."""
    return column in ("image", "label", "file_name", "file_names") or column.endswith(("_file_name", "_file_names"))


def _kind(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str" if isinstance(value, str) else "json"


def column_types(rows: Iterable[dict[str, Any]]) -> dict[str, str]:
    """One type per column: ``bool``, ``int``, ``float`` (ints and floats mixed) or ``str``
    (strings, nested values, or anything mixed); ``null`` for a column with no value at all."""
    seen: dict[str, set[str]] = {}
    for row in rows:
        for column, value in row.items():
            kinds = seen.setdefault(column, set())
            if (kind := _kind(value)) is not None:
                kinds.add(kind)
    types = {}
    for column, kinds in seen.items():
        if not kinds:
            types[column] = "null"
        elif len(kinds) == 1 and kinds != {"json"}:
            types[column] = kinds.pop()
        else:
            types[column] = "float" if kinds == {"int", "float"} else "str"
    return types


def typed(value: Any, kind: str) -> Any:
    """``value`` as a value of the column's type (None stays None: JSON null)."""
    if _kind(value) is None:
        return None
    if kind == "float":
        return float(value)
    if kind == "str" and not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value


def metadata_jsonl(
    rows: list[dict[str, Any]], leading: Iterable[str] = (), types: dict[str, str] | None = None
) -> bytes:
    """The text of ``metadata.jsonl``: ``file_name`` (relative to the file's folder, with ``/``)
    and ``label`` first, then the ``leading`` columns, then the others sorted; every row every
    column. ``types``: the columns and their types, when they are not these rows' alone (the
    files of several splits share them)."""
    types = column_types(rows) if types is None else types
    first = list(dict.fromkeys([*FIRST_COLUMNS, *leading]))
    columns = first + sorted(c for c in types if c not in first)
    lines = []
    for row in front_first(rows, columns):
        line = {c: typed(row.get(c), types.get(c, "null")) for c in columns}
        lines.append(json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n")
    return "".join(lines).encode("utf-8")


def split_metadata(
    rows: dict[str, list[dict[str, Any]]], leading: Iterable[str] = ()
) -> tuple[dict[str, bytes], list[str]]:
    """The ``metadata.jsonl`` of each split folder (``rows`` by split, ``file_name`` relative to
    the split's folder), and the columns left out of them. ``imagefolder`` refuses splits whose
    metadata files differ in features, and pyarrow types a column with no value in a file as
    null: so every file has the same columns, of the types all the rows give them, and a column
    with a value in some split but none in another is left out of every file (``metadata.csv``
    keeps it). A column with no value anywhere is null in every file, which loads."""
    types = column_types([row for split_rows in rows.values() for row in split_rows])
    valued = [{c for c, t in column_types(split_rows).items() if t != "null"} for split_rows in rows.values()]
    dropped = sorted(set[str]().union(*valued) - valued[0].intersection(*valued)) if valued else []
    shared = {c: t for c, t in types.items() if c not in dropped}
    return {split: metadata_jsonl(split_rows, leading, shared) for split, split_rows in rows.items()}, dropped


def unread_splits(names: Iterable[str]) -> list[str]:
    """The split folders ``imagefolder`` leaves out with ``data_dir``: once a folder is named for
    one of its splits, it reads those alone (with none so named, it reads every folder as one
    ``train`` split, and the ``split`` column tells them apart)."""
    names = list(names)
    known = [name for name in names if _HF_SPLIT.search(name)]
    return [name for name in names if name not in known] if known else []


def front_first(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """``rows`` in order, except that each row that is the first to carry a value of some column
    comes first (at most one row a column): no column is null all through the file's head."""
    uncovered = {c for c in columns if any(_kind(row.get(c)) is not None for row in rows)}
    front: list[int] = []
    for i, row in enumerate(rows):
        if not uncovered:
            break
        carried = {c for c in uncovered if _kind(row.get(c)) is not None}
        if carried:
            front.append(i)
            uncovered -= carried
    chosen = set(front)
    return [rows[i] for i in front] + [row for i, row in enumerate(rows) if i not in chosen]


# --- the class index ------------------------------------------------------------------------


def class_folders(images_dir: str) -> list[str]:
    """The class folders of an image tree in the loaders' order: the sorted names of the folders
    directly in ``images_dir`` that hold an image (torchvision sorts every folder there, and
    refuses an empty one; Hugging Face sorts the folders its images are in). Hidden folders
    (which Hugging Face skips) are not classes."""
    names = []
    try:
        entries = list(os.scandir(images_dir))
    except OSError:
        return []
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            holds_image = any(f.is_file() and is_image_name(f.name) for f in os.scandir(entry.path))
        except OSError:
            holds_image = False
        if holds_image:
            names.append(entry.name)
    return sorted(names)


def wnid_of_folder(name: str) -> str:
    """The wnid a class folder is named for (``{wnid}`` or ``{label}_{wnid}``), or ``""``."""
    found = _WNID_AT_END.search(name)
    return found.group(1) if found else ""


def _field(text: str | None) -> str:
    """A field of a tab-separated line: no tab, no line break inside."""
    return re.sub(r"[\t\r\n]+", " ", text or "")


def classes_txt(folders: Iterable[str], known: dict[str, tuple[str, str | None]]) -> bytes:
    """``classes.txt``: ``index TAB folder TAB wnid TAB label`` for each folder in sorted order,
    the index being the one ImageFolder and imagefolder assign. ``known`` maps a folder to its
    wnid and label; any other folder's wnid comes from its name."""
    lines = []
    for index, folder in enumerate(sorted(folders)):
        wnid, label = known.get(folder, (wnid_of_folder(folder), None))
        lines.append(f"{index}\t{_field(folder)}\t{_field(wnid)}\t{_field(label)}\n")
    return "".join(lines).encode("utf-8")


def label_classes_txt(folders: Iterable[str]) -> bytes:
    """``classes.txt`` of a tree whose class folders are its labels (ISIC's ``by_label`` and
    ``by_split``): ``index TAB folder``, sorted as the loaders sort, the index being the one they
    assign; the first two columns of ImageNet's, which has no more to say here."""
    return "".join(f"{index}\t{_field(folder)}\n" for index, folder in enumerate(sorted(folders))).encode("utf-8")


def classes_given_txt(classes: Iterable[tuple[int, str, str | None]]) -> bytes:
    """``classes_given.txt``: ``index TAB wnid TAB label`` in the order the user gave."""
    return "".join(f"{index}\t{_field(wnid)}\t{_field(label)}\n" for index, wnid, label in classes).encode("utf-8")


def read_classes_txt(path: str) -> dict[str, tuple[str, str | None]]:
    """Folder -> (wnid, label) from an earlier ``classes.txt`` (its four-column lines; an older
    three-column file names no folder and gives nothing)."""
    known: dict[str, tuple[str, str | None]] = {}
    try:
        with open_regular(path, mode="r", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 4 and parts[0].isdigit() and parts[1]:
                    known[parts[1]] = (parts[2], parts[3] or None)
    except OSError:
        pass
    return known


@dataclass
class ClassIndex:
    """The class files of one ImageNet image tree: ``classes_given.txt`` for the classes of a run,
    and ``classes.txt`` for every class folder of the tree (an earlier run's too)."""

    images_dir: str
    classes: list[tuple[int, str, str | None, str]]  # index given, wnid, label, folder name
    write_file: Callable[[str, bytes], None]  # atomic

    def write(self, start: bool) -> None:
        """At the start of a run, both files, ``classes.txt`` counting the folders the run means
        to fill; at the end, ``classes.txt`` from the folders there (a class that got no image
        has none, and ImageFolder does not see it). Blocking."""
        path = os.path.join(self.images_dir, CLASSES_NAME)
        known = {**read_classes_txt(path), **{folder: (wnid, label) for _, wnid, label, folder in self.classes}}
        folders = set(class_folders(self.images_dir))
        if start:
            given = classes_given_txt((index, wnid, label) for index, wnid, label, _ in self.classes)
            self.write_file(os.path.join(self.images_dir, CLASSES_GIVEN_NAME), given)
            folders |= {folder for *_, folder in self.classes}
        self.write_file(path, classes_txt(folders, known))
