"""``dataset.json``: where a dataset came from, one entry per run, appended, written atomically.

Each run records its command and arguments, what it selected and its target, the sources,
the folders, the versions of the software, its start and end and its exit status. ``verify``
reads it back for what the manifest does not say: where the image folders are and how many
images an ImageNet class may hold. A run with no end was killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import socket
import sys
import time
import uuid
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .. import __version__
from ..secrets import redacted_command
from .files import STAGING_DIR, atomic_write, open_regular

logger = logging.getLogger(__name__)

NAME = "dataset.json"
MAX_SIZE = 64 << 20  # a dataset.json larger than this is not ours


class Unreadable(ValueError):
    """dataset.json is there but is not ours to read (hand-edited, damaged, foreign)."""


def read_runs(root: str, strict: bool = False) -> list[dict[str, Any]]:
    """The runs recorded in ``root/dataset.json`` (only well-formed entries); [] when none.
    An unreadable file is a warning and [] (with ``strict``, Unreadable)."""
    path = os.path.join(root, NAME)
    try:
        if os.path.islink(path) or os.path.getsize(path) > MAX_SIZE:
            raise ValueError("a symlink, or too large")
        with open_regular(path, mode="r", follow=False, encoding="utf-8", errors="replace") as f:
            data = json.load(f)
        runs = data.get("runs") if isinstance(data, dict) else None
        if not isinstance(runs, list):
            raise ValueError("no list of runs")
    except FileNotFoundError:
        return []
    except (OSError, ValueError, RecursionError) as exc:
        if strict:
            raise Unreadable(str(exc)[:100]) from None
        logger.warning("%s cannot be read (%s); it is not used", path, str(exc)[:100])
        return []
    return [run for run in runs if isinstance(run, dict)]


def versions() -> dict[str, str]:
    found = {"dataset_spiders": __version__, "python": platform.python_version()}
    for package in ("scrapy", "pillow", "twisted"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Provenance:
    """This run's entry in ``dataset.json``: written at the start and again at the end."""

    def __init__(self, root: str, staging_dir: str, run: dict[str, Any], set_aside: Callable[[str], Any]):
        self.root = root
        self.staging_dir = staging_dir
        self.set_aside = set_aside  # moves an unreadable dataset.json to .quarantine
        self.run = {
            "run_id": uuid.uuid4().hex,
            "command": redacted_command(list(sys.argv)),  # as Scrapy left it; the crawl command gives it whole
            **run,
            "versions": versions(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": now(),
            "ended": None,
            "exit_status": None,
        }

    def start(self) -> None:
        """Append this run; an unreadable dataset.json is set aside first, never lost. Blocking."""
        try:
            read_runs(self.root, strict=True)
        except Unreadable as exc:
            aside = self.set_aside(os.path.join(self.root, NAME))
            logger.warning("%s cannot be read (%s): moved to %s, a new one is started", NAME, exc, aside)
        self._write()

    def end(self, exit_status: int, error: str | None, results: dict[str, Any] | None = None) -> None:
        """Record how the run ended (and what came of it). Blocking (a small file, once)."""
        self.run.update(ended=now(), exit_status=exit_status, error=error, **(results or {}))
        self._write()

    def _write(self) -> None:
        """Read, add this run, write: under an flock, as workers of one dataset share the file."""
        fd = os.open(os.path.join(self.root, STAGING_DIR), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            runs = [r for r in read_runs(self.root) if r.get("run_id") != self.run["run_id"]]
            data = json.dumps({"runs": [*runs, self.run]}, indent=2, ensure_ascii=False, default=str)
            atomic_write(os.path.join(self.root, NAME), data.encode("utf-8") + b"\n", self.staging_dir)
        finally:
            os.close(fd)


def image_folders(runs: list[dict[str, Any]]) -> list[str]:
    """Every image folder the runs wrote to (images and masks), absolute, in order."""
    found: dict[str, None] = {}
    for run in runs:
        folders = run.get("folders")
        if isinstance(folders, dict):
            for name in ("images_dir", "seg_dir"):
                if isinstance(folders.get(name), str) and os.path.isabs(folders[name]):
                    found[os.path.normpath(folders[name])] = None
    return list(found)


def imagenet_target(runs: list[dict[str, Any]], images_dir: str) -> int | None:
    """``per_class`` of the latest ImageNet run into ``images_dir``, or None."""
    for run in reversed(runs):
        folders = run.get("folders") if isinstance(run.get("folders"), dict) else {}
        target = run.get("target") if isinstance(run.get("target"), dict) else {}
        same = isinstance(folders.get("images_dir"), str) and os.path.normpath(folders["images_dir"]) == images_dir
        if run.get("spider") == "imagenet" and same and type(target.get("images")) is int:
            return int(target["images"])
    return None
