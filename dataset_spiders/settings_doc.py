"""The settings reference of ``docs/settings.md``, rendered from the code.

``DESCRIPTIONS`` is the one place a setting's description lives: every setting of ours (each
name in ``settings_check.OURS``) and the Scrapy settings worth tuning. ``markdown_table`` adds
each one's default as ``settings.py`` sets it (Scrapy's own default when it differs) and each
spider's override from its ``custom_settings``. ``tests/unit/test_readme.py`` checks that
``docs/settings.md`` holds the table verbatim and that no setting of ours lacks a row.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

#: One line per setting, in the order of the table (grouped by what they are about).
DESCRIPTIONS: dict[str, str] = {
    # who we are
    "DATASET_CONTACT": "**fill it in**: a URL or e-mail added to the User-Agent (`dataset-spiders/0.1 (research "
                       "image downloader; +https://pypi.org/project/dataset-spiders/; contact: …)`), so hosts can "
                       "reach you",
    # where the sources are
    "ISIC_API_URL": "the ISIC v2 API base, for mirrors (also the isic `api_url` argument)",
    "ISIC_V1_API_URL": "the legacy v1 (Girder) API base, for `api_version=1` (also the isic `api_url` argument)",
    "IMAGENET_API_URL": "the geturls endpoint (also the imagenet `api_url` argument)",
    "ISIC_TOKEN": "an ISIC API token for private images; prefer the environment variable `ISIC_TOKEN`; never "
                  "logged or recorded ([isic.md](isic.md))",
    "ISIC_MASK_ARCHIVES": "the challenge ground-truth ZIP archives that v2 masks (`segmentation=true`) come from, "
                          "read by HTTP Range; first listed first ([isic.md](isic.md))",
    "FLICKR_DOMAINS": "the hosts `flickr_only` keeps, matched on domain boundaries",
    "ISIC_MAX_IDLE_PAGES": "listing pages in a row that bring no record not already listed (v2 cursors, v1 "
                           "offsets) before the listing ends with an error, exit 1; 0: never",
    # how much at once
    "CONCURRENT_REQUESTS": "Scrapy's concurrency, in all; the download handler holds image requests to it too",
    "CONCURRENT_REQUESTS_PER_DOMAIN": "Scrapy's concurrency per host name; for image requests too",
    "DATASET_MAX_IN_FLIGHT": "images listed but not yet recorded, at most (per class)",
    "DATASET_EXTRA_IN_FLIGHT": "candidates in flight beyond what a class still needs",
    "IMAGENET_ACTIVE_CLASSES": "classes downloaded at the same time",
    # how long to wait
    "DOWNLOAD_TIMEOUT": "seconds for an API page (image downloads have `IMAGES_DOWNLOAD_TIMEOUT`)",
    "IMAGES_DOWNLOAD_TIMEOUT": "seconds for a whole image download, long enough for big images from slow but "
                               "living hosts; 0: `DOWNLOAD_TIMEOUT`",
    "IMAGES_CONNECT_TIMEOUT": "seconds to connect to an image host (per attempt, after DNS; through a proxy, to "
                              "the proxy): a live host connects in well under a second, so 10 s only costs a dead "
                              "one; 0: the download timeout",
    "IMAGES_FIRST_BYTE_TIMEOUT": "seconds from the start of an image request to the first byte of the answer: a "
                                 "host that accepts and never answers is given up on this soon; 0: none",
    "DNS_TIMEOUT": "seconds a name may take to resolve: the connect limit does not cover DNS",
    "TWISTED_DNS_RESOLVER": "Scrapy's `CachingThreadedResolver` with its lookups in daemon threads of their own: "
                            "a lookup the run no longer needs (a host whose name server does not answer, for a "
                            "class already full) never holds the command's exit",
    # which hosts are alive
    "HOSTS_DOWN_AFTER": "connection-level failures in a row that take a host down (its candidates `host_down`, "
                        "not asked): 3 tells a dead host from a hiccup at the cost of 3 waits; 0: host health off",
    "HOSTS_DOWN_FOR": "seconds before a down host's probe (doubling after each failed probe): long enough that a "
                      "dead host costs one probe a minute, short enough that a class ending short waits for it",
    "HOSTS_UNPROVEN_CONCURRENCY": "requests at once to a host that has not answered yet (a probe, not a flood); "
                                  "0: no cap",
    "HOSTS_STALL_AFTER": "seconds a download may wait for a first byte before its class may start another "
                         "candidate; 0: never",
    "HOSTS_SHORT_PROBE_AFTER": "seconds a host must have been down before a class about to end short probes it "
                               "(rather than wait out `HOSTS_DOWN_FOR`): a dead list costs seconds at its end, a "
                               "blip is caught",
    # retries
    "RETRY_TIMES": "retries after the first try, for 5xx, 408, 429, timeouts, dropped connections",
    "IMAGES_RETRY_TIMES": "retries per image request (none: `RETRY_TIMES`): a dead photo is better replaced "
                          "than retried",
    "RETRY_AFTER_MAX": "the longest `Retry-After` honoured, in seconds; a longer ask pauses the host this long "
                       "and the image is `rate_limited`",
    "RETRY_BACKOFF_BASE": "a 429/503 without `Retry-After` pauses its host base x 2^n seconds (jittered), reset "
                          "by its next success; 0: off",
    "RETRY_BACKOFF_MAX": "the longest such back-off, in seconds",
    # sizes and memory
    "IMAGES_MIN_WIDTH": "narrower images are `too_small`",
    "IMAGES_MIN_HEIGHT": "lower images are `too_small`",
    "IMAGES_MAX_PIXELS": "larger images are `too_large`, checked from the header before decoding. ImageNet's is "
                         "Pillow's own warning limit (`Image.MAX_IMAGE_PIXELS`), so every kept photo opens in a "
                         "default Pillow without a `DecompressionBombWarning` (Pillow refuses at twice that); ISIC "
                         "keeps its large dermoscopy TIFFs",
    "DOWNLOAD_MAXSIZE": "larger bodies are `too_large`",
    "IMAGES_ENCODED_MAXSIZE": "images are asked for with `Accept-Encoding: identity`; one sent "
                              "gzip/deflate/br/zstd-encoded anyway that inflates past this (or `DOWNLOAD_MAXSIZE`, "
                              "if lower) is `too_large`, found by counting, never inflated into memory (a gzip bomb: "
                              "2 MB in, 2 GiB out); 0: only `DOWNLOAD_MAXSIZE`",
    "IMAGES_MEMORY_BUDGET": "image bodies being received at once, in bytes, at most (Scrapy holds each in memory "
                            "until complete): a download that does not fit waits for room, then goes; one larger "
                            "than the budget goes alone; never a failure; 0: off",
    # what is kept
    "IMAGES_HONOUR_NOAI": "an image served with `X-Robots-Tag: noai` or `noimageai` (for all robots or "
                          "`dataset-spiders`) is not kept: `opted_out`",
    "DEDUPLICATE_IMAGES": "refuse byte- or pixel-identical copies of a kept image",
    "NEAR_DUPLICATES": "also refuse near-copies (resized, re-encoded) of a kept image, by perceptual hash "
                       "(`imagehash`, imported only then) ([imagenet.md](imagenet.md))",
    "NEAR_DUPLICATE_DISTANCE": "with `NEAR_DUPLICATES`: hashes at most this many of their 64 bits apart are "
                               "near-copies (0 to 15)",
    "PLACEHOLDER_URL_PATTERNS": "regular expressions: a redirect hop or final URL matching one is a placeholder",
    "PLACEHOLDER_DIGESTS": "known \"image unavailable\" stand-ins: `sha256:`, `sha1:` or `md5:` and the hex "
                           "digest of their bytes, or `size:` and their size in bytes",
    "PLACEHOLDER_LEARN_THRESHOLD": "the same bytes for this many distinct photo URLs (paths) of a site make a "
                                   "placeholder; 0: off",
    "PLACEHOLDER_LEARN_IN_CLASS": "... or for this many within one class; 0: off",
    # durability
    "DATASET_COMMIT_BATCH": "images renamed into place and made durable together, at most",
    "DATASET_COMMIT_DELAY": "seconds an image waits for its batch to fill, at most",
    "DATASET_FLUSH_INTERVAL": "seconds between writes of the other manifest lines, at most",
    # the disk
    "DISK_SPACE_CHECK": "stop at start, with one line, when what the run expects to write will not fit",
    "IMAGENET_AVERAGE_IMAGE_BYTES": "the bytes an ImageNet image is expected to take (the disk check, the dry run)",
    # many workers
    "DATASET_WORKER_MODE": "the class that makes the shared decisions in Redis when `REDIS_URL` is set (behind the "
    "same seam as the in-memory ones, `dataset_spiders/dataset/decisions.py`); loaded only then",
    "REDIS_URL": "`redis://host:port/db`: crawls given the same one and the same `out_dir` build one dataset "
                 "together ([scaling-out.md](scaling-out.md))",
    "DATASET_LEASE": "seconds before a silent worker's share is given back",
    "REDIS_RETRY_FOR": "seconds Redis may be out of reach (workers pause and retry) before a worker stops, exit 1",
    # what a run shows
    "PROGRESS": "`auto`: a bar on a terminal, else lines; `bar`, `lines` or `off`; always on stderr",
    "PROGRESS_INTERVAL": "seconds between progress lines when stderr is not a terminal",
    "PROGRESS_STALL_AFTER": "seconds without an image recorded before progress says what the run waits on; 0: "
                            "never",
    "DATASET_VERBOSE_LOG": "set to true by `--verbose` (which also means `-L DEBUG` when no `-L` is given); no "
                           "code reads it: the log level does the work",
    "REPORT_HTML": "write `out_dir/report.html` at the end of every run",
    "REPORT_THUMBNAILS_PER_GROUP": "thumbnails per class or label in the report, at most",
    "REPORT_THUMBNAILS_MAX": "thumbnails in the report in all, at most: shared out among the classes (at least "
                             "one each, for the first classes)",
    "REPORT_THUMBNAIL_SIZE": "pixels on a thumbnail's longer side",
}

_MISSING = object()


def shown(value: Any) -> str:
    """A default as the table shows it: sizes in MiB or GiB, big numbers with commas, texts in
    backticks, a long list of URLs on one host by its count and host."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        for unit, size in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2)):
            if value >= size and value % size == 0:
                return f"{value // size} {unit}"
        return f"{value:,}" if value >= 10_000 else str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return f"`{value}`" if value else "empty"
    if isinstance(value, (list, tuple)):
        hosts = {urlsplit(str(item)).hostname for item in value}
        if len(value) > 3 and len(hosts) == 1 and None not in hosts:
            return f"{len(value)} URLs on `{hosts.pop()}`"
        return ", ".join(f"`{item}`" for item in value)
    return f"`{value!r}`"


def defaults() -> dict[str, Any]:
    """Each setting's value in ``settings.py`` (else Scrapy's default; else missing)."""
    from scrapy.settings import default_settings

    from . import settings as ours

    return {name: getattr(ours, name, getattr(default_settings, name, _MISSING)) for name in DESCRIPTIONS}


def overrides() -> dict[str, dict[str, Any]]:
    """Each spider's ``custom_settings``, by spider name."""
    from .spiders.imagenet import ImagenetSpider
    from .spiders.isic import IsicSpider

    return {spider.name: dict(spider.custom_settings or {}) for spider in (IsicSpider, ImagenetSpider)}


def default_cell(name: str, value: Any, spiders: dict[str, dict[str, Any]]) -> str:
    """``60 (isic: 300)``; for a Scrapy setting we change, ``10 (Scrapy's: 60)``."""
    from scrapy.settings import default_settings

    text = "not set" if value is _MISSING else shown(value)
    notes = [f"{spider}: {shown(custom[name])}" for spider, custom in spiders.items()
             if name in custom and custom[name] != value]
    scrapy = getattr(default_settings, name, _MISSING)
    if scrapy is not _MISSING and scrapy != value:
        notes.append(f"Scrapy's: {shown(scrapy)}")
    return f"{text} ({'; '.join(notes)})" if notes else text


def markdown_table() -> str:
    """Every documented setting as a Markdown table: setting, default, what it does."""
    values, spiders = defaults(), overrides()
    rows = ["| setting | default | what |", "|---|---|---|"]
    for name, what in DESCRIPTIONS.items():
        cells = (f"`{name}`", default_cell(name, values[name], spiders), what)
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)
