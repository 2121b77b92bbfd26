"""ImageNet's URL lists: the per-synset ``geturls`` answers, fall11-style list files, and the 1000 ILSVRC classes.

Facts and sources: shared/reference/imagenet.md (sections 1, 3 and 5).
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any

WNID = re.compile(r"n[0-9]{8}")
ERROR_BODIES = ("The synset is not ready yet. Please stay tuned!", "Invalid url!")
SECOND_LEVEL = frozenset({"co", "com", "ac", "org", "net", "gov", "edu", "ne", "or"})
_BOM = b"\xef\xbb\xbf"
_NON_ASCII = re.compile(rb"[\x80-\xff]")
_AUTHORITY = re.compile(r"[^/?#\\]*")  # what precedes the path; a backslash ends it too, as in browsers


@dataclass(frozen=True, slots=True)
class Candidate:
    """One image URL of a class; ``image_id`` names the file and stays the same from run to run."""

    image_id: str  # "<wnid>_<n>" when the source gives it, else url_image_id(wnid, url)
    url: str


class NoUrls(Exception):
    """The URL list endpoint answered one of its known error bodies instead of a list."""


def valid_wnid(value: Any) -> bool:
    return isinstance(value, str) and WNID.fullmatch(value) is not None


def decode_url_bytes(raw: bytes) -> str:
    """UTF-8 when it is; else ASCII kept and other bytes percent-encoded, so the server still gets the original bytes.

    fall11_urls.txt is not clean UTF-8, and latin-1 or ``errors='ignore'`` would send a different URL.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _NON_ASCII.sub(lambda m: b"%%%02X" % m[0][0], raw).decode("ascii")


def url_image_id(wnid: str, url: str) -> str:
    """An id from the whole URL: basenames collide (every Flickr server has its ``<id>_<secret>.jpg``)."""
    return f"{wnid}_u{hashlib.sha1(url.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


def _http_bytes(url: bytes) -> bool:
    head = url[:8].lower()
    return (head.startswith(b"http://") and len(url) > 7) or (head == b"https://" and len(url) > 8)


def _id_wnid(image_id: bytes) -> bytes | None:
    """The wnid of a ``<wnid>_<n>`` id, checked without a regex (this runs once per line of a 14M-line file)."""
    if (
        len(image_id) > 10
        and image_id[9:10] == b"_"
        and image_id[:1] == b"n"
        and image_id[1:9].isdigit()  # bytes.isdigit: ASCII digits only
        and image_id[10:].isdigit()
        and len(image_id) <= 40  # a file name, not an essay
    ):
        return image_id[:9]
    return None


# --- geturls answers ------------------------------------------------------------------------


def parse_geturls(body: bytes, wnid: str) -> list[Candidate]:
    """The candidates of a ``geturls`` (one URL a line) or ``geturls.getmapping`` (``<wnid>_<n> URL``) answer.

    Raises NoUrls when the body is one of ERROR_BODIES. Ids that belong to another class, or repeat, fall back to
    ``url_image_id`` so that two candidates never share a file name.
    """
    stripped = body.strip().removeprefix(_BOM).strip()
    for error in ERROR_BODIES:
        if stripped == error.encode("ascii"):
            raise NoUrls(f"{wnid}: the URL list endpoint answered {error!r}")
    out: list[Candidate] = []
    seen_urls: set[str] = set()
    seen_ids: set[str] = set()
    for line in stripped.splitlines():
        line = line.strip()
        image_id: str | None = None
        if _http_bytes(line):
            raw_url = line
        else:
            parts = line.split(None, 1)
            if len(parts) != 2 or not _http_bytes(parts[1].strip()):
                continue
            raw_url = parts[1].strip()
            if _id_wnid(parts[0]) == wnid.encode("ascii", "replace"):
                image_id = parts[0].decode("ascii")
        url = decode_url_bytes(raw_url)
        if url in seen_urls:
            continue
        if image_id is None or image_id in seen_ids:
            image_id = url_image_id(wnid, url)
        seen_urls.add(url)
        seen_ids.add(image_id)
        out.append(Candidate(image_id, url))
    return out


# --- class lists ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _ilsvrc1000() -> tuple[tuple[str, str], ...]:
    text = files("dataset_spiders.data").joinpath("ilsvrc1000.tsv").read_text(encoding="utf-8")
    rows = (line.split("\t", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return tuple((wnid, lemmas) for wnid, lemmas in rows)


def ilsvrc1000() -> list[tuple[str, str]]:
    """(wnid, lemmas) of the ILSVRC-2012 classes in class-index order, from the tsv shipped with the package."""
    return list(_ilsvrc1000())


def first_lemma(lemmas: str) -> str:
    return lemmas.split(",", 1)[0].strip()


def safe_label(label: str) -> str:
    """The first lemma as a folder name. Not unique ("crane" is two ILSVRC classes), so pair it with the wnid."""
    name = unicodedata.normalize("NFC", first_lemma(label))
    name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
    name = re.sub(r"_{2,}", "_", name).strip("._-")[:60].strip("._-")
    return name or "class"


# --- hosts ----------------------------------------------------------------------------------


def _host(url: str) -> str | None:
    """The lower-cased host of an absolute URL, with plain string operations (urlsplit is slow per line)."""
    scheme, sep, rest = url.partition("://")
    return _authority_host(rest) if sep and scheme else None


def _authority_host(rest: str) -> str | None:
    authority = _AUTHORITY.match(rest)  # always matches, maybe empty
    netloc = (authority[0] if authority else "").rpartition("@")[2]
    if netloc.startswith("["):  # IPv6 literal
        return netloc[1:].partition("]")[0].lower() or None
    return netloc.partition(":")[0].rstrip(".").lower() or None


def _domain_test(domains: Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    names = frozenset(d.strip().strip(".").lower() for d in domains) - {""}
    return names, tuple("." + d for d in names)


def _host_in(host: str | None, names: frozenset[str], suffixes: tuple[str, ...]) -> bool:
    return host is not None and (host in names or host.endswith(suffixes))


def host_matches(url: str, domains: Iterable[str]) -> bool:
    """Whether the URL's host is one of ``domains`` or below one (``farm3.static.flickr.com`` is below flickr.com)."""
    return _host_in(_host(url), *_domain_test(domains))


def registrable_domain(host: str) -> str:
    """An approximate eTLD+1 (``bbc.co.uk``, ``flickr.com``), close enough to group requests by site."""
    host = host.strip().rstrip(".").lower()
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host
    except ValueError:
        pass
    labels = host.split(".")
    if len(labels) >= 3 and labels[-2] in SECOND_LEVEL and len(labels[-1]) == 2:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


# --- list files -----------------------------------------------------------------------------
# A line is ``<wnid>_<n>``, whitespace (TAB in fall11, a space from getmapping), then the URL up to the line's end.
# _parse_line and _COUNT_LINE implement that same grammar; the file is read in blocks split at newlines, which
# keeps memory bounded (one block, plus one line if a line is longer) and costs far less per line than readline.

_BLOCK = 1 << 20
_COUNT_LINE = re.compile(
    rb"^[ \t\v\f\r]*(n[0-9]{8})_[0-9]+[ \t\v\f\r]+(?i:https?)://(?=[ \t\v\f\r]*\S)([^/?#\\\n]*)", re.M
)


_MAX_LINE = 1 << 20


def _blocks(path: str) -> Iterator[bytes]:
    """The file in blocks of whole lines (the last may lack its newline), without a leading UTF-8 BOM."""
    from .url_lists import open_url_list  # (it needs nothing of this module)

    with open_url_list(path) as f:
        rest = f.read(len(_BOM))
        rest = b"" if rest == _BOM else rest
        while block := f.read(_BLOCK):
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest = block[cut:]
            if cut:
                yield block[:cut]
            elif len(rest) > _MAX_LINE:  # no line break in a megabyte: not a URL list; drop what we have
                rest = b""
        if rest:
            yield rest


def _parse_line(line: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(wnid, image id, URL) of a well-formed line, else None."""
    parts = line.split(None, 1)
    if len(parts) != 2:
        return None
    wnid = _id_wnid(parts[0])
    url = parts[1].rstrip()
    return (wnid, parts[0], url) if wnid is not None and _http_bytes(url) else None


def iter_url_file(path: str) -> Iterator[tuple[str, Candidate]]:
    """(wnid, Candidate) for each usable line of a fall11_urls.txt-style file (or ``.gz``, ``.tgz``, ``.tar``)."""
    for block in _blocks(path):
        for line in block.split(b"\n"):
            if parsed := _parse_line(line):
                wnid, image_id, url = parsed
                yield wnid.decode("ascii"), Candidate(image_id.decode("ascii"), decode_url_bytes(url))


def scan_url_file(path: str, wnids: Collection[str], domains: Collection[str] | None,
                  listed: Counter[str] | None = None) -> dict[str, list[Candidate]]:
    """The candidates of the requested classes in file order, deduplicated by URL within a class.

    Every requested valid wnid is a key, with an empty list when the file has none (teddy bear is not in fall11).
    ``domains=None`` keeps every host. ``listed``, when given, counts the lines of each class before
    the host filter (a class the file never names has none: an unknown wnid).
    """
    wanted = {w.encode("ascii"): w for w in wnids if valid_wnid(w)}
    out: dict[str, list[Candidate]] = {w: [] for w in wanted.values()}
    seen: dict[str, set[str]] = {w: set() for w in wanted.values()}
    test = _domain_test(domains) if domains is not None else None
    for block in _blocks(path):
        # Only lines that start with a wanted wnid are parsed; the rest cost a slice and a set lookup.
        for line in [x for x in block.split(b"\n") if x.lstrip()[:9] in wanted]:
            parsed = _parse_line(line)
            if parsed is None:
                continue
            wnid = wanted[parsed[0]]
            url = decode_url_bytes(parsed[2])
            if listed is not None:
                listed[wnid] += 1
            if (test is not None and not _host_in(_host(url), *test)) or url in seen[wnid]:
                continue
            seen[wnid].add(url)
            image_id = parsed[1].decode("ascii")
            if image_id in seen[wnid]:  # a repeated id would name two files alike
                image_id = url_image_id(wnid, url)
            seen[wnid].add(image_id)
            out[wnid].append(Candidate(image_id, url))
    return out


def count_url_file(path: str, domains: Collection[str] | None) -> Counter[str]:
    """Usable URLs per wnid (host-filtered, not deduplicated), for choosing classes before a download."""
    counts: Counter[bytes] = Counter()
    test = _domain_test(domains) if domains is not None else None
    verdicts: dict[bytes, bool] = {}  # per distinct host: most lines share a few Flickr hosts
    for block in _blocks(path):
        pairs = Counter(_COUNT_LINE.findall(block))
        for (wnid, netloc), n in pairs.items():
            if test is not None and netloc not in verdicts:
                if len(verdicts) > 100_000:
                    verdicts.clear()
                verdicts[netloc] = _host_in(_authority_host(decode_url_bytes(netloc.rstrip())), *test)
            if test is None or verdicts[netloc]:
                counts[wnid] += n
    return Counter({w.decode("ascii"): n for w, n in counts.items()})


def choose_classes(counts: Mapping[str, int], k: int, min_urls: int, seed: int | None) -> list[str]:
    """k random classes with at least ``min_urls`` URLs, the same ones for the same seed; returned sorted."""
    if k < 0:
        raise ValueError(f"cannot choose {k} classes")
    eligible = sorted(w for w, n in counts.items() if n >= min_urls)
    if len(eligible) < k:
        have = "1 class has" if len(eligible) == 1 else f"{len(eligible)} classes have"
        raise ValueError(f"only {have} at least {min_urls} usable URLs; asked for {k}")
    return sorted(random.Random(seed).sample(eligible, k))
