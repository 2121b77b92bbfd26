"""``manifest.jsonl``: one line per image tried, append-only; the last line for an image wins.

The manifest is how a re-run knows what is already done, and how a user learns what failed
and why. Every line is a ``Record``, written by ``ManifestWriter`` and read by ``read`` (the one
codec); ``Key`` names an image across kinds. A crash can tear the last line: reading skips any
line that is not a well-formed record, with a warning, and never acts on it.

Opening a large manifest keeps, per image, only where its last line starts in the file: the
line itself is read again when it is needed (``ManifestIndex.get``).
"""

from __future__ import annotations

import builtins
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from typing import IO, NamedTuple

import orjson

from ..outcomes import KEPT_OUTCOMES, Outcome, is_outcome
from .files import open_regular

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
MAX_LINE = 1 << 20  # bytes; a longer line is no line of ours
LEGACY_LEARNED_MARK = "photo URLs of"  # how lines before `learned` existed said it, in `detail`


class Key(NamedTuple):
    """An image of the dataset: its kind (``image``, ``mask``) and id. ``str()`` is the index key."""

    kind: str
    id: str

    def __str__(self) -> str:
        plain = self.kind == "image" and ":" not in self.id  # an image id with a colon says its kind
        return self.id if plain else f"{self.kind}:{self.id}"

    @classmethod
    def parse(cls, text: str) -> Key:
        kind, sep, image_id = text.partition(":")
        return cls(kind, image_id) if sep else cls("image", text)


@dataclass(slots=True)
class Record:
    """One manifest line: what happened to one image, and where it is if it is in the dataset."""

    id: str
    outcome: str  # an Outcome, or http_NNN
    kind: str = "image"
    group: str | None = None  # the class an exact count is kept for
    label: str | None = None
    url: str | None = None
    final_url: str | None = None  # after redirects
    detail: str | None = None  # the reason, in words, for people
    path: str | None = None  # relative to the dataset root
    bytes: int | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    pixels: str | None = None  # digest of the decoded pixels (duplicates that differ in bytes)
    learned: bool = False  # a placeholder learned in a crawl: the same bytes for many URLs of a site
    time: float | None = None
    phash: str | None = None  # perceptual hash (NEAR_DUPLICATES: near-copies of kept images)
    position: int | None = None  # isic: the record's place in the archive's listing (metadata.csv's row order)
    origin: str | None = None  # where the bytes came from when not a URL alone: "ARCHIVE_URL!MEMBER" (v2 masks)
    variant: str | None = None  # isic: "full" or "thumbnail_256", the file of the record that was fetched
    split: str | None = None  # isic with splits: the image's split (its group's; see sources/splits.py)

    @property
    def key(self) -> Key:
        return Key(self.kind, self.id)

    @property
    def kept(self) -> bool:
        return self.outcome in KEPT_OUTCOMES

    def encode(self) -> builtins.bytes:  # (in this class, ``bytes`` is the field)
        line = asdict(self)
        line["time"] = self.time or round(time.time(), 3)
        # the standard library's spacing (`"id": "…"`), as lines always were: people grep them
        return json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n"


_TEXT = tuple(f.name for f in fields(Record) if f.type == "str | None")
_COUNTS = ("bytes", "width", "height")


def _count(value: object) -> int | None:
    return value if type(value) is int and value >= 0 else None


def decode(raw: bytes) -> Record | str:
    """The record on one line, or why it is not one (a hand edit, another tool, junk, a torn write)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "not JSON (a torn write?)"
    if not isinstance(obj, dict):
        return "not a JSON object"
    for name in ("id", "outcome"):
        if not isinstance(obj.get(name), str) or not obj[name] or "\x00" in obj[name]:
            return f"no text {name!r}"
    if obj.get("kind") not in (None, "image", "mask"):
        return "not a kind of ours"
    if not is_outcome(obj["outcome"]) or len(obj["id"]) > 255:
        return "not an outcome of ours, or an id too long"
    for name in _TEXT:
        value = obj.get(name)
        if value is not None and (not isinstance(value, str) or "\x00" in value):
            return f"{name!r} is not text"
    for name in _COUNTS:
        value = obj.get(name)
        if value is not None and (type(value) is not int or value < 0):
            return f"{name!r} is not a whole number"
    kind = obj.get("kind") or "image"
    learned = obj.get("learned") is True or (
        obj["outcome"] == Outcome.PLACEHOLDER and LEGACY_LEARNED_MARK in (obj.get("detail") or "")
    )
    return Record(
        id=obj["id"], outcome=obj["outcome"], kind=kind, group=obj.get("group"), label=obj.get("label"),
        url=obj.get("url"), final_url=obj.get("final_url"), detail=obj.get("detail"), path=obj.get("path"),
        bytes=obj.get("bytes"), sha256=obj.get("sha256"), width=obj.get("width"), height=obj.get("height"),
        pixels=obj.get("pixels"), learned=learned, time=obj.get("time") if type(obj.get("time")) is float else None,
        phash=obj.get("phash"), position=_count(obj.get("position")), origin=obj.get("origin"),
        variant=obj.get("variant"), split=obj.get("split"),
    )


def read(path: str, start: int = 0) -> Iterator[tuple[int, Record]]:
    """Every well-formed record of a manifest (from the line at ``start``) with the offset of its
    line, in order. A torn, foreign or malformed line is skipped with a warning (the first few
    named, then a count)."""
    if not os.path.exists(path):
        return
    skipped = 0
    with open_regular(path) as f:
        f.seek(start)
        offset, number = start, 0
        while raw := f.readline(MAX_LINE):
            start, number = offset, number + 1
            offset += len(raw)
            if not raw.endswith(b"\n") and len(raw) >= MAX_LINE:
                while (rest := f.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                    offset += len(rest)  # skip the rest of an overlong line
                offset += len(rest)
                result: Record | str = f"over {MAX_LINE} bytes"
            elif not raw.strip():
                continue
            else:
                result = decode(raw)
            if isinstance(result, Record):
                yield start, result
                continue
            skipped += 1
            if skipped <= 5:
                logger.warning("%s:%d: skipping a line: %s", path, number, result)
    if skipped > 5:
        logger.warning("%s: skipped %d malformed line(s) in all", path, skipped)


class ManifestIndex:
    """The last record of each image, by ``str(Key)``: kept as the offset of its line, read back
    on demand (a million images cost a few tens of MB, not a GB)."""

    def __init__(self, path: str):
        self.path = path
        self.offsets: dict[str, int] = {}
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()  # a seek and a read are one step, whichever thread asks

    def __len__(self) -> int:
        return len(self.offsets)

    def __contains__(self, key: object) -> bool:
        return str(key) in self.offsets

    def add(self, offset: int, record: Record) -> None:
        self.offsets[str(record.key)] = offset

    def drop(self, key: Key | str) -> None:
        self.offsets.pop(str(key), None)

    def get(self, key: Key | str) -> Record | None:
        offset = self.offsets.get(str(key))
        if offset is None:
            return None
        with self._lock:
            if self._file is None:
                self._file = open_regular(self.path, follow=False)  # kept open for lookups
            self._file.seek(offset)
            raw = self._file.readline(MAX_LINE)
        result = decode(raw)
        return result if isinstance(result, Record) else None

    def records(self) -> Iterator[Record]:
        """Every image's last record, in the order the images first appeared."""
        for key in list(self.offsets):
            record = self.get(key)
            if record is not None:
                yield record

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()


class ManifestWriter:
    """Appends records. Lines are buffered and written by ``flush``; ``sync`` also makes them
    durable (the caller decides when: see ``core.durability``). Never through a symlink.

    The file is opened at the first line, so a run that stops before trying any image leaves
    no manifest behind."""

    def __init__(self, path: str, shared: bool = False):
        self.path = path
        self.shared = shared  # other processes append too (workers): each write under an flock
        self._file: IO[bytes] | None = None
        self._pending: list[bytes] = []
        self._lock = threading.Lock()  # the reactor queues lines; the commit thread flushes them
        # workers: lines wait while this is False (the lease not known to hold: after a freeze,
        # the worker may have been fenced off and its candidates kept by others)
        self.may_write: Callable[[], bool] | None = None
        self.fenced = False  # a worker fenced off writes nothing more

    def open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        mode = os.O_RDWR if self.shared else os.O_WRONLY  # shared: reads its last byte, under the lock
        self._file = open_regular(self.path, mode | os.O_CREAT | os.O_APPEND, "ab", follow=False)  # for the whole run
        if not self.shared and self._file.tell() > 0 and not _ends_with_newline(self.path):
            self._file.write(b"\n")  # a torn last line from a crash stays on its own line

    def write(self, record: Record) -> None:
        """Queue a line (it reaches the file at the next ``flush``)."""
        line = record.encode()
        with self._lock:
            self._pending.append(line)

    def fence(self) -> None:
        """Write nothing more: the lines queued and to come are dropped (a fenced-off worker's)."""
        with self._lock:
            self.fenced, self._pending = True, []

    def flush(self, force: bool = False) -> None:
        with self._lock:
            if not self._pending or self.fenced:
                self._pending = [] if self.fenced else self._pending
                return
            if not force and self.may_write is not None and not self.may_write():
                return  # they wait for the lease to be renewed (or are dropped if fenced)
            if self._file is None:
                self.open()
            assert self._file is not None
            lines, self._pending = self._pending, []
            if not self.shared:
                self._file.write(b"".join(lines))
                self._file.flush()
                return
            fd = self._file.fileno()
            fcntl.flock(fd, fcntl.LOCK_EX)  # whole lines, never interleaved with another worker's
            try:
                size = os.fstat(fd).st_size
                head = b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""
                data = head + b"".join(lines)
                while data:
                    data = data[os.write(fd, data):]
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def sync(self) -> None:
        """Flush, then make the lines durable (fdatasync)."""
        self.flush()
        if self._file is not None:
            os.fdatasync(self._file.fileno())

    def close(self) -> None:
        try:
            self.flush(force=True)
        finally:
            file, self._file = self._file, None
            if file is not None:
                file.close()


def _ends_with_newline(path: str) -> bool:
    with open_regular(path, follow=False) as f:
        f.seek(-1, os.SEEK_END)
        last: bytes = f.read(1)
        return last == b"\n"

