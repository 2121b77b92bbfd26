"""A subset of the ISIC v2 search DSL (``images/search/?query=``), reference §2.4.

``parse_query(q)`` returns a predicate over a *flat* record dict (reserved fields
plus ``metadata.acquisition`` and ``metadata.clinical`` merged), or raises
:class:`QueryError` for anything the real server could not parse.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]

BOOL_FIELDS = frozenset(
    [
        "public",
        "blurry",
        "hairy",
        "marker_pen",
        "personal_hx_mm",
        "family_hx_mm",
        "melanocytic",
        "mel_ulcer",
        "concomitant_biopsy",
    ]
)
NUMBER_FIELDS = frozenset(["age_approx", "clin_size_long_diam_mm", "mel_thick_mm"])
KEYWORD_FIELDS = frozenset(
    [
        "isic_id",
        "copyright_license",
        "sex",
        "diagnosis_confirm_type",
        "image_type",
        "dermoscopic_type",
        "tbp_tile_type",
        "mel_mitotic_index",
        "anatom_site_special",
        "color_tint",
        "patient_id",
        "lesion_id",
        "rcm_case_id",
        "image_manipulation",
        "fitzpatrick_skin_type",
    ]
    + [f"diagnosis_{i}" for i in range(1, 6)]
    + [f"anatom_site_{i}" for i in range(1, 6)]
)
_IMAGE_TYPE_ALIASES = {"clinical": "clinical: close-up", "overview": "clinical: overview"}

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<paren>[()])
    | (?P<op>AND|OR)(?=[\s()]|$)
    | (?P<neg>-)(?=[A-Za-z(])
    | (?P<field>[A-Za-z_][A-Za-z0-9_]*):(?P<value>"[^"]*"|[\[{][^\]}]*[\]}]|[^\s()"]+)
    )""",
    re.VERBOSE,
)
_RANGE = re.compile(r"([\[{])\s*(\S+)\s+TO\s+(\S+)\s*([\]}])")
_BARE = re.compile(r"[A-Za-z0-9*_-]+")


class QueryError(ValueError):
    """The query cannot be parsed (the server answers HTTP 400)."""


def _tokenize(query: str) -> list[tuple[str, str, str]]:
    """Tokens as ``(kind, text, value)``; kind is paren, op, neg or term."""
    tokens: list[tuple[str, str, str]] = []
    pos = 0
    while query[pos:].strip():
        m = _TOKEN.match(query, pos)
        if not m:
            raise QueryError(f"unexpected input at {pos}: {query[pos:]!r}")
        pos = m.end()
        if m["paren"]:
            tokens.append(("paren", m["paren"], ""))
        elif m["op"]:
            tokens.append(("op", m["op"], ""))
        elif m["neg"]:
            tokens.append(("neg", "-", ""))
        else:
            tokens.append(("term", m["field"], m["value"]))
    return tokens


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise QueryError(f"not a number: {text!r}") from None


def _term(field: str, raw: str) -> Predicate:
    """Predicate for one ``field:value`` term."""
    if field not in BOOL_FIELDS | NUMBER_FIELDS | KEYWORD_FIELDS:
        raise QueryError(f"unknown field {field!r}")
    if raw == "*":
        return lambda r: r.get(field) is not None
    if field in BOOL_FIELDS:
        if raw not in ("true", "false"):
            raise QueryError(f"not a boolean: {raw!r}")
        wanted = raw == "true"
        return lambda r: r.get(field) is wanted
    if field in NUMBER_FIELDS:
        return _number_term(field, raw)
    if raw.startswith('"'):
        exact = raw[1:-1]
        return lambda r: r.get(field) == exact
    if not _BARE.fullmatch(raw):
        raise QueryError(f"bad value {raw!r}")
    if field == "image_type":
        raw = _IMAGE_TYPE_ALIASES.get(raw, raw)
    if "*" in raw:
        pattern = re.compile(".*".join(re.escape(part) for part in raw.split("*")), re.DOTALL)
        return lambda r: isinstance(r.get(field), str) and pattern.fullmatch(r[field]) is not None
    return lambda r: r.get(field) == raw


def _number_term(field: str, raw: str) -> Predicate:
    m = _RANGE.fullmatch(raw)
    if not m:
        wanted = _number(raw)
        return lambda r: _is_num(r.get(field)) and r[field] == wanted
    low = None if m[2] == "*" else _number(m[2])
    high = None if m[3] == "*" else _number(m[3])
    incl_low, incl_high = m[1] == "[", m[4] == "]"

    def in_range(r: dict[str, Any]) -> bool:
        v = r.get(field)
        if not _is_num(v):
            return False
        if low is not None and (v < low if incl_low else v <= low):
            return False
        return high is None or (v <= high if incl_high else v < high)

    return in_range


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Parser:
    """Recursive descent: or := and (OR and)* ; and := unary ([AND] unary)* ;
    unary := [-] (term | '(' or ')')."""

    def __init__(self, tokens: list[tuple[str, str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> tuple[str, str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str, str]:
        tok = self.peek()
        if tok is None:
            raise QueryError("unexpected end of query")
        self.pos += 1
        return tok

    def parse_or(self) -> Predicate:
        parts = [self.parse_and()]
        while self.peek() == ("op", "OR", ""):
            self.take()
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else (lambda r: any(p(r) for p in parts))

    def parse_and(self) -> Predicate:
        parts = [self.parse_unary()]
        while (tok := self.peek()) is not None:
            if tok == ("op", "AND", ""):
                self.take()
            elif tok[0] not in ("term", "neg") and tok[1] != "(":
                break
            parts.append(self.parse_unary())
        return parts[0] if len(parts) == 1 else (lambda r: all(p(r) for p in parts))

    def parse_unary(self) -> Predicate:
        kind, text, value = self.take()
        if kind == "neg":
            inner = self.parse_unary()
            return lambda r: not inner(r)
        if kind == "term":
            return _term(text, value)
        if text == "(":
            inner = self.parse_or()
            if self.take()[1] != ")":
                raise QueryError("expected ')'")
            return inner
        raise QueryError(f"unexpected {text!r}")


def parse_query(query: str) -> Predicate:
    """Compile ``query`` (already URL-decoded) into a predicate; empty matches all."""
    tokens = _tokenize(query)
    if not tokens:
        return lambda r: True
    parser = _Parser(tokens)
    predicate = parser.parse_or()
    if parser.peek() is not None:
        raise QueryError(f"unexpected {parser.peek()!r}")
    return predicate
