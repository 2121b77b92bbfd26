"""Spider arguments as one typed, validated model: errors and documentation from one place.

A spider's ``Params`` is a frozen dataclass whose fields carry an ``arg(...)`` description:
how to parse the text a user typed after ``-a`` (a ``Parser``, which also says what kind of
value it takes, for ``--help``), a default and a help line. ``parse_args`` turns ``-a`` strings
into the model or raises ``ArgumentError`` with one line naming the argument;
``markdown_table`` renders the same fields for the README, ``cli.py`` for ``--help``.

(pydantic models, with scrapy-spider-metadata's ``Args``, were weighed and not taken: every
field here has parsing of its own, ``all`` for a count, an empty value for "not given", ``yes``
and ``on`` for true, comma lists, class files read and checked, so each would need a validator
of ours anyway; pydantic's errors are several lines where ours are one naming the argument; and
two runtime dependencies would come for what fits in this file.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


class Model(Protocol):
    """A dataclass, as ``dataclasses.fields`` takes it: what ``parse_args`` builds."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]


class ArgumentModel(Model, Protocol):
    """What the spiders' base class asks of its ``Params``: the folder, and how a recorded run's
    arguments read as a selection (``dataset/selection.py``). Written down so that mypy sees
    them through ``DatasetSpider.Params``, whose subclasses each name their own model."""

    @property
    def out_dir(self) -> str: ...

    @staticmethod
    def selection_of(arguments: Mapping[str, Any]) -> dict[str, Any]: ...


M = TypeVar("M", bound=Model)


class ArgumentError(ValueError):
    """A spider argument is wrong; the message is one line that names it."""

    def __init__(self, message: str):
        # What the user typed may hold line breaks or control characters: show them escaped.
        super().__init__("".join(c if c.isprintable() else repr(c)[1:-1] for c in message))


@dataclass(frozen=True)
class Parser(Generic[T]):
    """Turns what a user gave for an argument into its type, or raises ValueError; ``metavar``
    and ``kind`` say what it takes, for ``--help`` (``N|all``, "a whole number >= 1, or all"),
    ``choices`` the only values it accepts, if so (shown as ``{a,b}``)."""

    parse: Callable[[Any], T]
    metavar: str
    kind: str
    choices: tuple[str, ...] = ()

    def __call__(self, value: Any) -> T:
        return self.parse(value)


def arg(parse: Parser[Any], default: Any, help: str, *, aliases: tuple[str, ...] = (), shown: str = "") -> Any:
    """A model field: ``parse`` turns the user's value into the field's type or raises ValueError."""
    meta = {"parse": parse, "help": help, "aliases": aliases, "shown": shown}
    return dataclasses.field(default=default, metadata=meta)


def parse_args(model: type[M], raw: Mapping[str, Any]) -> M:
    """Build ``model`` from ``-a`` arguments; unknown names and bad values raise ArgumentError."""
    fields = {f.name: f for f in dataclasses.fields(model)}
    names = {alias: f.name for f in fields.values() for alias in f.metadata.get("aliases", ())}
    names.update({name: name for name in fields})
    values: dict[str, Any] = {}
    for given, value in raw.items():
        name = names.get(given)
        if name is None:
            known = ", ".join(sorted(fields))
            raise ArgumentError(f"unknown argument {given!r} (known: {known})")
        if name in values:
            raise ArgumentError(f"argument {name!r} was given twice")
        try:
            values[name] = fields[name].metadata["parse"](value)
        except (ValueError, TypeError) as exc:
            raise ArgumentError(f"{given}: {exc}") from None
    try:
        return model(**values)
    except (ValueError, TypeError) as exc:
        raise ArgumentError(str(exc)) from None


def markdown_table(model: type) -> str:
    """The arguments of ``model`` as a Markdown table: argument, meaning, default."""
    rows = ["| argument | meaning | default |", "|---|---|---|"]
    for f in dataclasses.fields(model):
        names = " / ".join(f"`{n}`" for n in (f.name, *f.metadata.get("aliases", ())))
        value = str(f.default).lower() if isinstance(f.default, bool) else f.default
        default = f.metadata.get("shown") or f"`{value}`"
        rows.append(f"| {names} | {f.metadata['help']} | {default} |")
    return "\n".join(rows)


# Parsers: each takes what the user gave (text from the command line, or a Python value when
# the spider is started from code) and returns the typed value, or raises ValueError.


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if "\x00" in text:
        raise ValueError("must not contain a NUL byte")
    return text


def whole_number(minimum: int = 0, *, all_word: str | None = None) -> Parser[int | None]:
    """A whole number >= minimum; ``all_word`` (e.g. 'all') may stand for no limit (None)."""

    def parse(value: Any) -> int | None:
        if isinstance(value, bool):
            raise ValueError(f"expected a whole number, got {value!r}")
        text = _text(value).strip()
        if all_word and text.lower() == all_word:
            return None
        try:
            number = int(text)
        except ValueError:
            extra = f" or {all_word!r}" if all_word else ""
            raise ValueError(f"expected a whole number >= {minimum}{extra}, got {text!r}") from None
        if number < minimum:
            raise ValueError(f"expected a whole number >= {minimum}, got {number}")
        return number

    kind = f"a whole number >= {minimum}" + (f", or {all_word}" if all_word else "")
    return Parser(parse, f"N|{all_word}" if all_word else "N", kind)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


boolean = Parser(_boolean, "true|false", "a flag: alone it means true")


def choice(*options: str) -> Parser[str]:
    def parse(value: Any) -> str:
        text = _text(value).strip().lower()
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {_text(value)!r}")
        return text

    return Parser(parse, "{" + ",".join(options) + "}", f"one of {', '.join(options)}", options)


def optional(parse: Parser[T]) -> Parser[T | None]:
    """``parse``, except that an empty value means 'not given'."""

    def wrapped(value: Any) -> T | None:
        return None if value is None or _text(value).strip() == "" else parse(value)

    return Parser(wrapped, parse.metavar, parse.kind, parse.choices)


text = Parser(_text, "TEXT", "text")


def _path(value: Any) -> str:
    folder = _text(value).strip()
    if not folder:
        raise ValueError("expected a folder path, got an empty value")
    return folder


path = Parser(_path, "DIR", "a folder")


def _http_url(value: Any) -> str:
    url = _text(value).strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s):// URL, got {url!r}")
    return url.rstrip("/")


http_url = Parser(_http_url, "URL", "an http(s):// URL")


def _int_list(value: Any) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        items = [v.strip() for v in _text(value).split(",") if v.strip()]
    numbers = []
    for item in items:
        if not item.isdigit():
            raise ValueError(f"expected comma-separated whole numbers, got {item!r}")
        numbers.append(int(item))
    return tuple(dict.fromkeys(numbers))


int_list = Parser(_int_list, "ID,...", "comma-separated whole numbers")
