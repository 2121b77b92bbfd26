"""What never leaves the process: a token, a password. Nothing a run writes or logs holds one.

Two nets, both always on:

- **By form**: a command line is recorded with the value of every secret argument or setting
  hidden, however it was written (``-a token=X``, ``-atoken=X``, ``--token X``, ``--token=X``,
  ``-s ISIC_TOKEN=X``, ``-sISIC_TOKEN=X``, ``--set ISIC_TOKEN=X``, ``--set=ISIC_TOKEN=X``), and the
  password of every URL (``scheme://user:password@host``) is ``***`` wherever a text is recorded.
- **By value**: the secrets in effect (the token from the argument, the setting or
  ``$ISIC_TOKEN``, every secret setting, the password of every URL given as a setting or an
  argument) are remembered, and replaced wherever they appear in a log record, in
  ``dataset.json``, in ``.lock`` or in an ``error:`` line, whatever the text around them (those
  of 8 characters or more: a shorter one would mask ordinary words).

The Python API hands its child every secret through the environment (``ISIC_TOKEN``,
``DATASET_SPIDERS_SETTINGS``, ``DATASET_SPIDERS_ARGUMENTS``), never on its command line;
``take_environment`` reads those back in the crawl command.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import unquote

SECRET_ARGUMENTS = frozenset({"token"})
SECRET_SETTINGS = frozenset({"ISIC_TOKEN"})
#: Other settings whose value is a secret by their name (``AWS_SECRET_ACCESS_KEY`` for an s3 store...).
_SECRET_SETTING_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|PRIVATE_KEY|API_KEY|ACCESS_KEY", re.I)
HIDDEN = "(given; not recorded)"
MASK = "***"
#: The environment variables the Python API passes secrets in (JSON objects, NAME -> text).
ENV_SETTINGS = "DATASET_SPIDERS_SETTINGS"
ENV_ARGUMENTS = "DATASET_SPIDERS_ARGUMENTS"
SETTING_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_MIN_LENGTH = 8  # a shorter "secret" is not looked for in free text: it would mask ordinary words ("expired")

# scheme://userinfo@ : the userinfo runs to the last "@" before the path, query or fragment
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s@]*(?:@[^/?#\s@]*)*)@")
# a command word carrying a NAME=VALUE: -a/-s attached, --set=/--se=..., or the word after -a/-s
_NAMED = re.compile(r"(?P<option>-a|-s|--s(?:e(?:t)?)?=)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)", re.S)
_LONG_OPTION = re.compile(r"(?P<option>--[A-Za-z][A-Za-z0-9_-]*)(?P<equals>=(?P<value>.*))?", re.S)

_known: set[str] = set()


def secret_setting(name: str) -> bool:
    """Whether a setting's value is a secret by its name."""
    return name in SECRET_SETTINGS or bool(_SECRET_SETTING_NAME.search(name))


def _secret_option(option: str) -> bool:
    """``--token`` (or an abbreviation argparse accepts, ``--tok``), in either spelling."""
    name = option[2:].replace("-", "_")
    return len(name) >= 3 and any(secret.startswith(name) for secret in SECRET_ARGUMENTS)


def url_passwords(text: str) -> list[str]:
    """The passwords in the URLs of ``text`` (a user alone, as in ``redis://TOKEN@host``, counts
    as one), as written and decoded."""
    found = []
    for match in _URL_USERINFO.finditer(text):
        user, colon, password = match["userinfo"].partition(":")
        secret = password if colon else user
        if secret:
            found += [secret, unquote(secret)]
    return found


def hide_url_passwords(text: str) -> str:
    """``redis://:***@host``, ``https://user:***@host``; a user alone is hidden whole (``***@``)."""
    def hidden(match: re.Match[str]) -> str:
        user, colon, password = match["userinfo"].partition(":")
        if colon:
            return f"{match['scheme']}{user}:{MASK if password else ''}@"
        return f"{match['scheme']}{MASK if user else ''}@"

    return _URL_USERINFO.sub(hidden, text)


def remember(values: Iterable[Any]) -> None:
    """Secrets in effect, to be replaced wherever they appear in what the process writes."""
    for value in values:
        if isinstance(value, str):
            value = value.strip()
            if len(value) >= _MIN_LENGTH:
                _known.add(value)


def scrub(text: str) -> str:
    """``text`` without a known secret or a URL's password."""
    text = hide_url_passwords(text)
    for secret in sorted(_known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scrubbed(value: Any) -> Any:
    """A JSON-like value with every string in it scrubbed (keys too)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrubbed(k): scrubbed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrubbed(v) for v in value]
    return value


def redacted_command(words: Iterable[Any]) -> list[str]:
    """A command line with every secret value hidden, whatever form it was given in."""
    out: list[str] = []
    hide_next = False  # the word after --token
    for word in map(str, words):
        if hide_next:
            out.append(HIDDEN)
            hide_next = False
            continue
        long = _LONG_OPTION.fullmatch(word)
        named = _NAMED.fullmatch(word)
        if long and _secret_option(long["option"]):
            out.append(f"{long['option']}={HIDDEN}" if long["equals"] else word)
            hide_next = not long["equals"]
        elif named and _secret_name(named["name"]):
            out.append(f"{named['option'] or ''}{named['name']}={HIDDEN}")
        else:
            out.append(scrub(word))
    return out


def _secret_name(name: str) -> bool:
    return name.lower() in SECRET_ARGUMENTS or secret_setting(name.upper())


def hidden_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Spider arguments as recorded: a secret one given is HIDDEN, every text scrubbed."""
    return {k: HIDDEN if k in SECRET_ARGUMENTS and v else scrubbed(v) for k, v in arguments.items()}


def hidden_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as recorded: a secret one is HIDDEN, every text scrubbed."""
    return {k: HIDDEN if secret_setting(str(k)) else scrubbed(v) for k, v in settings.items()}


def protect(settings: Any, arguments: dict[str, Any]) -> None:
    """Remember the secrets of this run (its settings, its spider arguments, ``$ISIC_TOKEN``)
    and have every log record scrubbed from now on. Idempotent."""
    found: list[Any] = [os.environ.get("ISIC_TOKEN")]
    for name, value in arguments.items():
        found += [value] if name in SECRET_ARGUMENTS else url_passwords(str(value))
    for name, value in settings.copy_to_dict().items():
        if secret_setting(str(name)):
            found.append(value if isinstance(value, str) else None)
        if isinstance(value, str):
            found += url_passwords(value)
    remember(found)
    _scrub_the_log()


def take_environment(settings: Any, spider_arguments: MutableMapping[str, Any]) -> str | None:
    """Settings (``DATASET_SPIDERS_SETTINGS``, at command-line priority) and spider arguments
    (``DATASET_SPIDERS_ARGUMENTS``) the Python API passed through the environment, each a JSON
    object of texts; both variables are then removed from this process's environment (nothing it
    starts inherits them). Returns why they cannot be used, or None."""
    for variable in (ENV_SETTINGS, ENV_ARGUMENTS):
        raw = os.environ.pop(variable, None)
        if raw is None:
            continue
        try:
            given = json.loads(raw)
        except ValueError:
            given = None
        if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
            return f"{variable} must be a JSON object of texts (NAME: VALUE)"
        if variable == ENV_SETTINGS:
            bad = [name for name in given if not SETTING_NAME.fullmatch(name)]
            if bad:
                return f"{variable}: {bad[0]!r} is not a setting name (NAME_LIKE_THIS)"
            settings.setdict(given, priority="cmdline")
        else:
            spider_arguments.update(given)
    return None


class _ScrubbingFactory:
    """A log record factory: each record's message (and traceback) with no secret in it. Records
    are scrubbed where they are made, so every handler (stderr, ``LOG_FILE``) and every formatter
    sees them clean, however often Scrapy reinstalls its handler."""

    def __init__(self, make: Any):
        self.make = make

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot be formatted: left for logging to report
            return record
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            clean = scrub(text)
            if clean != text:
                record.exc_text = clean
        return record


def _scrub_the_log() -> None:
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _ScrubbingFactory):
        logging.setLogRecordFactory(_ScrubbingFactory(factory))
