"""At the end of an ``isic`` run, describe the whole dataset on disk as isic-cli writes it:
``metadata.csv``, ``attribution.txt`` and the loaders' files (``dataset/isic_files.py`` says what
each holds and how it is built)."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from scrapy import signals

from ..dataset import DatasetCore
from ..dataset.isic_files import build_catalog, write_loader_files
from ..dataset.loaders import METADATA_NAME
from ..sources.splits import Scheme, scheme

logger = logging.getLogger(__name__)


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
        params = getattr(spider, "params", None)
        splits = scheme(getattr(params, "splits", None), getattr(params, "seed", None))
        try:
            await asyncio.to_thread(self.write, core, splits, getattr(params, "layout", None) or "flat")
        except OSError as exc:
            core.fail(f"cannot write the catalog: {exc.strerror or exc}", stop=False)

    def write(self, core: DatasetCore, splits: Scheme | None = None, layout: str = "flat") -> None:
        core.writer.flush()  # the lines of the last images are in the file
        if not os.path.isfile(core.disk.manifest_path):
            return
        metadata, attribution, count = build_catalog(core.disk.manifest_path, core.folder_names["descs_dir"], splits)
        core.disk.write_file(os.path.join(core.disk.root, "metadata.csv"), metadata.encode("utf-8"))
        core.disk.write_file(os.path.join(core.disk.root, "attribution.txt"), attribution.encode("utf-8"))
        logger.info("metadata.csv and attribution.txt describe %d image(s)", count)
        images_dir = core.folder_names.get("images_dir")
        if images_dir:  # not with no_images: that run leaves the image tree as it is
            done = write_loader_files(core.disk, images_dir, core.folder_names["descs_dir"], splits, layout)
            logger.info("%s lists %d image(s) in %s", METADATA_NAME, done.listed, images_dir)
            core.notes += done.notes
