"""The two entry points: ``summarize`` (the numbers, JSON-able) and ``write_report`` (the page).

Both read only what is on disk, so they work on any dataset folder, during a crawl or long
after; the page is written atomically, a reader never sees half of it.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from typing import Any

from ..dataset.files import STAGING_DIR, atomic_write
from ..outcomes import KEPT_OUTCOMES
from .gather import Gathered, gather, last_run, run_downloaded, run_seconds
from .page import render
from .thumbs import contact_sheet

REPORT_NAME = "report.html"


def numbers(got: Gathered) -> dict[str, Any]:
    """The numbers of ``got`` as plain JSON types: what the page shows, for code to reuse."""
    run = last_run(got.runs)
    in_dataset = sum(got.groups[name].kept for name in got.groups)
    tried = sum(got.outcomes.values())
    hosts = sorted(got.hosts.items(), key=lambda item: (-item[1].tried, item[0]))
    seconds, downloaded = run_seconds(run), run_downloaded(run)
    return {
        "root": got.root,
        "spider": run.get("spider"),
        "by": got.by,
        "run": {**{key: run.get(key) for key in ("command", "arguments", "started", "ended", "exit_status", "error")},
                "seconds": seconds, "downloaded": downloaded,
                "images_per_second": round(downloaded / seconds, 3) if seconds and downloaded is not None else None}
        if run else None,
        "runs": len(got.runs),
        "folders_not_looked_at": got.outside,
        "target": got.target,
        "totals": {
            "tried": tried,
            "in_dataset": in_dataset,
            "failed": sum(n for outcome, n in got.outcomes.items() if outcome not in KEPT_OUTCOMES),
            "bytes": got.sizes.total,
            "masks_tried": sum(got.masks.values()),
            "masks_in_dataset": sum(n for o, n in got.masks.items() if o in ("kept", "present")),
            "skipped_lines": got.skipped,
        },
        "outcomes": dict(got.outcomes.most_common()),
        "failed": {outcome: [{"id": f.id, "url": f.url} for f in named] for outcome, named in got.failed.items()},
        "masks": dict(got.masks.most_common()),
        "groups": [
            {"name": name, "label": tally.label, "tried": tally.tried, "kept": tally.kept, "target": got.group_target,
             "failures": dict(tally.failures.most_common()),
             "short_reasons": [[outcome, n] for outcome, n in got.short_reasons(name)],
             "shortfall": _shortfall(run, name)}
            for name, tally in got.groups.items()
        ],
        "hosts": [{"host": host, "tried": t.tried, "kept": t.kept, "failures": dict(t.failures.most_common())}
                  for host, t in hosts],
        "hosts_down": sorted(({"host": host, "candidates": t.failures["host_down"]} for host, t in hosts
                              if t.failures.get("host_down")), key=lambda h: (-h["candidates"], h["host"])),
        "sizes": {"bytes": got.sizes.as_dict(), "width": got.widths.as_dict(), "height": got.heights.as_dict()},
    }


def _shortfall(run: dict[str, Any], name: str) -> str | None:
    """Why the last run said this class ended short, in its own words (its summary's ``Short:``
    line: the failures, or the URLs ``flickr_only`` dropped, or an unknown wnid), or None."""
    for text in run.get("shortfalls") or []:
        if isinstance(text, str) and (text.startswith(f"{name}: ") or text.startswith(f"{name} (")):
            return text.split(": ", 2)[-1][:500] if text.count(": ") >= 2 else text[:500]
    return None


def summarize(root: str | os.PathLike[str], named: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The numbers of the dataset at ``root`` (see ``numbers``); no thumbnail is made.
    ``named``: folders outside ``root`` to look at too. Raises NotADataset (a FileNotFoundError)
    when ``root`` holds no manifest."""
    return numbers(gather(os.fspath(root), per_group=0, max_total=0, named=named))


def write_report(
    root: str | os.PathLike[str],
    *,
    thumbnails_per_group: int = 12,
    thumbnails_max: int = 600,
    thumbnail_size: int = 96,
    named: list[str] | tuple[str, ...] = (),
) -> pathlib.Path:
    """Write ``root/report.html`` (atomically) and return its path. Nothing outside ``root`` is
    read or shown but the folders ``named`` (the crawl names its own; ``scrapy report`` those on
    its command line). Raises NotADataset (a FileNotFoundError) when ``root`` holds no manifest,
    OSError when the page cannot be written."""
    got = gather(os.fspath(root), per_group=thumbnails_per_group, max_total=thumbnails_max, named=named)
    sheet = contact_sheet(got, size=thumbnail_size)
    page = render(got, sheet, numbers(got)).encode("utf-8")
    path = pathlib.Path(got.root) / REPORT_NAME
    _replace(path, page)
    return path


def _replace(path: pathlib.Path, data: bytes) -> None:
    """Write ``data`` to a new file and rename it over ``path``: a reader sees the old page or the
    new one, never half of one. The rename replaces a symlink, not its target. The new file is
    made in the dataset's staging folder (emptied at every start, so a kill leaves nothing beside
    the page) when that is a real folder, else beside ``path``."""
    staging = path.parent / STAGING_DIR
    if staging.is_dir() and not staging.is_symlink():
        atomic_write(path, data, str(staging))
        os.chmod(path, 0o644)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
