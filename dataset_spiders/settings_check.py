"""Settings are checked before a run starts, so a wrong one is one line, never a traceback.

Every setting of ours (``settings.py``'s "ours" ones and the few we read of Scrapy's), ``LOG_LEVEL``,
and any Scrapy setting given on the command line whose default is a number, a boolean, a list or
a dict must read as the code reads it (``getint``, ``getfloat``, ``getbool``, ``getlist``,
``getdict``) and lie in its range. ``check_settings`` raises SettingError, whose message is
``setting NAME: expected ..., got '...'``; the commands print it as ``error: ...`` and exit 2,
before any folder or file is made.
"""

from __future__ import annotations

import logging
import math
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from scrapy.settings import SETTINGS_PRIORITIES, default_settings


class SettingError(ValueError):
    """A setting cannot be used as it is; the message is one line naming it."""


@dataclass(frozen=True)
class Rule:
    """How the code reads a setting (a ``Settings`` getter) and what it accepts of the result."""

    getter: str  # "getint", "getfloat", "getbool", "getlist", "getdict" or "get"
    accepts: Callable[[Any], bool]
    expected: str  # what it takes, in words: "a whole number >= 0"
    why: Callable[[Any], str | None] = lambda value: None  # more words on a refused value, if any


def whole(low: int = 0, high: int | None = None) -> Rule:
    text = f"a whole number from {low} to {high}" if high is not None else f"a whole number >= {low}"
    return Rule("getint", lambda n: n >= low and (high is None or n <= high), text)


def number(low: float = 0, *, above: bool = False) -> Rule:
    """A finite number >= ``low`` (> with ``above``)."""
    return Rule("getfloat", lambda x: math.isfinite(x) and (x > low if above else x >= low),
                f"a number {'>' if above else '>='} {low:g}")


BOOLEAN = Rule("getbool", lambda value: True, "true or false")


def listed(item: Callable[[str], str | None], expected: str) -> Rule:
    """A list (``-s NAME=a,b``) whose every item ``item`` finds no fault with (it says the fault);
    empty items (a trailing comma) are not looked at."""
    def fault(items: list[Any]) -> str | None:
        return next((f"{str(i)!r}: {why}" for i in items if str(i).strip() and (why := item(str(i).strip()))), None)

    return Rule("getlist", lambda items: fault(items) is None, expected, fault)


def _regex_fault(text: str) -> str | None:
    try:
        re.compile(text)
    except re.error as exc:
        return str(exc)
    return None


_DIGEST = re.compile(r"sha256:[0-9a-fA-F]{64}|sha1:[0-9a-fA-F]{40}|md5:[0-9a-fA-F]{32}|size:[0-9]+")


def _digest_fault(text: str) -> str | None:
    return None if _DIGEST.fullmatch(text) else "not sha256:, sha1: or md5: and its hex digest, nor size:<bytes>"


def _http_fault(text: str) -> str | None:
    parts = urlsplit(text.strip())
    return None if parts.scheme in ("http", "https") and parts.hostname else "not an http(s):// URL"


def _printable(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.isprintable())


HTTP_URL = Rule("get", lambda value: isinstance(value, str) and _http_fault(value) is None, "an http(s):// URL")
REDIS = Rule("get", lambda value: not value or (isinstance(value, str) and value.startswith(
    ("redis://", "rediss://", "unix://"))), "empty, or a redis://, rediss:// or unix:// URL")
PROGRESS = ("auto", "bar", "lines", "off", "false", "0", "none")

OURS: dict[str, Rule] = {
    "DATASET_CONTACT": Rule("get", _printable, "a URL or an e-mail address (no control characters)"),
    "PROGRESS": Rule("get", lambda value: str(value).lower() in PROGRESS, "one of auto, bar, lines, off"),
    "PROGRESS_INTERVAL": number(0),
    "PROGRESS_STALL_AFTER": number(0),
    "REPORT_HTML": BOOLEAN,
    "DISK_SPACE_CHECK": BOOLEAN,
    "IMAGENET_AVERAGE_IMAGE_BYTES": whole(0),
    "ISIC_API_URL": HTTP_URL,
    "ISIC_V1_API_URL": HTTP_URL,
    "IMAGENET_API_URL": HTTP_URL,
    "FLICKR_DOMAINS": listed(lambda host: None if re.fullmatch(r"[\w.-]+", host) else "not a host name",
                             "a list of host names"),
    "IMAGENET_ACTIVE_CLASSES": whole(1),
    "DATASET_MAX_IN_FLIGHT": whole(1),
    "DATASET_EXTRA_IN_FLIGHT": whole(0),
    "REDIS_URL": REDIS,
    "DATASET_WORKER_MODE": Rule("get", lambda value: isinstance(value, str) and bool(value.strip()),
                                "the dotted path of a class"),
    "DATASET_LEASE": number(0, above=True),
    "REDIS_RETRY_FOR": number(0),
    "IMAGES_DOWNLOAD_TIMEOUT": number(0),
    "IMAGES_CONNECT_TIMEOUT": number(0),
    "IMAGES_FIRST_BYTE_TIMEOUT": number(0),
    "HOSTS_DOWN_AFTER": whole(0),
    "HOSTS_DOWN_FOR": number(0),
    "HOSTS_UNPROVEN_CONCURRENCY": whole(0),
    "HOSTS_STALL_AFTER": number(0),
    "HOSTS_SHORT_PROBE_AFTER": number(0),
    "IMAGES_RETRY_TIMES": Rule("get", lambda value: value in (None, "") or _whole_text(value),
                               "empty, or a whole number >= 0"),
    "RETRY_AFTER_MAX": number(0),
    "RETRY_BACKOFF_BASE": number(0),
    "RETRY_BACKOFF_MAX": number(0),
    "ISIC_MAX_IDLE_PAGES": whole(0),
    "IMAGES_ENCODED_MAXSIZE": whole(0),
    "IMAGES_MEMORY_BUDGET": whole(0),
    "DATASET_COMMIT_BATCH": whole(1),
    "DATASET_COMMIT_DELAY": number(0),
    "DATASET_FLUSH_INTERVAL": number(0, above=True),
    "IMAGES_MIN_WIDTH": whole(0),
    "IMAGES_MIN_HEIGHT": whole(0),
    "IMAGES_MAX_PIXELS": whole(1),
    "PLACEHOLDER_URL_PATTERNS": listed(_regex_fault, "a list of regular expressions"),
    "IMAGES_HONOUR_NOAI": BOOLEAN,
    "PLACEHOLDER_LEARN_THRESHOLD": whole(0),
    "PLACEHOLDER_LEARN_IN_CLASS": whole(0),
    "DEDUPLICATE_IMAGES": BOOLEAN,
    "NEAR_DUPLICATES": BOOLEAN,
    "NEAR_DUPLICATE_DISTANCE": whole(0, 15),
    "PLACEHOLDER_DIGESTS": listed(_digest_fault, "a list of sha256:HEX, sha1:HEX, md5:HEX or size:BYTES"),
    "REPORT_THUMBNAILS_PER_GROUP": whole(0),
    "REPORT_THUMBNAILS_MAX": whole(0),
    "REPORT_THUMBNAIL_SIZE": whole(1, 4096),
    "ISIC_MASK_ARCHIVES": listed(_http_fault, "a list of http(s):// URLs"),
    "DATASET_VERBOSE_LOG": BOOLEAN,
}
# Scrapy 2.19 defaults that are whole numbers but are read with getfloat (a fraction is fine)
READ_AS_FLOAT = frozenset({"DNS_TIMEOUT", "DOWNLOAD_DELAY", "DOWNLOAD_TIMEOUT"})
LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


def _whole_text(value: Any) -> bool:
    try:
        return not isinstance(value, (bool, float)) and int(value) >= 0
    except (TypeError, ValueError):
        return False


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return f"'{text if len(text) <= 60 else text[:57] + '...'}'"


def check(settings: Any, name: str, rule: Rule) -> None:
    """SettingError unless setting ``name`` reads with ``rule.getter`` and ``rule`` accepts it."""
    raw = settings.get(name)
    try:
        value = getattr(settings, rule.getter)(name)
        ok = rule.accepts(value)
    except (TypeError, ValueError, OverflowError):
        value, ok = None, False
    if not ok:
        why = rule.why(value) if value is not None else None
        more = f" ({why})" if why else ""
        raise SettingError(f"setting {name}: expected {rule.expected}, got {_shown(raw)}{more}")


def scrapy_rule(name: str) -> Rule | None:
    """The getter a Scrapy setting's default calls for (None: not a number, boolean, list or dict)."""
    default = getattr(default_settings, name, None)
    if isinstance(default, bool):
        return BOOLEAN
    if isinstance(default, int) and name not in READ_AS_FLOAT:
        return Rule("getint", lambda n: True, "a whole number")
    if isinstance(default, (int, float)):
        return Rule("getfloat", math.isfinite, "a number")
    if isinstance(default, (list, tuple)):
        return Rule("getlist", lambda items: True, "a list")
    if isinstance(default, dict):
        return Rule("getdict", lambda items: True, "a dict (JSON)")
    return None


def check_log_level(settings: Any) -> None:
    """``LOG_LEVEL`` (``-L``): a level's name, in any case, or its number; set as logging takes it."""
    value = settings.get("LOG_LEVEL")
    text = str(value).strip().upper()
    level: str | int | None = text if text in logging.getLevelNamesMapping() else None
    if level is None and isinstance(value, (int, str)) and not isinstance(value, bool) and str(value).strip().isdigit():
        level = int(value)
    if level is None:
        raise SettingError(f"setting LOG_LEVEL: expected one of {', '.join(LEVELS)} or a number, got {_shown(value)}")
    if level != value:
        settings.set("LOG_LEVEL", level, priority=settings.getpriority("LOG_LEVEL") or "cmdline")


def check_settings(settings: Any, names: Iterable[str] | None = None) -> None:
    """Check ``names`` of ours (all of them by default), ``LOG_LEVEL`` and every Scrapy setting
    given on the command line (with ``names``: only those). Raises SettingError."""
    for name in OURS if names is None else names:
        check(settings, name, OURS[name])
    if names is not None:
        return
    check_log_level(settings)
    for name in list(settings):
        rule = None if name in OURS or name == "LOG_LEVEL" else scrapy_rule(name)
        if rule is not None and settings.getpriority(name) == SETTINGS_PRIORITIES["cmdline"]:
            check(settings, name, rule)


def refuse_bad_settings(settings: Any, names: Iterable[str] | None = None) -> None:
    """``check_settings``, or the one line ``error: setting ...`` on stderr and exit 2."""
    try:
        check_settings(settings, names)
    except SettingError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
