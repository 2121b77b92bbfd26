"""ImageNet class files as researchers hold them, each recognised by its shape.

Accepted (a few lines each, as published):
- one wnid a line: ``n01440764``
- ``label,wnid`` (codeandfire's ``wnids_1000.txt``): ``tench,n01440764``
- wnid TAB label: ``n01440764<TAB>tench, Tinca tinca``
- ``wnid words, more words`` (Caffe's ``synset_words.txt``, Kaggle's ``LOC_synset_mapping.txt``):
  ``n01440764 tench, Tinca tinca``
- ``wnid index name`` (the ILSVRC devkit's ``map_clsloc.txt``): ``n02119789 1 kit_fox``
- Keras's ``imagenet_class_index.json``: ``{"0": ["n01440764", "tench"], ...}`` (class order = index)
- a CSV whose header names a ``synid``, ``wnid`` or ``wordnet_id`` column, and maybe a name column
  (mf1024's ``classes_in_imagenet.csv``: ``synid,class_name,urls,flickr_urls``)

A BOM, CRLF, blank lines and ``#`` comments are fine; a class listed twice counts once (the first).
"""

from __future__ import annotations

import csv
import json
import re
from typing import Any

from .imagenet import valid_wnid

ACCEPTED = ("one wnid a line; label,wnid; wnid TAB label; 'wnid words' (synset_words.txt, LOC_synset_mapping.txt); "
            "'wnid index name' (map_clsloc.txt); Keras imagenet_class_index.json; a CSV whose header names a "
            "synid, wnid or wordnet_id column")
MAX_SIZE = 16 << 20  # ImageNet-21k's list is ~1 MB
WNID_COLUMNS = ("synid", "wnid", "wordnet_id")
NAME_COLUMNS = ("class_name", "name", "label", "words", "class")
_DEVKIT = re.compile(r"(n\d{8})\s+\d+\s+(\S+)")
_WORDS = re.compile(r"(n\d{8})(?:\s+(.*))?")
_LABEL_WNID = re.compile(r"(.*),\s*(n\d{8})")

Classes = list[tuple[str, "str | None"]]


def read_class_file(path: str) -> tuple[Classes, str]:
    """The classes of a class file and the name of its format. ValueError: one line naming the file."""
    with open(path, "rb") as f:
        data = f.read(MAX_SIZE + 1)
    if len(data) > MAX_SIZE:
        raise ValueError(f"{path} is over {MAX_SIZE >> 20} MiB: not a class file (accepted: {ACCEPTED})")
    return parse_class_text(data.decode("utf-8", errors="replace"), path)


def parse_class_text(text: str, source: str) -> tuple[Classes, str]:
    """See the module docstring."""
    text = text.lstrip("\ufeff")
    if text.lstrip().startswith("{"):
        return _keras(text, source), "Keras imagenet_class_index.json"
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    data = [(n, line) for n, line in lines if line and not line.startswith("#")]
    if not data:
        raise ValueError(f"{source} lists no class (accepted: {ACCEPTED})")
    first = data[0][1]
    try:
        header = [field.strip().lower() for field in next(csv.reader([first]))]
    except csv.Error:  # a field over csv's limit (128 KiB): no header, and (below) no class line either
        header = []
    if "," in first and any(name in header for name in WNID_COLUMNS):
        return _csv(text, source), "CSV with a header"
    out: dict[str, str | None] = {}
    for n, line in data:
        found = _class_line(line.split("#", 1)[0].strip())
        if found is None:
            raise ValueError(f"{source} line {n}: {_shown(line)} is not a class line (accepted: {ACCEPTED})")
        out.setdefault(*found)
    return list(out.items()), _shape(first)


def _class_line(text: str) -> tuple[str, str | None] | None:
    if "\t" in text:
        wnid, label = (part.strip() for part in text.split("\t", 1))
        return (wnid, label or None) if valid_wnid(wnid) else None
    if m := _DEVKIT.fullmatch(text):
        return m[1], m[2].replace("_", " ")
    if m := _WORDS.fullmatch(text):
        return m[1], (m[2] or "").strip() or None
    if m := _LABEL_WNID.fullmatch(text):
        return m[2], m[1].strip() or None
    return None


def _shape(line: str) -> str:
    if "\t" in line:
        return "wnid TAB label"
    if _DEVKIT.fullmatch(line):
        return "wnid index name (map_clsloc.txt)"
    if _WORDS.fullmatch(line):
        return "wnid words (synset_words.txt)" if " " in line else "one wnid a line"
    return "label,wnid"


def _keras(text: str, source: str) -> Classes:
    try:
        data: Any = json.loads(text)
        rows = sorted(((int(k), v) for k, v in data.items()), key=lambda kv: kv[0])
    except (ValueError, TypeError, AttributeError, RecursionError):
        raise ValueError(f"{source} is JSON but not Keras's imagenet_class_index.json (accepted: {ACCEPTED})") from None
    out: dict[str, str | None] = {}
    for index, value in rows:
        if not (isinstance(value, list) and value and isinstance(value[0], str) and valid_wnid(value[0])):
            raise ValueError(f"{source}: class {index} is {_shown(_json_text(value))}, not [wnid, name]")
        label = value[1] if len(value) > 1 and isinstance(value[1], str) else None
        out.setdefault(value[0], label.replace("_", " ") if label else None)
    return list(out.items())


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value)
    except (RecursionError, ValueError):
        return "a value nested too deep to show"


def _csv(text: str, source: str) -> Classes:
    reader = csv.reader(text.splitlines())
    try:  # blank lines and comments (before the header too) are left out; each row with its line number
        rows = [(reader.line_num, row) for row in reader
                if row and "".join(row).strip() and not row[0].lstrip().startswith("#")]
    except csv.Error as exc:  # a field over csv's limit (128 KiB), a NUL byte...
        raise ValueError(f"{source} line {reader.line_num}: {exc} (accepted: {ACCEPTED})") from None
    header = [field.strip().lower() for field in rows[0][1]]
    wnid_at = next(header.index(name) for name in WNID_COLUMNS if name in header)
    name_at = next((header.index(name) for name in NAME_COLUMNS if name in header), None)
    out: dict[str, str | None] = {}
    for n, row in rows[1:]:
        wnid = row[wnid_at].strip() if wnid_at < len(row) else ""
        if not valid_wnid(wnid):
            raise ValueError(f"{source} line {n}: {_shown(','.join(row))} has no wnid in column "
                             f"{header[wnid_at]!r} (accepted: {ACCEPTED})")
        label = row[name_at].strip() if name_at is not None and name_at < len(row) else ""
        out.setdefault(wnid, label or None)
    return list(out.items())


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")
