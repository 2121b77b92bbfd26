"""``manifest.jsonl``: one line per image tried, append-only; the last line for an id wins.

The manifest is how a re-run knows what is already done, and how a user learns what failed
and why. A crash can tear the last line; reading skips a line that does not parse.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
LEARNED_MARK = "photo URLs of"  # in the detail of every placeholder learned during a crawl
FIELDS = (
    "id", "kind", "group", "label", "url", "final_url", "outcome", "detail",
    "path", "bytes", "sha256", "width", "height", "pixels",
)


@dataclass(frozen=True, slots=True)
class Entry:
    """What a re-run needs to know of an image's last recorded outcome."""

    outcome: str
    path: str | None  # relative to the dataset root
    bytes: int | None
    sha256: str | None
    width: int | None
    height: int | None
    pixels: str | None = None  # digest of the decoded pixels (when duplicates are refused)
    group: str | None = None
    url: str | None = None


def key(kind: str, image_id: str) -> str:
    return image_id if kind == "image" else f"{kind}:{image_id}"


MAX_LINE = 1 << 20  # bytes; a longer line is no line of ours
_TEXT_FIELDS = ("id", "kind", "group", "label", "url", "final_url", "outcome", "detail", "path", "sha256", "pixels")
_INT_FIELDS = ("bytes", "width", "height")


def problem_with(record: Any) -> str | None:
    """Why a parsed line cannot be one of ours (a hand edit, another tool, junk), or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    for name in ("id", "outcome"):
        if not isinstance(record.get(name), str) or not record[name]:
            return f"no text {name!r}"
    for name in _TEXT_FIELDS:
        value = record.get(name)
        if value is not None and (not isinstance(value, str) or "\x00" in value):
            return f"{name!r} is not text"
    for name in _INT_FIELDS:
        value = record.get(name)
        if value is not None and (type(value) is not int or value < 0):
            return f"{name!r} is not a whole number"
    if len(record["id"]) > 255 or (record.get("path") and len(record["path"]) > 4096):
        return "an id or path too long to be ours"
    return None


def read_lines(path: str) -> Iterator[dict[str, Any]]:
    """Every well-formed line of a manifest, in order. A torn, foreign or malformed line is
    skipped with a warning (the first few are named, then a count): never acted on."""
    if not os.path.exists(path):
        return
    skipped = 0
    with open(path, "rb") as f:
        number = 0
        while raw := f.readline(MAX_LINE):
            number += 1
            why = None
            if not raw.endswith(b"\n") and len(raw) >= MAX_LINE:
                while (rest := f.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of an overlong line
                why = f"over {MAX_LINE} bytes"
            elif not raw.strip():
                continue
            else:
                try:
                    record = json.loads(raw.decode("utf-8", errors="replace"))
                except (ValueError, RecursionError):
                    why = "not JSON (a torn write?)"
                else:
                    why = problem_with(record)
            if why is None:
                yield record
                continue
            skipped += 1
            if skipped <= 5:
                logger.warning("%s:%d: skipping a line: %s", path, number, why)
    if skipped > 5:
        logger.warning("%s: skipped %d malformed line(s) in all", path, skipped)


def load_index(path: str, learned: set[tuple[str, str]] | None = None) -> dict[str, Entry]:
    """The last entry per image (``key(kind, id)``) of the manifest at ``path``.

    ``learned`` collects (url, sha256) of every placeholder learned during a crawl.
    """
    index: dict[str, Entry] = {}
    for record in read_lines(path):
        index[key(record.get("kind") or "image", record["id"])] = Entry(
            outcome=record["outcome"],
            path=record.get("path"),
            bytes=record.get("bytes"),
            sha256=record.get("sha256"),
            width=record.get("width"),
            height=record.get("height"),
            pixels=record.get("pixels"),
            group=record.get("group"),
            url=record.get("url"),
        )
        learned_here = record["outcome"] == "placeholder" and LEARNED_MARK in (record.get("detail") or "")
        if learned is not None and learned_here and record.get("sha256"):
            learned.add((record.get("url") or "", record["sha256"]))
    return index


class ManifestWriter:
    """Appends one JSON line per outcome and flushes it, so a crash loses at most one line.

    The file is opened at the first line, so a run that stops before trying any image leaves
    no manifest behind (and an unwritable folder is reported by the spider, not here).
    """

    def __init__(self, path: str):
        self.path = path
        self._file: IO[str] | None = None

    def open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)  # never via a link
        self._file = open(fd, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run
        if self._file.tell() > 0 and not _ends_with_newline(self.path):
            self._file.write("\n")  # a torn last line from a crash stays on its own line

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self.open()
        assert self._file is not None
        line = {name: record.get(name) for name in FIELDS}
        line["time"] = round(time.time(), 3)
        self._file.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
