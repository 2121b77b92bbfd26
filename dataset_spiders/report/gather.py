"""The numbers of a dataset, read from disk: the manifest, ``dataset.json`` and ``classes.txt``.

The manifest is streamed twice and never held: the first pass keeps, per image, where its last
line starts (as ``ManifestIndex`` does); the second counts each image once, under that line.
Lines whose ``path`` lies outside the dataset are skipped, as ``verify`` skips them, so a
hostile line is never counted, opened or shown.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import math
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..dataset import manifest, provenance
from ..dataset.disk import DatasetDisk
from ..dataset.formats import is_image_name
from ..dataset.manifest import Record
from ..dataset.verify import refuse_special_files
from ..outcomes import KEPT_OUTCOMES, Outcome
from .classes import asked_classes

IN_DATASET = frozenset({Outcome.KEPT, Outcome.PRESENT})  # what the dataset holds, for the counts
NOT_A_REASON = frozenset({Outcome.SURPLUS})  # a surplus image came when its class was full: never why it is short
FAILED_SHOWN = 5  # images named per kind of failure (the manifest has them all)
MAX_HOSTS = 5000  # distinct hosts counted one by one; the rest are pooled (a URL list may name millions)
OTHER_HOSTS = "(other hosts)"
NO_HOST = "(no url)"
HOST = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#]*@)?(\[[^\]/?#]*\]|[^:/?#]*)")
UNLABELED = "(unlabeled)"
BYTE_EDGES = (0, 1 << 10, 2 << 10, 5 << 10, 10 << 10, 20 << 10, 50 << 10, 100 << 10, 200 << 10, 500 << 10,
              1 << 20, 2 << 20, 5 << 20, 10 << 20, 20 << 20, 50 << 20, 100 << 20)
PIXEL_EDGES = (0, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


class NotADataset(FileNotFoundError):
    """The folder holds no manifest: there is nothing to report on."""


@dataclass
class Histogram:
    """Counts of values in bins (``edges`` are the lower bounds), plus min, max and sum."""

    edges: tuple[int, ...]
    counts: list[int] = field(default_factory=list)
    low: int | None = None
    high: int | None = None
    total: int = 0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = self.counts or [0] * len(self.edges)

    def add(self, value: int) -> None:
        self.counts[max(0, bisect.bisect_right(self.edges, value) - 1)] += 1
        self.low = value if self.low is None else min(self.low, value)
        self.high = value if self.high is None else max(self.high, value)
        self.total += value
        self.n += 1

    def as_dict(self) -> dict[str, Any]:
        mean = round(self.total / self.n) if self.n else None
        return {"edges": list(self.edges), "counts": self.counts, "min": self.low, "max": self.high, "mean": mean}


@dataclass
class Tally:
    """What happened to the images of one class, label or host."""

    tried: int = 0
    kept: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    label: str | None = None  # a class's words (imagenet), when the manifest or classes.txt gives them

    def add(self, outcome: str) -> None:
        self.tried += 1
        if outcome in IN_DATASET:
            self.kept += 1
        elif outcome not in KEPT_OUTCOMES:  # `described` (no_images) is no failure
            self.failures[outcome] += 1


@dataclass
class Sample:
    """A kept image chosen for the contact sheet: its manifest path, as checked, and its size."""

    id: str
    path: str
    bytes: int | None


@dataclass
class Failed:
    """A failed image named on the page: its id and the URL it was fetched from."""

    id: str
    url: str | None


@dataclass
class Gathered:
    """Everything the report shows, counted in one streaming pass (plus the sample to draw)."""

    root: str
    runs: list[dict[str, Any]]
    by: str  # "class" (imagenet: the manifest's group) or "label" (isic)
    target: dict[str, Any] | None
    folders: list[str] = field(default_factory=list)  # the folders the runs named, as verify takes them
    outside: list[str] = field(default_factory=list)  # recorded folders outside the dataset, not named: not looked at
    outcomes: Counter[str] = field(default_factory=Counter)
    masks: Counter[str] = field(default_factory=Counter)
    groups: dict[str, Tally] = field(default_factory=dict)
    hosts: dict[str, Tally] = field(default_factory=dict)
    sizes: Histogram = field(default_factory=lambda: Histogram(BYTE_EDGES))
    widths: Histogram = field(default_factory=lambda: Histogram(PIXEL_EDGES))
    heights: Histogram = field(default_factory=lambda: Histogram(PIXEL_EDGES))
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    failed: dict[str, list[Failed]] = field(default_factory=dict)  # the first FAILED_SHOWN of each kind
    skipped: int = 0  # lines naming a path outside the dataset: never counted, never opened

    @property
    def group_target(self) -> int | None:
        """Images each class should hold (imagenet's ``per_class``), or None (isic: one total)."""
        target = self.target or {}
        return target.get("images") if target.get("per") == "class" and type(target.get("images")) is int else None

    def short_reasons(self, name: str, top: int = 3) -> list[tuple[str, int]]:
        """The most common failures of a class that ended under its target ([] when it did not)."""
        tally, target = self.groups[name], self.group_target
        if target is None or tally.kept >= target:
            return []
        return [(o, n) for o, n in tally.failures.most_common() if o not in NOT_A_REASON][:top]


def last_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return runs[-1] if runs else {}


def run_seconds(run: dict[str, Any]) -> float | None:
    """How long a run took: its ``seconds`` (recorded at its end since they were), else from its
    ``started`` and ``ended`` (to the second); None for a run with no end (killed, or running)."""
    seconds = run.get("seconds")
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds) and seconds >= 0:
        return float(seconds)
    try:
        started, ended = (datetime.strptime(str(run[key]), "%Y-%m-%dT%H:%M:%S%z") for key in ("started", "ended"))
    except (KeyError, ValueError):
        return None
    took = (ended - started).total_seconds()
    return took if took >= 0 else None


def run_downloaded(run: dict[str, Any]) -> int | None:
    """The images a run downloaded and kept (its ``outcomes``' ``kept``), or None if not recorded."""
    outcomes = run.get("outcomes")
    if not isinstance(outcomes, dict):
        return None
    kept = outcomes.get(Outcome.KEPT, 0)
    return kept if type(kept) is int and kept >= 0 else None


def gather(root: str, per_group: int = 12, max_total: int = 600, named: list[str] | tuple[str, ...] = ()) -> Gathered:
    """Count the dataset at ``root``; choose up to ``per_group`` kept images per class or label
    (``max_total`` in all) for the contact sheet. Only ``root`` and the folders outside it that
    the caller ``named`` are looked at (``provenance.resolve``). Raises NotADataset without a
    manifest."""
    refuse_special_files(root, named)
    runs, resolved = provenance.read_resolved(root, named)
    folders = resolved.usable
    disk = DatasetDisk(root, folders)
    if not os.path.isfile(disk.manifest_path):
        raise NotADataset(f"no {manifest.MANIFEST_NAME} in {root}")
    run = last_run(runs)
    target = run.get("target") if isinstance(run.get("target"), dict) else None
    last: dict[str, int] = {}
    classes: dict[str, None] = {}
    labels: dict[str, None] = {}
    skipped = [0]
    for offset, record in _lines(disk, skipped):
        last[str(record.key)] = offset
        if record.kind == "image" and record.outcome != Outcome.SET_ASIDE:  # every name an image had: to share out
            classes[record.group or UNLABELED] = None
            labels[record.label or UNLABELED] = None
    grouped = any(name != UNLABELED for name in classes)
    by = "class" if run.get("spider") == "imagenet" or (not run and grouped) else "label"
    got = Gathered(disk.root, runs, by, target, folders, resolved.skipped, skipped=skipped[0])
    if by == "class":
        for wnid, label in asked_classes(run):
            got.groups[wnid] = Tally(label=label or None)
    groups = len({*got.groups, *(classes if by == "class" else labels)})
    each = min(per_group, max(1, max_total // groups)) if groups and max_total > 0 else 0
    with _quiet(manifest.logger):  # the first pass already warned about each malformed line
        for offset, record in manifest.read(disk.manifest_path):  # a skipped line is no image's last
            if last.get(str(record.key)) == offset:
                _count(got, record, each, max_total)
    if by == "label":
        got.groups = dict(sorted(got.groups.items()))
    return got


def _lines(disk: DatasetDisk, skipped: list[int] | None = None) -> Iterator[tuple[int, Record]]:
    """The manifest's well-formed lines whose path (if any) is an image name inside the dataset;
    the others are counted in ``skipped[0]``."""
    for offset, record in manifest.read(disk.manifest_path):
        if record.path is not None and (disk.absolute(record.path) is None or not is_image_name(record.path)):
            if skipped is not None:
                skipped[0] += 1
            continue
        yield offset, record


def _group_of(record: Record, by: str) -> str:
    if by == "class":
        return record.group or UNLABELED
    return record.label or UNLABELED


def _count(got: Gathered, record: Record, each: int, max_total: int) -> None:
    """Count one image under its last line; keep it as a sample while its class has room. An
    image set aside by ``reselect`` belongs to the folder's earlier selection: not counted."""
    if record.outcome == Outcome.SET_ASIDE:
        return
    if record.kind != "image":
        got.masks[record.outcome] += 1
        return
    got.outcomes[record.outcome] += 1
    if record.outcome not in IN_DATASET and record.outcome not in KEPT_OUTCOMES | NOT_A_REASON:
        named = got.failed.setdefault(record.outcome, [])
        if len(named) < FAILED_SHOWN:
            named.append(Failed(record.id, record.url))
    name = _group_of(record, got.by)
    tally = got.groups.setdefault(name, Tally())
    tally.add(record.outcome)
    if got.by == "class" and tally.label is None and record.label:
        tally.label = record.label
    host = _host(record.url)
    if host not in got.hosts and len(got.hosts) >= MAX_HOSTS:
        host = OTHER_HOSTS
    got.hosts.setdefault(host, Tally()).add(record.outcome)
    if record.outcome not in IN_DATASET:
        return
    if record.bytes is not None:
        got.sizes.add(record.bytes)
    if record.width is not None and record.height is not None:
        got.widths.add(record.width)
        got.heights.add(record.height)
    chosen = got.samples.get(name)
    if chosen is None and record.path and each and len(got.samples) < max_total:
        chosen = got.samples[name] = []
    if chosen is not None and record.path and len(chosen) < each:
        chosen.append(Sample(record.id, record.path, record.bytes))


def _host(url: str | None) -> str:
    """The host a URL names, lower-cased, as ``urlsplit(url).hostname`` gives it (several times faster)."""
    found = HOST.match(url or "")
    return found.group(1).strip("[]").lower() or NO_HOST if found else NO_HOST


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """Silence ``logger`` in this thread for a while (a second pass over lines already warned
    about); other threads, a crawl's, still log."""
    me = threading.get_ident()

    def others(record: logging.LogRecord) -> bool:
        return record.thread != me

    logger.addFilter(others)
    try:
        yield
    finally:
        logger.removeFilter(others)
