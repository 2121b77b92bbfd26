"""Re-check a dataset on disk against its manifest: what ``scrapy verify`` does.

Every image the manifest says is in the dataset must be there, with the recorded size and
sha256, decode in full, and not be a known placeholder; every class folder must hold what the
manifest says it kept. With ``fix``, bad files are moved aside to ``{root}/.quarantine`` and a
manifest line marks them for the next crawl, which fills the gaps.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import manifest
from .dataset import ALL_EXTENSIONS, QUARANTINE_DIR, Dataset
from .manifest import Entry
from .outcomes import DAMAGED, KEPT_OUTCOMES, MISSING, PLACEHOLDER, ImageRejected
from .pipelines.validate import Limits, inspect_image

QUARANTINE = QUARANTINE_DIR


@dataclass
class Problem:
    key: str
    path: str
    what: str  # missing, changed, undecodable, placeholder, unlisted
    detail: str


@dataclass
class Report:
    checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    per_group: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.problems


def _digests(path: str) -> tuple[int, str, str, str]:
    sha256, sha1, md5 = hashlib.sha256(), hashlib.sha1(), hashlib.md5()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            size += len(chunk)
            for h in (sha256, sha1, md5):
                h.update(chunk)
    return size, sha256.hexdigest(), sha1.hexdigest(), md5.hexdigest()


def check_entry(dataset: Dataset, key: str, entry: Entry, placeholders: set[str]) -> Problem | None:
    """The problem with one kept image, or None. Blocking (reads and decodes the file)."""
    path = dataset.absolute(entry.path or "")
    if not os.path.isfile(path):
        return Problem(key, path, "missing", "the file is not there")
    try:
        size, sha256, sha1, md5 = _digests(path)
    except OSError as exc:
        return Problem(key, path, "unreadable", exc.strerror or str(exc))
    if entry.sha256 and (sha256 != entry.sha256 or size != entry.bytes):
        said = f"the manifest says {entry.bytes} bytes, sha256 {entry.sha256[:12]}…"
        return Problem(key, path, "changed", f"{size} bytes, sha256 {sha256[:12]}…; {said}")
    if {f"sha256:{sha256}", f"sha1:{sha1}", f"md5:{md5}", f"size:{size}"} & placeholders:
        return Problem(key, path, "placeholder", "the bytes are a known placeholder image")
    try:
        inspect_image(path, Limits(max_pixels=2**40))
    except ImageRejected as exc:
        return Problem(key, path, "undecodable", f"{exc.outcome}: {exc.detail}")
    return None


def verify(root: str, placeholders: list[str], workers: int = 4) -> Report:
    dataset = Dataset(root)
    if not os.path.isfile(dataset.manifest_path):
        raise FileNotFoundError(f"no {manifest.MANIFEST_NAME} in {root}")
    dataset.load()
    signatures = {p.lower() for p in placeholders}
    kept = {k: e for k, e in dataset.index.items() if e.outcome in KEPT_OUTCOMES and e.path}
    report = Report(checked=len(kept))
    items = list(kept.items())
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(items), 1000):  # in batches: a million entries are not all queued at once
            batch = items[start : start + 1000]
            for problem in pool.map(lambda item: check_entry(dataset, *item, signatures), batch):
                if problem:
                    report.problems.append(problem)
    # Class folders hold exactly what the manifest kept there (ImageNet: one folder per class).
    expected: defaultdict[str, set[str]] = defaultdict(set)
    for entry in kept.values():
        path = dataset.absolute(entry.path or "")
        expected[os.path.dirname(path)].add(path)
    for folder, paths in expected.items():
        report.per_group[os.path.relpath(folder, dataset.root)] = len(paths)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            path = os.path.join(folder, name)
            if path not in paths and name.rsplit(".", 1)[-1].lower() in ALL_EXTENSIONS:
                report.problems.append(Problem(name, path, "unlisted", "an image the manifest does not list"))
    return report


def fix(root: str, report: Report) -> int:
    """Move bad files to ``.quarantine`` and mark them for the next crawl; returns how many."""
    dataset = Dataset(root)
    for problem in report.problems:
        if os.path.exists(problem.path):
            aside = os.path.join(dataset.root, QUARANTINE, os.path.relpath(problem.path, dataset.root))
            os.makedirs(os.path.dirname(aside), exist_ok=True)
            shutil.move(problem.path, aside)
        if problem.what == "unlisted":
            continue
        kind, _, image_id = problem.key.rpartition(":") if ":" in problem.key else ("image", "", problem.key)
        outcome = {"missing": MISSING, "placeholder": PLACEHOLDER}.get(problem.what, DAMAGED)
        dataset.writer.write(
            {"id": image_id, "kind": kind, "outcome": outcome, "detail": f"verify: {problem.what}: {problem.detail}"}
        )
    dataset.writer.close()
    return len(report.problems)
