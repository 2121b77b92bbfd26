"""Look before the leap: what a run would fetch (``dry_run=true``: said on stdout, then the run
stops having touched nothing on disk), and whether what it expects to write fits on the disk
(every real run; ``DISK_SPACE_CHECK`` turns it off).

ISIC sizes come from the API (``images/search/size/``: the bytes of every matching image,
scaled to the number asked), a hint checked against the records' own sizes (``sane_size``);
ImageNet has no sizes, so ``per_class`` times ``IMAGENET_AVERAGE_IMAGE_BYTES`` (110 KB, about
the ILSVRC-2012 training images' average).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from ..dataset.formats import is_image_name
from ..secrets import scrub
from ..sources import isic

if TYPE_CHECKING:
    from .imagenet import ImagenetSpider
    from .isic import IsicSpider

logger = logging.getLogger(__name__)

GB, MB, KB = 1 << 30, 1 << 20, 1 << 10
DRY_RUN_ENV = "DATASET_SPIDERS_DRY_RUN"  # "json": the isic dry run's numbers as one JSON object, for a program
SIZE_SLACK = 20  # the API's size of a selection is believed within 1/20 to 20 times the records' own sizes


def say(text: str) -> None:
    """A dry run's answer: on stdout, where a script can read it."""
    sys.stdout.write(scrub(text) + "\n")  # (an api_url with a password in it)
    sys.stdout.flush()


def size_text(n: float) -> str:
    return f"{n / GB:.2f} GB" if n >= GB else f"{n / MB:.1f} MB" if n >= MB else f"{n / KB:.0f} KB"


# --- ISIC ---------------------------------------------------------------------------------------


async def isic_measure(
    spider: IsicSpider, count: int | None = None, label: str | None = None, first_page: Any = None
) -> tuple[int | None, int | None]:
    """How many images match the selection (unless known) and their bytes in all: the v2 API's
    size when it is plausible against the first search page's records (``first_page``, its
    results; fetched here when the count is not known), else their estimate (``sane_size``).
    None: not known (v1, or neither the API nor the records say)."""
    p = spider.params
    if p.api_version != 2:
        return None, None
    query = isic.v2_query(label or p.filter, p.query)
    if count is None:
        search = isic.v2_search_url(spider.api_url, query, p.collections)
        status, data = await spider.fetch_json(search, "search page")
        count = data.get("count") if status == 200 and isinstance(data, dict) else None
        first_page = data.get("results") if status == 200 and isinstance(data, dict) else None
    params = {k: v for k, v in (("query", query or ""), ("collections", ",".join(map(str, p.collections)))) if v}
    status, data = await spider.fetch_json(f"{spider.api_url}/images/search/size/?{urlencode(params)}", "size")
    said = data.get("size") if status == 200 and isinstance(data, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        return None, None
    return count, sane_size(said, count, record_sizes(first_page))


def record_sizes(results: Any) -> list[int]:
    """The ``files.full.size`` of a search page's records (those that give one)."""
    sizes = []
    for raw in results if isinstance(results, list) else []:
        with contextlib.suppress(isic.RecordError):
            if (size := isic.v2_record(raw).full_size) is not None:
                sizes.append(size)
    return sizes


def sane_size(said: Any, count: int, sizes: list[int]) -> int | None:
    """The bytes of the ``count`` images of a selection: what the API ``said``, a hint, when it is
    a finite number >= 0 within ``SIZE_SLACK`` times of what the records' own ``sizes`` give
    (their mean times ``count``); else that estimate, with a warning naming what the API said."""
    estimate = round(sum(sizes) / len(sizes) * count) if sum(sizes) else None
    number = type(said) in (int, float) and math.isfinite(said) and said >= 0
    if number and (estimate is None or estimate / SIZE_SLACK <= said <= estimate * SIZE_SLACK):
        return int(said)
    if said is None:  # not said (a mirror without the size endpoint): the records' estimate, if any
        return estimate
    negative = type(said) in (int, float) and said < 0
    why = f"more than {SIZE_SLACK} times off" if number else "negative" if negative else "not a number of bytes"
    instead = f"about {size_text(estimate)} from the records' own sizes" if estimate is not None else "no size"
    logger.warning("The API says the %d matching image(s) take %s bytes (images/search/size/), %s: using %s",
                   count, repr(said)[:40], why, instead)
    return estimate


def isic_expected(spider: IsicSpider, count: int | None, size: int | None) -> tuple[int | None, int | None]:
    """Images this run would keep and their expected bytes."""
    if count is None:
        return spider.params.num_images, None
    wanted = max(0, count - spider.params.offset)
    if spider.params.num_images is not None or spider.params.per_label is not None:
        wanted = min(wanted, spider.params.num_images or spider.params.per_label or 0)
    return wanted, (round(size * wanted / count) if size is not None and count else None)


async def isic_dry_run(spider: IsicSpider) -> None:
    count, size = await isic_measure(spider)
    wanted, expected = isic_expected(spider, count, size)
    p = spider.params
    selection = isic.v2_query(p.filter, p.query) or "everything" if p.api_version == 2 else p.filter or "everything"
    if os.environ.get(DRY_RUN_ENV) == "json":  # the console, about to ask before a whole selection (cli.py)
        say(json.dumps({"count": count, "size": size, "wanted": wanted, "expected": expected,
                        "selection": selection, "folder": p.folder("images")}))
        return
    if count is None:
        say(f"Dry run: isic (API v{p.api_version}) at {spider.api_url}: this API does not say how many images "
            f"match {selection}; the run would keep {wanted if wanted is not None else 'every one'}")
        return
    total = f" ({size_text(size)} for all {count})" if size is not None else ""
    bytes_text = f", about {size_text(expected)}" if expected is not None else ", size unknown"
    say(f"Dry run: isic: {count} image(s) match {selection}{total}; the run would keep {wanted}{bytes_text}, "
        f"into {p.folder('images')}")


# --- ImageNet -----------------------------------------------------------------------------------


async def imagenet_dry_run(spider: ImagenetSpider) -> None:
    """Each class's candidate URLs (from the list file or the geturls API), and the totals."""
    from .imagenet_classes import ClassState, asked_classes

    p = spider.params
    pairs = asked_classes(p, spider.domains)
    states = [ClassState(i, wnid, label, "") for i, (wnid, label) in enumerate(pairs)]
    from_file = spider.read_urls_file(states) if p.urls_file else None
    say(f"Dry run: imagenet: {len(states)} class(es), {p.per_class} per class, into {spider.images_dir}")
    short = 0
    for state in states:
        await spider._load_candidates(state, from_file)
        n = len(state.candidates)
        short += n < p.per_class
        label = f" ({state.label.split(',')[0]})" if state.label else ""
        say(f"{state.wnid}{label}: {n} candidate URL(s)" + (f": {state.no_urls}" if state.no_urls else ""))
    keep = sum(min(len(s.candidates), p.per_class) for s in states)
    average = spider.settings.getint("IMAGENET_AVERAGE_IMAGE_BYTES")
    say(f"In all: {sum(len(s.candidates) for s in states)} candidate URL(s); at most {keep} image(s) would be kept "
        f"({short} class(es) have fewer than {p.per_class} candidates), about {size_text(keep * average)} at "
        f"{average // 1000} KB an image")


# --- the disk -----------------------------------------------------------------------------------


def space_problem(folder: str, expected: int | None, settings: Any) -> str | None:
    """Why ``expected`` more bytes will not fit under ``folder`` (one line), or None. The images
    already there count as written (a re-run fetches only what is missing). Blocking."""
    if expected is None or not settings.getbool("DISK_SPACE_CHECK", True):
        return None
    need = max(0, expected - bytes_under(folder))
    where = folder
    while not os.path.exists(where) and os.path.dirname(where) != where:
        where = os.path.dirname(where)
    free = shutil.disk_usage(where).free
    if need <= free:
        return None
    return (f"not enough disk space: the run expects to write about {size_text(need)} into {folder}, which has "
            f"{size_text(free)} free (-s DISK_SPACE_CHECK=false to start anyway)")


def bytes_under(folder: str) -> int:
    """The bytes of the image files under ``folder`` (symlinks not followed)."""
    total = 0
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.is_file(follow_symlinks=False) and is_image_name(entry.name):
                total += entry.stat(follow_symlinks=False).st_size
    return total
