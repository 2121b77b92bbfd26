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


def read_lines(path: str) -> Iterator[dict[str, Any]]:
    """Every well-formed line of a manifest, in order; a torn or foreign line is skipped."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                logger.warning("%s:%d: skipping a line that is not JSON (a torn write?)", path, number)
                continue
            if isinstance(record, dict) and "id" in record and "outcome" in record:
                yield record


def load_index(path: str, learned: set[tuple[str, str]] | None = None) -> dict[str, Entry]:
    """The last entry per image (``key(kind, id)``) of the manifest at ``path``.

    ``learned`` collects (url, sha256) of every placeholder learned during a crawl.
    """
    index: dict[str, Entry] = {}
    for record in read_lines(path):
        index[key(record.get("kind") or "image", str(record["id"]))] = Entry(
            outcome=str(record["outcome"]),
            path=record.get("path"),
            bytes=record.get("bytes"),
            sha256=record.get("sha256"),
            width=record.get("width"),
            height=record.get("height"),
            pixels=record.get("pixels"),
            group=record.get("group"),
            url=record.get("url"),
        )
        learned_here = record.get("outcome") == "placeholder" and LEARNED_MARK in str(record.get("detail") or "")
        if learned is not None and learned_here and record.get("sha256"):
            learned.add((str(record.get("url") or ""), str(record["sha256"])))
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
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run
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
