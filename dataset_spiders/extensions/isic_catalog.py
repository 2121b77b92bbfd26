"""At the end of an ``isic`` run, describe the whole dataset on disk as isic-cli does:
``metadata.csv`` (isic_id, attribution, copyright_license, then the sorted union of the
acquisition and clinical fields), and ``attribution.txt``. Built from the manifest and the
saved descriptions, so it also covers images kept by earlier or ``offset`` runs.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
from collections import Counter
from typing import Any

from scrapy import signals

from ..core import DatasetCore, manifest
from ..sources.isic import record_from_description, valid_id

logger = logging.getLogger(__name__)
FIRST_COLUMNS = ["isic_id", "attribution", "copyright_license"]


def build_catalog(manifest_path: str, descs_dir: str) -> tuple[str, str, int]:
    """metadata.csv text, attribution.txt text, and the number of images described."""
    rows: list[dict[str, Any]] = []
    kept: dict[str, bool] = {}
    for _, record in manifest.read(manifest_path):
        if record.kind == "image":
            kept[record.id] = record.kept
    for key in sorted(k for k, is_kept in kept.items() if is_kept):
        if not valid_id(key):  # a key names a file: ours only
            continue
        try:
            with open(os.path.join(descs_dir, f"{key}.json"), encoding="utf-8") as f:
                record = record_from_description(json.load(f))
        except (OSError, ValueError):
            continue
        row = {**record.acquisition, **record.clinical}
        row.update(isic_id=key, attribution=record.attribution or "", copyright_license=record.license or "")
        rows.append(row)
    fields = sorted({k for row in rows for k in row} - set(FIRST_COLUMNS))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIRST_COLUMNS + fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    counts = Counter(row["attribution"] or "Anonymous" for row in rows)
    order = sorted(counts, key=lambda a: (a == "Anonymous", -counts[a], a))
    return out.getvalue(), "\n\n".join(order) + ("\n" if order else ""), len(rows)


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (dict, list)) else value


class IsicCatalog:
    """Writes metadata.csv and attribution.txt at the dataset root when the spider closes."""

    def __init__(self, crawler: Any):
        self.crawler = crawler
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Any) -> IsicCatalog:
        return cls(crawler)

    async def spider_closed(self, spider: Any, reason: str) -> None:
        core = self.crawler.get_extension(DatasetCore)
        if getattr(spider, "name", None) != "isic" or core is None or not core.lock.held:
            return
        try:
            await asyncio.to_thread(self.write, core)
        except OSError as exc:
            core.fail(f"cannot write the catalog: {exc.strerror or exc}", stop=False)

    def write(self, core: DatasetCore) -> None:
        core.writer.flush()  # the lines of the last images are in the file
        if not os.path.isfile(core.disk.manifest_path):
            return
        metadata, attribution, count = build_catalog(core.disk.manifest_path, core.folder_names["descs_dir"])
        core.disk.write_file(os.path.join(core.disk.root, "metadata.csv"), metadata.encode("utf-8"))
        core.disk.write_file(os.path.join(core.disk.root, "attribution.txt"), attribution.encode("utf-8"))
        logger.info("metadata.csv and attribution.txt describe %d image(s)", count)
