"""Re-check a dataset on disk against its manifest: what ``scrapy verify`` does.

Every image the manifest says is in the dataset must be there, with the recorded size and
sha256, decode in full, and not be a known placeholder. Every file anywhere in the image
folders (every class and label folder) must be one the manifest keeps: anything else, a
``*.part``, a symlink, a foreign file, is reported; an ImageNet class over the target recorded
in ``dataset.json`` is too. With ``fix``, bad files are moved aside to ``{root}/.quarantine``
and a manifest line marks them for the next crawl, which fills the gaps.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..outcomes import ImageRejected, Outcome
from . import manifest, provenance
from .disk import DatasetDisk, regular_size
from .files import open_regular
from .formats import ALL_EXTENSIONS, is_image_name
from .isic_files import has_loader_files, write_loader_files
from .loaders import CLASSES_GIVEN_NAME, CLASSES_NAME, METADATA_NAME, class_folders, classes_txt, read_classes_txt
from .lock import is_locked
from .manifest import ManifestWriter, Record
from .validation import Limits, inspect_image

# what the spiders themselves write at an image folder's top (ImageNet's class index, ISIC's
# metadata for Hugging Face's imagefolder)
OUR_FILES = frozenset({CLASSES_NAME, CLASSES_GIVEN_NAME, METADATA_NAME})


@dataclass
class Problem:
    key: str  # the manifest key, or "" for a file the manifest does not keep
    path: str
    what: str  # missing, changed, undecodable, placeholder, unlisted, stray, symlink, over_target
    detail: str


@dataclass
class Report:
    checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # valid images a running crawl has not recorded yet
    skipped: list[str] = field(default_factory=list)  # folders outside the dataset, not named: not looked at
    not_read: int = 0  # kept images whose path leads out of the dataset through a link: not read
    per_group: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.problems


def journals(disk: DatasetDisk) -> list[str]:
    """The commit journal of a single run, and those of workers (``.staging/w-*``), never through a link."""
    found = [disk.journal_path]
    with contextlib.suppress(OSError):
        for entry in os.scandir(disk.staging_dir):
            if entry.name.startswith("w-") and entry.is_dir(follow_symlinks=False):
                path = os.path.join(entry.path, os.path.basename(disk.journal_path))
                if os.path.isfile(path) and not os.path.islink(path):
                    found.append(path)
    return found


def _digests(path: str) -> tuple[int, str, str, str]:
    sha256, sha1, md5 = hashlib.sha256(), hashlib.sha1(), hashlib.md5()
    size = 0
    with open_regular(path, follow=False) as f:
        while chunk := f.read(1 << 20):
            size += len(chunk)
            for h in (sha256, sha1, md5):
                h.update(chunk)
    return size, sha256.hexdigest(), sha1.hexdigest(), md5.hexdigest()


def check_entry(disk: DatasetDisk, key: str, entry: Record, placeholders: set[str]) -> Problem | None:
    """The problem with one kept image, or None. Blocking (reads and decodes the file)."""
    path = disk.absolute(entry.path or "") or ""
    if entry.outcome == Outcome.COMMITTING and not os.path.lexists(path):
        return None  # a crash came before the rename: nothing was kept, the next crawl fetches it
    if regular_size(path) is None:
        what = "symlink" if os.path.islink(path) else "missing"
        return Problem(key, path, what, "a symlink, not a file" if what == "symlink" else "the file is not there")
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


@dataclass
class Dataset:
    """A dataset folder as a command opens it: its disk (the folders it may use), the images its
    manifest keeps (by key; those a run was committing when it stopped too, from its journal),
    its image folders, its runs (folders resolved) and the folders it will not look at."""

    disk: DatasetDisk
    kept: dict[str, Record]
    image_folders: list[str]
    runs: list[dict[str, Any]]
    skipped: list[str]


def refuse_special_files(root: str, named: list[str] | tuple[str, ...] = ()) -> None:
    """FolderError where a file of the dataset is a FIFO, a socket, a device or a folder (reading
    it would wait for good), in ``root`` and in the folders a command may use."""
    DatasetDisk(root).refuse_special_files()  # before dataset.json is read
    _, folders = provenance.read_resolved(root, named)
    DatasetDisk(root, folders.usable).refuse_special_files()


def open_dataset(root: str, named: list[str] | tuple[str, ...] = ()) -> Dataset:
    """The dataset at ``root``; ``named``: folders outside it that the caller's own command line
    names (only those are ever looked at outside ``root``; see ``provenance.resolve``). Raises
    FolderError where a file of the dataset is not a regular file."""
    refuse_special_files(root, named)
    runs, folders = provenance.read_resolved(root, named)
    disk = DatasetDisk(root, folders.usable)
    if not os.path.isfile(disk.manifest_path):
        raise FileNotFoundError(f"no {manifest.MANIFEST_NAME} in {root}")
    image_folders = list(folders.images)
    last: dict[str, Record] = {}
    for _, record in manifest.read(disk.manifest_path):
        if record.path is None or (disk.absolute(record.path) is not None and is_image_name(record.path)):
            last[str(record.key)] = record
    kept = {k: r for k, r in last.items() if r.path and r.kept}
    for journal in journals(disk):
        for _, record in manifest.read(journal):  # being renamed into place when a run stopped
            key = str(record.key)
            if record.path and disk.absolute(record.path) and is_image_name(record.path) and key not in kept:
                kept[key] = record
    if not runs:  # a dataset from before dataset.json: the top folders of its kept images
        for record in kept.values():
            rel = os.path.relpath(disk.absolute(record.path or "") or disk.root, disk.root)
            if os.sep in rel:
                image_folders.append(os.path.join(disk.root, rel.split(os.sep, 1)[0]))
    return Dataset(disk, kept, list(dict.fromkeys(image_folders)), runs, folders.skipped)


def verify(root: str, placeholders: list[str], workers: int = 4, named: list[str] | tuple[str, ...] = (),
           locked_by_us: bool = False) -> Report:
    """Check the dataset at ``root`` (``named``: folders outside it the caller named;
    ``locked_by_us``: the caller holds the dataset's lock, so no crawl can be running)."""
    dataset = open_dataset(root, named)
    disk, kept, image_folders, runs = dataset.disk, dataset.kept, dataset.image_folders, dataset.runs
    report = Report(skipped=dataset.skipped)
    owned_folders: dict[str, bool] = {}  # one real-path check per folder, not per image
    owned = {}
    for key, entry in kept.items():
        folder = os.path.dirname(disk.absolute(entry.path or "") or "")
        if folder not in owned_folders:
            owned_folders[folder] = disk.owns(os.path.join(folder, "x"))
        if owned_folders[folder]:
            owned[key] = entry
    report.not_read = len(kept) - len(owned)  # through a folder that leads out of the dataset: never read
    kept = owned
    signatures = {p.lower() for p in placeholders}
    report.checked = len(kept)
    items = list(kept.items())
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(items), 1000):  # in batches: a million entries are not all queued at once
            batch = items[start : start + 1000]
            for problem in pool.map(lambda item: check_entry(disk, item[0], item[1], signatures), batch):
                if problem:
                    report.problems.append(problem)
    by_folder: defaultdict[str, list[str]] = defaultdict(list)  # folder -> kept keys, in manifest order
    paths = {}
    for key, entry in kept.items():
        path = disk.absolute(entry.path or "") or ""
        paths[path] = key
        by_folder[os.path.dirname(path)].append(key)
    for folder, keys in by_folder.items():
        report.per_group[os.path.relpath(folder, disk.root)] = len(keys)
    crawling = not locked_by_us and is_locked(disk.root)
    ours = {os.path.join(disk.root, name) for name in (".lock", "dataset.json", "metadata.csv", "attribution.txt",
                                                       "licenses", "report.html", ".cache", manifest.MANIFEST_NAME)}
    not_images = ours | {disk.staging_dir, disk.quarantine_dir} | set(disk.folders[1:]) - set(image_folders)
    for top in image_folders:
        _walk(top, paths, crawling, report, not_images)
        target = provenance.imagenet_target(runs, top)
        if target is None:
            continue
        for folder, keys in by_folder.items():
            if os.path.dirname(folder) == top and len(keys) > target:
                for key in keys[target:]:
                    report.problems.append(Problem(key, disk.absolute(kept[key].path or "") or "", "over_target",
                                                   f"the class holds {len(keys)} images, over per_class={target}"))
    return report


def _walk(top: str, kept_paths: dict[str, str], crawling: bool, report: Report, not_images: set[str]) -> None:
    """Report every file under ``top`` that the manifest does not keep (``not_images``: the
    dataset's own files and folders, when an image folder holds them, e.g. ``images_dir=out_dir``)."""
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in not_images]
        for name in [*dirs, *files]:
            path = os.path.join(folder, name)
            if path in kept_paths or path in not_images:
                continue
            if os.path.islink(path):
                report.problems.append(Problem("", path, "symlink", "a symlink in the image tree (never followed)"))
            elif name in dirs or (folder == top and name in OUR_FILES) or (
                os.path.dirname(folder) == top and name == METADATA_NAME  # a split folder's (isic by_split)
            ):
                continue
            elif name.rsplit(".", 1)[-1].lower() not in ALL_EXTENSIONS:
                why = "not an image of the dataset (a temporary or foreign file)"
                report.problems.append(Problem("", path, "stray", why))
            elif crawling and _decodes(path):
                report.pending.append(path)  # a running crawl renamed it and has yet to write its line
            else:
                report.problems.append(Problem("", path, "unlisted", "an image the manifest does not list"))


def _decodes(path: str) -> bool:
    try:
        inspect_image(path, Limits(max_pixels=2**40))
    except (ImageRejected, OSError):
        return False
    return True


def fix(root: str, report: Report, named: list[str] | tuple[str, ...] = ()) -> int:
    """Move bad files to ``.quarantine`` and mark them for the next crawl; returns how many were
    dealt with (a file that could not be moved aside is not counted). The caller holds the
    dataset's lock. What the loaders read (``metadata.jsonl``, ``classes.txt``) is written again
    to match the files left."""
    dataset = open_dataset(root, named)
    disk = dataset.disk
    writer = ManifestWriter(disk.manifest_path)
    marks = {"missing": Outcome.MISSING, "placeholder": Outcome.PLACEHOLDER, "over_target": Outcome.SURPLUS}
    done = 0
    for problem in report.problems:
        if os.path.lexists(problem.path) and disk.quarantine(problem.path) is None:
            continue  # refused (the log says why): nothing moved, nothing marked
        done += 1
        if not problem.key:
            continue
        key = manifest.Key.parse(problem.key)
        outcome = marks.get(problem.what, Outcome.DAMAGED)
        writer.write(Record(key.id, outcome, key.kind, detail=f"verify: {problem.what}: {problem.detail}"))
    writer.close()
    refresh_loader_files(disk, dataset.runs)
    return done


def refresh_loader_files(disk: DatasetDisk, runs: list[dict[str, Any]]) -> None:
    """Rewrite the ``metadata.jsonl`` and ``classes.txt`` (ISIC, ImageNet) the runs left, from
    the files now there (``runs`` resolved). Blocking; the caller holds the dataset's lock."""

    latest: dict[str, tuple[str, str]] = {}  # images_dir -> (spider, descs_dir) of its latest run
    for run in runs:  # resolved: only folders this command may use are left
        named = run.get("folders") or {}
        images_dir, descs_dir = named.get("images_dir"), named.get("descs_dir")
        if images_dir:
            latest[images_dir] = (str(run.get("spider")), descs_dir or "")
    for images_dir, (spider, descs_dir) in latest.items():
        if spider == "isic" and descs_dir and has_loader_files(images_dir):
            write_loader_files(disk, images_dir, descs_dir)
        classes = os.path.join(images_dir, CLASSES_NAME)
        if spider == "imagenet" and os.path.isfile(classes) and not os.path.islink(classes):
            disk.write_file(classes, classes_txt(class_folders(images_dir), read_classes_txt(classes)))
