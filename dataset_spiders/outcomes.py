"""The one list of outcomes an image can have, shared by the manifest, the stats and the log.

Every image the crawl tries ends with exactly one outcome. ``KEPT_OUTCOMES`` are the ones
that leave the image in the dataset; everything else names why it is not there.
"""

from __future__ import annotations

import re
from enum import StrEnum

from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadCancelledError,
    DownloadConnectionRefusedError,
    DownloadFailedError,
    DownloadTimeoutError,
    IgnoreRequest,
    ResponseDataLossError,
)
from twisted.internet import error as twisted_error


class Outcome(StrEnum):
    """Why an image is, or is not, in the dataset: the manifest's ``outcome`` field. A server's
    final HTTP status is an outcome too, ``http_404`` and friends (``http_outcome``)."""

    KEPT = "kept"  # downloaded, checked and renamed into place in this run
    PRESENT = "present"  # already on disk from an earlier run; not downloaded again
    DESCRIBED = "described"  # description saved; the image was not asked for (no_images)
    COMMITTING = "committing"  # in the commit journal only: about to be renamed into place

    TIMEOUT = "timeout"
    CONNECTION = "connection"  # refused, reset, DNS failure, dropped before a response
    TRUNCATED = "truncated"  # the body or the image data ends early
    EMPTY = "empty"
    NOT_IMAGE = "not_image"  # HTML, text or bytes no decoder knows
    CORRUPT = "corrupt"  # an image format, but the data does not decode
    TOO_SMALL = "too_small"
    TOO_LARGE = "too_large"  # over the byte limit or the pixel limit
    BAD_ID = "bad_id"  # the source gave an id that cannot be a file name
    NO_URL = "no_url"  # the source lists the image without a URL to fetch it from
    PLACEHOLDER = "placeholder"  # an "image unavailable" stand-in
    DUPLICATE = "duplicate"
    SURPLUS = "surplus"  # arrived after its class was full, or over it when a run started
    CANCELLED = "cancelled"  # the download was cancelled (the run stopping), not refused
    FILTERED = "filtered"  # refused by a downloader middleware (offsite, robots, ...)
    REDIRECT = "redirect"  # a redirect that could not be followed
    RATE_LIMITED = "rate_limited"  # the host asked to wait longer than RETRY_AFTER_MAX
    ERROR = "error"  # a bug or an unexpected failure; the detail says which
    DAMAGED = "damaged"  # `scrapy verify --fix` found the kept file changed or undecodable
    MISSING = "missing"  # `scrapy verify --fix` found the kept file gone
    OPTED_OUT = "opted_out"  # the host asked that its images not be used for AI (X-Robots-Tag: noai / noimageai)
    NO_MASK = "no_mask"  # a mask: none of the mask archives (ISIC_MASK_ARCHIVES) holds one for the image
    WRONG_SIZE = "wrong_size"  # a mask whose dimensions are not its image's
    HOST_DOWN = "host_down"  # not asked: its host was down (HOSTS_DOWN_AFTER failed connections); a re-run tries
    SET_ASIDE = "set_aside"  # reselect=true: of the folder's earlier selection; moved to .quarantine, not in it


KEPT_OUTCOMES = frozenset({Outcome.KEPT, Outcome.PRESENT, Outcome.DESCRIBED})
#: Failures worth trying again on a re-run: the server or the network may do better next time.
TRANSIENT_OUTCOMES = frozenset(
    {Outcome.TIMEOUT, Outcome.CONNECTION, Outcome.HOST_DOWN, Outcome.TRUNCATED, Outcome.ERROR, Outcome.DAMAGED,
     Outcome.MISSING, Outcome.RATE_LIMITED, Outcome.CANCELLED, "http_408", "http_429"}
)
HTTP_OUTCOME = re.compile(r"http_[0-9]{3}")


def http_outcome(status: int) -> str:
    """``http_404`` and friends: one outcome per HTTP status."""
    return f"http_{status}"


#: Failures a re-run does not try again: the same URL would give the same answer.
PERMANENT_OUTCOMES = frozenset(
    {Outcome.EMPTY, Outcome.NOT_IMAGE, Outcome.CORRUPT, Outcome.TOO_SMALL, Outcome.TOO_LARGE, Outcome.PLACEHOLDER,
     Outcome.WRONG_SIZE}
)


def is_outcome(value: str) -> bool:
    """Whether ``value`` is one of the outcomes (an Outcome, or ``http_NNN``)."""
    return value in Outcome._value2member_map_ or HTTP_OUTCOME.fullmatch(value) is not None


def is_permanent(outcome: str) -> bool:
    """Whether a re-run should skip an image with this outcome (404, 410, not an image, ...)."""
    if outcome in PERMANENT_OUTCOMES:
        return True
    return outcome.startswith("http_4") and outcome not in TRANSIENT_OUTCOMES


def is_transient(outcome: str) -> bool:
    """Whether a re-run should try an image with this outcome again."""
    if outcome in TRANSIENT_OUTCOMES:
        return True
    return outcome.startswith("http_5")


class GroupFull(IgnoreRequest):
    """The image's class was filled by other downloads; this one is no longer needed."""


class HostDown(Exception):
    """A request not made: its host is down (``dataset/hosts.py``); the message names it and why."""

    def __init__(self, host: str, why: str):
        super().__init__(f"{host} is down ({why}); not asked")
        self.host = host


class ImageRejected(Exception):
    """An image failed a check; ``outcome`` is the manifest's word for why."""

    def __init__(self, outcome: str, detail: str = ""):
        super().__init__(f"{outcome}: {detail}" if detail else outcome)
        self.outcome = outcome
        self.detail = detail
        self.sha256: str | None = None  # of the bytes refused, when they were read


_BY_EXCEPTION: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (
    ((HostDown,), Outcome.HOST_DOWN),
    ((DownloadTimeoutError, twisted_error.TimeoutError, TimeoutError), Outcome.TIMEOUT),
    ((ResponseDataLossError,), Outcome.TRUNCATED),
    ((GroupFull,), Outcome.SURPLUS),
    ((DownloadCancelledError,), Outcome.CANCELLED),  # cancelled, not bad: a re-run tries it again
    (
        (
            DownloadConnectionRefusedError,
            CannotResolveHostError,
            DownloadFailedError,
            twisted_error.ConnectError,
            twisted_error.ConnectionLost,
            twisted_error.ConnectionDone,
            ConnectionError,
        ),
        Outcome.CONNECTION,
    ),
    ((IgnoreRequest,), Outcome.FILTERED),
)


def classify(exc: BaseException | None) -> tuple[str, str]:
    """The outcome and a one-line detail for an exception raised while fetching an image.

    Scrapy's media pipeline hides the real reason in ``__context__`` behind a bare
    ``FileException``; this walks the chain so the manifest names the real cause. (None: a
    Twisted ``Failure``'s value, which its types allow to be None, is an error.)
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ImageRejected):
            return current.outcome, current.detail
        text = str(current)
        if isinstance(current, DownloadCancelledError) and "max size" in text:  # Scrapy says why only in words
            return Outcome.TOO_LARGE, _one_line(current)  # the Content-Length is over DOWNLOAD_MAXSIZE
        if type(current) is IgnoreRequest:
            if "DOWNLOAD_MAXSIZE" in text:  # a body, or a gzip bomb, over the size limit
                return Outcome.TOO_LARGE, _one_line(current)
            if "redirection" in text:
                return Outcome.REDIRECT, _one_line(current)
        for types, outcome in _BY_EXCEPTION:
            if isinstance(current, types):
                return outcome, _one_line(current)
        current = current.__cause__ or current.__context__
    return Outcome.ERROR, _one_line(exc)


def _one_line(exc: BaseException | None) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:300] if first else type(exc).__name__
