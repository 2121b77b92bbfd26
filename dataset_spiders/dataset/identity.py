"""What the crawl has seen of image content: kept images (to refuse duplicates) and images
served for many URLs of one site (to learn placeholders nobody listed).

Both are consulted by the core's keep-or-reject decision in the same synchronous step as the quota, so no
two downloads can race past a decision. Like the quota, this is state a scaled-out crawl
would share.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..sources.imagenet import registrable_domain

#: Registrable domains that are one site: Flickr serves its photos (and its placeholder) from both.
SITE_ALIASES = {"staticflickr.com": "flickr.com"}


def site_of(url: str | None) -> str:
    """The site of a URL: its host's registrable domain (``farm3.static.flickr.com`` -> ``flickr.com``)."""
    url = url or ""
    scheme_end = 7 if url.startswith("http://") else 8 if url.startswith("https://") else 0
    netloc = url[scheme_end:].split("/", 1)[0] if scheme_end else ""
    if netloc and not any(c in netloc for c in "@[?#\\"):
        host = netloc.partition(":")[0].lower()  # the common case, without urlsplit's cost
    else:
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:
            host = ""
    return _site_of_host(host)


@functools.lru_cache(maxsize=65536)
def _site_of_host(host: str) -> str:
    """Cached: a crawl meets few hosts many times, and every image asks."""
    domain = registrable_domain(host)
    return SITE_ALIASES.get(domain, domain)


@dataclass(frozen=True)
class KeptRef:
    image_id: str
    group: str
    path: str
    url: str


class SeenImages:
    """Kept images by sha256 and by pixel digest: a second copy anywhere is a duplicate."""

    def __init__(self) -> None:
        self.by_bytes: dict[str, KeptRef] = {}
        self.by_pixels: dict[str, KeptRef] = {}

    def duplicate_of(self, sha256: str | None, pixels: str | None) -> KeptRef | None:
        return self.by_bytes.get(sha256 or "") or self.by_pixels.get(pixels or "")

    def add_known(self, sha256: str | None, pixels: str | None, ref: KeptRef) -> None:
        if sha256:
            self.by_bytes.setdefault(sha256, ref)
        if pixels:
            self.by_pixels.setdefault(pixels, ref)

    def forget(self, sha256: str | None, pixels: str | None) -> None:
        self.by_bytes.pop(sha256 or "", None)
        self.by_pixels.pop(pixels or "", None)


class PlaceholderLearner:
    """The same bytes served for ``threshold`` or more distinct photo URLs of one site are a
    placeholder: it is never kept again, and the copies kept before are withdrawn. With
    ``in_class`` (imagenet: 2), that many distinct photo URLs of one site *within one class*
    suffice: a class lists each photo once, so two of its photos that are byte for byte the same
    are a stand-in, however each copy was classified (kept, or refused as a duplicate), and a
    small run learns what a larger one would. (Across classes one photo may be listed in two
    synsets: there, ``threshold`` URLs are needed.) A photo URL is its path: the same photo on
    another host of the site (``farm3.static.flickr.com`` and ``farm3.staticflickr.com``) or with
    another query string is no second photo.

    Almost every image is served for one URL and kept once: for those, the URL and the kept copy
    are held as themselves, and a set or a dict is made only when a second one comes (a million
    images would otherwise cost a million sets and a million dicts)."""

    def __init__(self, threshold: int, in_class: int = 0):
        self.threshold = threshold  # 0: off
        self.in_class = in_class if threshold else 0  # 0: no rule within a class
        self.urls: dict[tuple[str, str], str | set[str]] = {}  # (site, sha) -> "group\0path" seen
        self.kept: dict[tuple[str, str], _Kept | dict[str, _Kept]] = {}
        self.learned: set[tuple[str, str]] = set()

    def observe(self, site: str, sha256: str, url: str, group: str = "") -> list[_Kept] | None:
        """Count ``url`` (of class ``group``) for this content; when that makes it a placeholder,
        return the kept copies to withdraw (possibly none), else None."""
        if not self.threshold:
            return None
        key = (site, sha256)
        if key in self.learned:
            return []
        seen_as = f"{group}\0{_photo_path(url)}"
        seen = self.urls.get(key)
        if seen is None:
            self.urls[key] = seen = seen_as
        elif isinstance(seen, str):
            if seen != seen_as:
                self.urls[key] = seen = {seen, seen_as}
        else:
            seen.add(seen_as)
        if isinstance(seen, str) or not self._enough(seen, seen_as.split("\0", 1)[0]):
            return None
        self.learned.add(key)
        del self.urls[key]
        kept = self.kept.pop(key, {})
        return list(kept.values()) if isinstance(kept, dict) else [kept]

    def _enough(self, seen: set[str], group: str) -> bool:
        paths = {entry.split("\0", 1)[1] for entry in seen}
        if len(paths) >= self.threshold:
            return True
        if not self.in_class or not group:
            return False
        mine = {path for entry in seen for g, path in [entry.split("\0", 1)] if g == group}
        return len(mine) >= self.in_class

    def add_learned(self, site: str, sha256: str) -> None:
        """A placeholder an earlier run learned (from the manifest)."""
        if self.threshold:
            self.learned.add((site, sha256))

    def is_sha_learned(self, sha256: str | None) -> bool:
        """Whether these bytes were learned as a placeholder of any site."""
        return any(sha == sha256 for _, sha in self.learned)

    def is_placeholder(self, site: str, sha256: str) -> bool:
        return (site, sha256) in self.learned

    def note_kept_ref(self, site: str, sha256: str | None, ref: KeptRef, pixels: str | None) -> None:
        if not self.threshold or not sha256:
            return
        key = (site, sha256)
        kept = self.kept.get(key)
        if kept is None or (not isinstance(kept, dict) and kept[0].image_id == ref.image_id):
            self.kept[key] = (ref, pixels)
        elif isinstance(kept, dict):
            kept[ref.image_id] = (ref, pixels)
        else:
            self.kept[key] = {kept[0].image_id: kept, ref.image_id: (ref, pixels)}


_Kept = tuple[KeptRef, "str | None"]  # a kept copy and its pixel digest


def _photo_path(url: str) -> str:
    """A photo URL without its scheme, host and query: which photo of the site it names."""
    rest = url.split("://", 1)[-1]
    return "/" + rest.split("/", 1)[1].split("?", 1)[0].split("#", 1)[0] if "/" in rest else url
