"""What every dataset spider has: validated arguments, turned into the settings that configure
the dataset core, and a few helpers to fetch API pages. Spiders only list sources and yield
items; the dataset itself (folders, manifest, quota) is the core's (``dataset/core.py``)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Self

import scrapy
from scrapy import Request
from scrapy.settings import SETTINGS_PRIORITIES
from scrapy.utils.misc import load_object

from ..dataset import DatasetCore, selection
from ..dataset.provenance import read_runs, recorded_folders
from ..params import ArgumentModel, parse_args
from ..secrets import SECRET_ARGUMENTS, hidden_arguments, hidden_settings, protect, redacted_command, scrubbed
from .preflight import space_problem

logger = logging.getLogger(__name__)

#: Settings that come from the spider's arguments win over ``-s``: ``-s IMAGES_STORE=elsewhere``
#: must not move the dataset away from ``out_dir`` (as zyte-spider-templates does it).
ARGUMENT_PRIORITY = SETTINGS_PRIORITIES["cmdline"] + 10


class SourceError(Exception):
    """A source answered something the spider cannot use; the message is one line."""


class DatasetSpider(scrapy.Spider):
    """Base class: ``Params`` is the argument model, checked before anything is requested."""

    Params: ClassVar[type[ArgumentModel]]
    params: ArgumentModel  # a ``Params``; subclasses declare theirs
    target_per: str = "selection"  # what the target counts: the selection, each class, each label
    core: DatasetCore

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__()
        self.params = parse_args(self.Params, kwargs)

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> Self:
        protect(crawler.settings, kwargs)  # (the crawl command did, unless the crawl is started from code)
        spider = super().from_crawler(crawler, *args, **kwargs)
        root = spider.params.out_dir
        target = spider.target()
        contact = crawler.settings.get("DATASET_CONTACT")
        if contact and "contact:" not in crawler.settings.get("USER_AGENT", ""):
            agent = crawler.settings.get("USER_AGENT", "").rstrip(")")
            crawler.settings.set("USER_AGENT", f"{agent}; contact: {contact})", priority=ARGUMENT_PRIORITY)
        for name, value in {
            "DATASET_ROOT": root,
            "IMAGES_STORE": root,
            "DATASET_FOLDERS": spider.folder_names(),
            "DATASET_OWN_FOLDERS": spider.own_folders(),
            "DATASET_TARGET": target,
            "DATASET_DRY_RUN": getattr(spider.params, "dry_run", False),
        }.items():
            crawler.settings.set(name, value, priority=ARGUMENT_PRIORITY)
        return spider

    async def start(self) -> AsyncIterator[Any]:
        """The spider's ``items()``, with any unexpected error turned into one line and exit 1."""
        self.core = DatasetCore.of(self.crawler)
        if getattr(self.params, "dry_run", False):
            try:
                await self.dry_run()
            except Exception as exc:  # SourceError, a bad class file: one line, exit 1
                plain = isinstance(exc, (SourceError, ValueError))
                self.core.fail(str(exc) if plain else f"{type(exc).__name__}: {exc}")
            return
        if self.core.claim_error:
            self.core.fail(self.core.claim_error)
            return
        problem = await asyncio.to_thread(self.selection_problem)
        if problem:
            self.core.refuse(problem)
            return
        try:
            async for item in self.items():
                yield item
        except Exception as exc:
            logger.debug("The crawl failed", exc_info=True)
            self.core.fail(f"the crawl failed: {type(exc).__name__}: {exc}", stop=False)
            await self.settle()

    def items(self) -> AsyncIterator[Any]:
        raise NotImplementedError

    def selection_problem(self) -> str | None:
        """Why this run may not go on in its folder: the folder holds another spider's dataset,
        or another selection (``dataset/selection.py``); with ``reselect``, the core is told to set
        the folder's images aside instead. Blocking (reads dataset.json, under the lock)."""
        mine = self.Params.selection_of(dataclasses.asdict(self.params))
        why = selection.difference(self.name, mine, read_runs(self.core.disk.root), self.Params.selection_of)
        if why is None:
            return None
        if not getattr(self.params, "reselect", False):
            return selection.refusal(self.core.disk.root, why)
        if self.core.mode.shared:
            return "reselect: not with REDIS_URL (run it once without workers, then start the workers)"
        self.core.reselect = f"not in the folder's new selection ({selection.shown(selection.normal(mine))}): {why}"
        return None

    async def dry_run(self) -> None:
        """Say what the run would fetch (stdout), touching nothing on disk."""
        raise NotImplementedError

    def check_space(self, folder: str, expected: int | None) -> bool:
        """Whether what the run expects to write fits (else the run fails with one line)."""
        problem = space_problem(folder, expected, self.settings)
        if problem:
            self.core.fail(problem)
        return problem is None

    def target(self) -> int | None:
        """How many images to keep per group (None: all there are)."""
        return None

    def folder_names(self) -> dict[str, str]:
        """The output folders the user may name (and may put outside ``out_dir``), by argument."""
        return {}

    def own_folders(self) -> list[str]:
        """Folders the spider makes itself inside the named ones: a symlink there is refused."""
        return self.default_folders()

    def default_folders(self) -> list[str]:
        """The output folders the user did not name (their defaults inside ``out_dir``): ours, so
        never a link (a folder that came with a copied dataset must not lead the run elsewhere)."""
        return [path for name, path in self.folder_names().items() if getattr(self.params, name, None) is None]

    def api_headers(self, url: str) -> dict[str, str]:
        """Headers for a request to the source's API (a token, for the API's own origin only)."""
        return {}

    def sources(self) -> dict[str, str | None]:
        """Where this run's images are listed, for dataset.json."""
        return {"api_url": getattr(self, "api_url", None)}

    def provenance_record(self) -> dict[str, Any]:
        """This run's selection, target, sources and folders, for dataset.json."""
        target = self.target()
        return {
            "spider": self.name,
            **({"command": redacted_command(command)}
               if (command := self.settings.getlist("DATASET_COMMAND_LINE")) else {}),
            "sources": scrubbed(self.sources()),
            "arguments": hidden_arguments(dataclasses.asdict(self.params)),
            "settings": hidden_settings({k: v for k, v in self.settings.copy_to_dict().items()
                                         if self.settings.getpriority(k) == SETTINGS_PRIORITIES["cmdline"]}),
            "target": {"images": target, "per": self.target_per} if target is not None else None,
            "folders": recorded_folders(self.core.disk.root, {"out_dir": self.core.disk.root, **self.folder_names()}),
        }

    def run_terms(self) -> dict[str, Any]:
        """What every worker of one run must agree on: the spider, its target and its selection."""
        target = self.target()
        return {"spider": self.name,
                "target": "all" if target is None else f"{target} per {self.target_per}",
                **selection.normal(self.Params.selection_of(dataclasses.asdict(self.params)))}

    async def open_dataset(self) -> bool:
        """Check the pipelines, then have the core open the dataset (folders, dataset.json, manifest)."""
        logger.info("%s", self.plan_line())
        return self.check_pipelines() and await self.core.open(self.provenance_record())

    def plan_line(self) -> str:
        """What will be fetched, from where, into where: the first line of the log."""
        target, per = self.target(), f" per {self.target_per}" if self.target_per != "selection" else ""
        how_many = f"{target} image(s){per}" if target is not None else "every image"
        chosen = ", ".join(f"{f.name}={_shown(getattr(self.params, f.name))}" for f in dataclasses.fields(self.params)
                           if f.name not in ("out_dir", "api_url", *SECRET_ARGUMENTS)
                           and getattr(self.params, f.name) != f.default)
        sources = ", ".join(f"{v}" for v in self.sources().values() if v)
        return f"{self.name}{f' ({chosen})' if chosen else ''}: {how_many} from {sources} into {self.core.disk.root}"

    def known_failure(self, kind: str, image_id: str) -> bool:
        return self.core.known_failure(kind, image_id, getattr(self.params, "retry_failed", False))

    async def settle(self) -> None:
        """Wait for every image in flight to finish its pipelines.

        Scrapy notices that a spider whose ``start()`` has ended is idle only at its next
        5-second heartbeat; ending ``start()`` once the last item is through lets it close
        at once.
        """
        await self.core.quota.wait_until_settled()
        slot = self.crawler.engine.scraper.slot
        for _ in range(500):
            if slot is None or slot.is_idle():
                return
            await asyncio.sleep(0.01)

    def check_pipelines(self) -> bool:
        """Scrapy disables a pipeline that raises NotConfigured (an ``s3://`` store without
        botocore, say) with a mere warning, and the crawl "succeeds" with no images: stop instead."""
        configured = [load_object(path) for path, order in self.settings.getdict("ITEM_PIPELINES").items()
                      if order is not None]
        for cls in configured:
            if self.crawler.get_item_pipeline(cls) is None:
                self.core.fail(f"the item pipeline {cls.__name__} is disabled (the warning above says why); stopping")
                return False
        return True

    async def fetch(self, url: str, what: str) -> scrapy.http.Response:
        """GET ``url`` through the downloader middlewares (retries, proxy, Retry-After)."""
        try:
            # a final failure is said once, by whoever catches SourceError, not also by the retry middleware
            request = Request(url, dont_filter=True, headers=self.api_headers(url),
                              meta={"give_up_log_level": logging.DEBUG})
            return await self.crawler.engine.download_async(request)
        except Exception as exc:
            raise SourceError(f"cannot fetch the {what} {url}: {type(exc).__name__}: {exc}") from None

    async def fetch_json(self, url: str, what: str) -> tuple[int, Any]:
        """Status and decoded JSON of ``url``; SourceError when the body is not JSON."""
        response = await self.fetch(url, what)
        try:
            return response.status, json.loads(response.body)
        except (ValueError, RecursionError):
            content_type = response.headers.get(b"Content-Type", b"?")
            kind = content_type.decode("latin-1") if content_type is not None else "?"
            raise SourceError(
                f"the {what} {url} answered HTTP {response.status} with {kind}, not JSON"
            ) from None


def _shown(value: Any, limit: int = 60) -> str:
    """An argument's value as the start line shows it: lists joined, long ones cut."""
    if isinstance(value, (list, tuple)):
        text = ",".join(map(str, value))
        return text if len(text) <= limit else f"{text[:limit]}… ({len(value)} in all)"
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}…"


class SearchRejected(SourceError):
    """The server refused the search itself: nothing to download, so the run stops at once."""
