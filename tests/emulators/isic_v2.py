"""Emulator of the current ISIC API v2 (``/api/v2/...``), reference §2.2-§2.5, §3.1."""

from __future__ import annotations

import binascii
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .cursor import Cursor, cursor_extras, decode_cursor, encode_cursor, paginate, replace_query_param
from .isic_data import FakeImage, as_list
from .isic_dsl import QueryError, parse_query
from .isic_host import ImageHost
from .server import EmulatorServer, HttpError, Request

PAGE_MODES = ("normal", "repeat_next", "empty_with_next", "not_json", "stale_cursors", "stale_detours", "overlap")
MAX_LIMIT = 100
LICENSES = {
    "CC-0": "CC-0 (CC0 1.0 Universal) public domain dedication - emulator license text.\n",
    "CC-BY": "CC-BY (Attribution 4.0 International) - emulator license text.\n",
    "CC-BY-NC": "CC-BY-NC (Attribution-NonCommercial 4.0 International) - emulator license text.\n",
}
_BAD_QUERY = {"message": "Could not parse search query."}
_BAD_CURSOR = {"detail": "Invalid cursor."}


def flat_record(img: FakeImage) -> dict[str, Any]:
    """The searchable view of an image: reserved fields + acquisition + clinical."""
    base = {"isic_id": img.isic_id, "public": img.public, "copyright_license": img.license}
    return {**img.acquisition(), **img.clinical(), **base}


class IsicV2Server(EmulatorServer):
    """ISIC v2 API emulator.

    ``page_mode`` (settable at any time) makes pages after the first hostile:
    ``"repeat_next"`` (a cursor page's ``next`` is its own URL, i.e. page 2 repeats
    page 1's ``next``), ``"empty_with_next"`` (the first cursor page served has
    ``results: []`` and a non-null ``next`` that continues correctly; once),
    ``"not_json"`` (cursor pages are 200 text/html).

    Modes whose every link is fresh, so only progress can tell something is wrong (they act on
    the first page's ``next`` too): ``"stale_cursors"`` (after the real records, ``next`` keeps
    giving fresh cursors, an ever-increasing ``stale`` token, whose pages hold only records
    already served, rotating among them: it never ends), ``"stale_detours"`` (every page's
    ``next`` first leads to one such page of old records, whose ``next`` goes on with the real
    listing: idle pages, never two in a row) and ``"overlap"`` (every page's ``next`` starts
    ``overlap`` records before the page's end, as if the archive shifted under the client: each
    page repeats some records but brings new ones; legitimate).
    """

    def __init__(
        self,
        fake_images: Iterable[FakeImage],
        host: ImageHost,
        collections: dict[int, str] | None = None,
        page_mode: str = "normal",
        tokens: Iterable[str] = (),
    ) -> None:
        super().__init__()
        self.images: list[FakeImage] = as_list(fake_images)
        self.tokens = set(tokens)  # OAuth2 bearer tokens that see private images too
        self.host = host
        self.collections: dict[int, str] = dict(collections or {})
        self.page_mode = page_mode
        self._empty_served = False
        self.overlap = 90  # "overlap" mode: records each page repeats from the page before
        self.size_answer: Any = None  # what images/search/size/ says the selection's bytes are; None: their sum
        api = "/api/v2"
        self.route("GET", rf"{api}/images/search/", self._search)
        self.route("GET", rf"{api}/images/search/size/", self._search_size)
        self.route("GET", rf"{api}/images/", self._list)
        self.route("GET", rf"{api}/images/(?P<isic_id>[^/]+)/", self._image)
        self.route("GET", rf"{api}/collections/(?P<id>[^/]+)/", self._collection)
        self.route("GET", rf"{api}/zip-download/license-file/(?P<license>[^/]+)/", self._license)
        self.route("GET", rf"{api}/.*[^/]", self._append_slash)

    # -- JSON shapes -------------------------------------------------------
    def image_out(self, img: FakeImage) -> dict[str, Any]:
        """ImageOut exactly as §2.5 (absent metadata fields omitted)."""
        thumb = self.host.thumbnail(img)
        full_size = len(img.body) if img.size is None else img.size
        return {
            "isic_id": img.isic_id,
            "public": img.public,
            "copyright_license": img.license,
            "attribution": img.attribution,
            "files": {
                "full": {"url": img.full_url or self.host.image_url(img), "size": full_size},
                "thumbnail_256": {"url": self.host.thumbnail_url(img), "size": len(thumb)},
            },
            "metadata": {"acquisition": img.acquisition(), "clinical": img.clinical()},
        }

    def collection_out(self, cid: int) -> dict[str, Any]:
        return {
            "id": cid,
            "name": self.collections[cid],
            "description": f"Emulated collection {cid}.",
            "public": True,
            "pinned": False,
            "locked": False,
            "doi": None,
            "doi_url": None,
        }

    # -- handlers ----------------------------------------------------------
    def _search(self, req: Request) -> None:
        self._send_page(req, self._matching(req))

    def _search_size(self, req: Request) -> None:
        size = sum(len(img.body) for img in self._matching(req))
        req.send_json({"size": size if self.size_answer is None else self.size_answer})

    def _list(self, req: Request) -> None:
        self._send_page(req, self._ordered(self.images))

    def _image(self, req: Request) -> None:
        img = next((i for i in self.images if i.isic_id == req.match["isic_id"]), None)
        if img is None:
            raise HttpError(404, {"detail": "Not Found"})
        req.send_json(self.image_out(img))

    def _collection(self, req: Request) -> None:
        cid = req.match["id"]
        if not cid.isdigit() or int(cid) not in self.collections:
            raise HttpError(404, {"detail": "Not Found"})
        req.send_json(self.collection_out(int(cid)))

    def _license(self, req: Request) -> None:
        text = LICENSES.get(req.match["license"])
        if text is None:
            raise HttpError(404, {"detail": "Not Found"})
        req.send_text(text)

    def _append_slash(self, req: Request) -> None:
        """Django's APPEND_SLASH: permanent redirect to the slash-terminated path."""
        req.send_redirect(req.path + "/" + (f"?{req.raw_query}" if req.raw_query else ""), 301)

    # -- search and pagination ---------------------------------------------
    @staticmethod
    def _ordered(imgs: Iterable[FakeImage]) -> list[FakeImage]:
        return sorted(imgs, key=lambda i: i.created_dt)

    def _visible(self, req: Request) -> bool:
        """Whether the request sees private images: a valid ``Authorization: Bearer`` token.
        An unknown token is refused (401), as an API that checks its tokens does; none is anonymous."""
        header = req.headers.get("Authorization") or ""
        if not header:
            return False
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self.tokens:
            raise HttpError(401, {"detail": "Invalid token."})
        return True

    def _matching(self, req: Request) -> list[FakeImage]:
        private = self._visible(req)
        try:
            predicate = parse_query(req.arg("query") or "")
        except QueryError:
            raise HttpError(400, _BAD_QUERY) from None
        wanted: set[int] | None = None
        raw = (req.arg("collections") or "").strip()
        if raw:
            try:
                wanted = {int(part) for part in raw.split(",")}
            except ValueError:
                raise HttpError(400, {"detail": "Invalid collections."}) from None
        return self._ordered(
            img
            for img in self.images
            if predicate(flat_record(img)) and (wanted is None or wanted & set(img.collections))
            and (img.public or private)
        )

    def _send_page(self, req: Request, records: list[FakeImage]) -> None:
        limit = self._limit(req)
        encoded = req.arg("cursor")
        cursor: Cursor | None = None
        own_url = f"{req.base_url}{req.path}?{req.raw_query}"

        def link(c: Cursor | None, **extra: str) -> str | None:
            return None if c is None else replace_query_param(own_url, "cursor", encode_cursor(c, **extra))

        try:
            if encoded is not None:
                cursor = decode_cursor(encoded)
                extras = cursor_extras(encoded)
                if "stale" in extras:
                    return self._send_stale_page(req, records, limit, extras, own_url)
            page = paginate(records, lambda i: i.created_dt, datetime.fromisoformat, cursor, limit)
        except (ValueError, TypeError, KeyError, binascii.Error):
            raise HttpError(400, _BAD_CURSOR) from None

        body: dict[str, Any] = {
            "count": len(records) if cursor is None or cursor.position is None else None,
            "next": link(page.next),
            "previous": link(page.previous),
            "results": [self.image_out(img) for img in page.items],
        }
        if encoded is not None and self.page_mode != "normal":
            if self.page_mode == "not_json":
                return req.send_html("<html><body><h1>502 Bad Gateway</h1></body></html>")
            if self.page_mode == "repeat_next":
                body["next"] = replace_query_param(own_url, "cursor", encoded)
            elif self.page_mode == "empty_with_next" and not self._empty_served and cursor is not None:
                self._empty_served = True
                body.update(results=[], previous=None, next=link(cursor, x="1"))
        if self.page_mode == "stale_cursors" and page.next is None and records:
            body["next"] = link(Cursor(), stale="1", upto=str(records[-1].created_dt))
        elif self.page_mode == "stale_detours" and page.next is not None and page.items:
            then = encode_cursor(page.next)
            body["next"] = link(Cursor(), stale="1", upto=str(page.items[-1].created_dt), then=then)
        elif self.page_mode == "overlap" and page.next is not None and len(page.items) > self.overlap:
            body["next"] = link(Cursor(position=str(page.items[-self.overlap - 1].created_dt)))
        req.send_json(body)

    def _send_stale_page(
        self, req: Request, records: list[FakeImage], limit: int, extras: dict[str, str], own_url: str
    ) -> None:
        """A page of records already served (created up to ``upto``), rotated by the ``stale``
        count so no two are alike; ``next`` is the next stale cursor, or ``then`` (a detour's end)."""
        n, upto = int(extras["stale"]), datetime.fromisoformat(extras["upto"])
        served = [img for img in records if img.created_dt <= upto]
        start = n % len(served) if served else 0
        window = (served[start:] + served[:start])[:limit]
        more = encode_cursor(Cursor(), stale=str(n + 1), upto=extras["upto"])
        token = extras.get("then", more)  # a detour goes back to the real listing
        following = replace_query_param(own_url, "cursor", token) if token else None
        req.send_json(
            {"count": None, "next": following, "previous": None, "results": [self.image_out(i) for i in window]}
        )

    @staticmethod
    def _limit(req: Request) -> int:
        raw = req.arg("limit")
        if raw is None:
            return MAX_LIMIT
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise HttpError(400, {"detail": [{"loc": ["query", "limit"], "msg": "must be a positive integer"}]})
        return min(value, MAX_LIMIT)
