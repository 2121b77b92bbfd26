"""ImageNet emulators: the old ``geturls`` text API (:class:`GeturlsServer`) and
:class:`PhotoHosts`, an HTTP proxy (``http_proxy=http://127.0.0.1:PORT``) serving
:class:`FakePhoto` s under their real host names, with Flickr "photo unavailable" placeholders."""

from __future__ import annotations

import hashlib
import io
import mimetypes
import random
import re
import struct
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Self
from urllib.parse import unquote, urlsplit

from PIL import Image, ImageDraw

from . import images
from .behaviours import BEHAVIOURS, serve_with_behaviour
from .server import EmulatorServer, Request

PLACEHOLDER_URL = "http://s.yimg.com/pw/images/en-us/photo_unavailable.png"
PLACEHOLDER_URL_HTTPS = "https://s.yimg.com/pw/images/en-us/photo_unavailable.png"
PLACEHOLDER_GIF_URL = "http://l.yimg.com/g/images/photo_unavailable.gif"
PLACEHOLDER_URLS = (PLACEHOLDER_URL, PLACEHOLDER_URL_HTTPS, PLACEHOLDER_URL[:-4] + "_l.png", PLACEHOLDER_GIF_URL)
NOT_READY = "The synset is not ready yet. Please stay tuned!"
INVALID = "Invalid url!"
FORMATS = ("plain", "plain_lf", "getmapping", "getmapping_tab", "not_ready", "invalid", "maintenance")
_EXTRA = ("redirect_placeholder", "redirect_https", "placeholder_direct", "placeholder_unknown", "empty")
PHOTO_BEHAVIOURS = (*BEHAVIOURS, *_EXTRA, "huge_pixels")
GOOD_BEHAVIOURS = frozenset({"ok", "500_once", "429_once", "redirect_https"})
"""Behaviours after which (following redirects, retrying once) the photo's own bytes arrive."""
FLICKR_HOSTS = ("farm3.static.flickr.com", "farm4.staticflickr.com", "live.staticflickr.com")
FAILURES = ("404", "410", "500", "html", "truncated", "empty", "redirect_placeholder", "placeholder_direct", "reset")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_LINES = {"plain": ("{u}\r\n", "\r\n"), "plain_lf": ("{u}\n", ""), "getmapping": ("{w}_{i} {u}\r\n", "")}
_LINES["getmapping_tab"] = ("{w}_{i}\t{u}\n", "")  # list-file form: TAB and LF
_FIXED = {"not_ready": NOT_READY, "invalid": INVALID}
_FIXED["maintenance"] = "<html><head><title>404 Not Found</title></head><body><h1>URL not valid</h1></body></html>"


# -- images -------------------------------------------------------------------------------------
def _save(img: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


@lru_cache(maxsize=1)
def _placeholder_image() -> Image.Image:
    img = Image.new("L", (500, 374), 235)
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle((200, 90, 300, 170), radius=12, fill=170)  # camera body
    draw.ellipse((228, 108, 272, 152), fill=235)  # lens
    draw.line((190, 80, 310, 180), fill=120, width=6)  # struck through
    x = 64
    for width in (34, 52, 18, 40, 28, 61, 22, 46):  # "This photo is no longer available"
        draw.rectangle((x, 214, x + width, 226), fill=110)
        x += width + 9
    draw.rectangle((210, 250, 290, 260), fill=150)  # "flickr"
    return img.convert("P")


@lru_cache(maxsize=2)
def placeholder_png(fmt: str = "PNG") -> bytes:
    """Deterministic image like Flickr's 500x374 grey "This photo is no longer available"."""
    return _save(_placeholder_image(), fmt, optimize=True)


@lru_cache(maxsize=1)
def unknown_placeholder() -> bytes:
    """Another deterministic image (noisy 160x120 JPEG with a banner, ~15 KB) that no size,
    variance or hash rule knows: detectable only by seeing the same bytes again and again."""
    img = Image.open(io.BytesIO(images.jpeg(160, 120, seed=424242))).convert("RGB")
    ImageDraw.Draw(img).rectangle((10, 45, 150, 75), fill=(250, 250, 250), outline=(200, 0, 0), width=3)
    return _save(img, "JPEG", quality=90)


@lru_cache(maxsize=2)
def huge_pixels_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit grey PNG of ``width`` x ``height`` (all black) in ~50 KB; 400 MP exceeds
    Pillow's decompression-bomb limit. Written by hand: Pillow would need 400 MB to build it."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(6)
    idat = b"".join(comp.compress(row * min(1000, height - y)) for y in range(0, height, 1000)) + comp.flush()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _sniff(body: bytes, url: str) -> str:
    for magic, ctype in ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG", "image/png"), (b"GIF8", "image/gif")):
        if body.startswith(magic):
            return ctype
    return mimetypes.guess_type(urlsplit(url).path)[0] or "image/jpeg"


# -- data ---------------------------------------------------------------------------------------
def url_key(url: str) -> str:
    """Normalised lookup key: lower-case scheme/host, default port dropped, path unquoted."""
    s = urlsplit(url)
    port = f":{s.port}" if s.port and s.port != {"http": 80, "https": 443}.get(s.scheme) else ""
    query = f"?{s.query}" if s.query else ""
    return f"{s.scheme.lower()}://{(s.hostname or '').lower()}{port}{unquote(s.path) or '/'}{query}"


def moved_url(url: str) -> str:
    """Where ``redirect_https`` sends ``url``: same path on host ``secure.<host>`` (plain http)."""
    return "http://secure." + url.split("://", 1)[1]


@dataclass
class FakePhoto:
    """One image URL. ``body`` defaults to a distinct 48x40 noise JPEG seeded by the URL
    (a ~20000x20000 PNG for ``huge_pixels``); ``content_type`` defaults from the bytes.
    ``location`` overrides the redirect target of ``redirect_placeholder``/``redirect_https``;
    ``delay`` seconds pass before answering."""

    url: str
    body: bytes = b""
    content_type: str = ""
    behaviour: str = "ok"
    delay: float = 0.0
    location: str = ""

    def __post_init__(self) -> None:
        if self.behaviour not in PHOTO_BEHAVIOURS:
            raise ValueError(f"unknown behaviour {self.behaviour!r}")
        if not self.body:
            seed = int.from_bytes(hashlib.sha1(self.url.encode()).digest()[:8], "big")
            self.body = huge_pixels_png() if self.behaviour == "huge_pixels" else images.jpeg(48, 40, seed=seed)
        self.content_type = self.content_type or _sniff(self.body, self.url)

    @property
    def is_good(self) -> bool:
        """True when a correct client ends up with ``body`` (see ``GOOD_BEHAVIOURS``)."""
        return self.behaviour in GOOD_BEHAVIOURS


def make_classes(
    n_classes: int,
    per_class_urls: int,
    seed: int = 0,
    failure_rate: float = 0.3,
    hosts: Sequence[str] = FLICKR_HOSTS,
    rng_behaviours: Sequence[str] = FAILURES,
    latency: tuple[float, float] | None = None,
    wnids: Sequence[str] | None = None,
) -> dict[str, list[FakePhoto]]:
    """``wnid -> photos``: wnids ``n00000000``, ``n00000001``... (or ``wnids``), URLs
    ``http://<host>/<server>/<wnid>_<i>_<secret>.jpg``; in every class exactly
    ``round(failure_rate * per_class_urls)`` photos get a behaviour from ``rng_behaviours``."""
    rng, latency_rng = random.Random(f"imagenet:{seed}"), random.Random(f"latency:{seed}")
    names = list(wnids) if wnids is not None else [f"n{i:08d}" for i in range(n_classes)]
    classes: dict[str, list[FakePhoto]] = {}
    for wnid in names[:n_classes]:
        failing = set(rng.sample(range(per_class_urls), round(failure_rate * per_class_urls)))
        photos = []
        for i in range(per_class_urls):
            url = f"http://{rng.choice(hosts)}/{rng.randint(1000, 9999)}/{wnid}_{i}_{rng.randbytes(5).hex()}.jpg"
            behaviour = rng.choice(rng_behaviours) if i in failing else "ok"
            photos.append(FakePhoto(url, behaviour=behaviour, delay=latency_rng.uniform(*latency) if latency else 0.0))
        classes[wnid] = photos
    return classes


# -- geturls ------------------------------------------------------------------------------------
class GeturlsServer(EmulatorServer):
    """``GET /api/imagenet.synset.geturls?wnid=W`` and ``/api/text/imagenet.synset.geturls``
    (default format ``plain``), ``/api/text/imagenet.synset.geturls.getmapping`` (default
    ``getmapping``). ``formats[wnid]`` (one of ``FORMATS``) wins on every endpoint; unknown
    wnid -> the not-ready body; no ``wnid`` -> ``Invalid url!``. ``behaviours[wnid]`` (one of
    ``BEHAVIOURS``, e.g. ``500_once``) is applied to the response."""

    ENDPOINTS = {
        "api": "/api/imagenet.synset.geturls",
        "text": "/api/text/imagenet.synset.geturls",
        "mapping": "/api/text/imagenet.synset.geturls.getmapping",
    }

    def __init__(
        self,
        classes: Mapping[str, Sequence[FakePhoto | str]],
        formats: Mapping[str, str] | None = None,
        behaviours: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.classes = {w: [p if isinstance(p, str) else p.url for p in ps] for w, ps in classes.items()}
        self.formats = dict(formats or {})
        self.behaviours = dict(behaviours or {})
        self._attempts: Counter[str] = Counter()  # per path+query, so *_once is per wnid
        for name, path in self.ENDPOINTS.items():
            self.route("GET", re.escape(path), lambda req, name=name: self._geturls(req, name))

    def geturls_url(self, wnid: str, endpoint: str = "api") -> str:
        """Full URL of ``endpoint`` (``api``, ``text`` or ``mapping``) for ``wnid``."""
        return f"{self.url}{self.ENDPOINTS[endpoint]}?wnid={wnid}"

    def requests_for_wnid(self, wnid: str) -> int:
        return sum(1 for _, p in self.log if p.endswith(f"wnid={wnid}"))

    def body_for(self, wnid: str, fmt: str) -> bytes:
        """The body of format ``fmt`` for ``wnid`` (mapping ids are ``<wnid>_<1-based index>``)."""
        if fmt in _FIXED:
            return _FIXED[fmt].encode()
        line, tail = _LINES[fmt]
        return (
            "".join(line.format(w=wnid, i=i, u=u) for i, u in enumerate(self.classes.get(wnid, []), 1)) + tail
        ).encode()

    def _geturls(self, req: Request, endpoint: str) -> None:
        wnid = req.arg("wnid")
        if not wnid:
            fmt = "invalid"
        elif wnid in self.formats:
            fmt = self.formats[wnid]
        elif wnid not in self.classes:
            fmt = "not_ready"
        else:
            fmt = "getmapping" if endpoint == "mapping" else "plain"
        body = self.body_for(wnid or "", fmt)
        with self._lock:
            self._attempts[req.handler.path] += 1
            req.attempt = self._attempts[req.handler.path]
        if fmt == "maintenance":
            return req.send(404, body, "text/html; charset=utf-8")
        serve_with_behaviour(req, self.behaviours.get(wnid or "", "ok"), body, "text/plain")


# -- photo hosts (HTTP proxy) -------------------------------------------------------------------
class PhotoHosts(EmulatorServer):
    """HTTP proxy-style photo server: ``GET http://host/path`` is looked up by absolute URL
    (path-only requests by path). Serves the placeholders at ``PLACEHOLDER_URLS`` and the
    ``moved_url`` of ``redirect_https`` photos; unknown URL -> 404. It is no general proxy:
    other loopback servers get 502 (set ``no_proxy``, see :meth:`proxy_env`)."""

    def __init__(self, photos: Mapping[str, Iterable[FakePhoto]] | Iterable[FakePhoto] = ()) -> None:
        super().__init__()
        self.photos: dict[str, FakePhoto] = {}
        self._by_path: dict[str, FakePhoto] = {}
        self._wnid: dict[str, str] = {}
        self._urls: list[str] = []
        self._url_hits: Counter[str] = Counter()
        self._now = self._peak = 0
        for url in PLACEHOLDER_URLS:
            self.add(FakePhoto(url, placeholder_png("GIF" if url.endswith(".gif") else "PNG")))
        groups = photos.items() if isinstance(photos, Mapping) else [(None, photos)]
        for wnid, group in groups:
            for photo in group:
                self.add(photo, wnid)
        self.route("GET", r".*", self._serve)

    def add(self, photo: FakePhoto, wnid: str | None = None) -> FakePhoto:
        """Register ``photo`` (and its ``redirect_https`` target) under its URL."""
        if photo.behaviour == "redirect_https":
            self.add(FakePhoto(photo.location or moved_url(photo.url), photo.body, photo.content_type), wnid)
        key = url_key(photo.url)
        with self._lock:
            self.photos[key] = photo
            self._by_path.setdefault(urlsplit(key).path, photo)
            if wnid:
                self._wnid[key] = wnid
        return photo

    def start(self) -> Self:
        """Start; clients dropping idle keep-alive connections are not reported as errors."""
        super().start()
        httpd: Any = self._httpd
        default = type(httpd).handle_error.__get__(httpd)

        def handle_error(request: Any, client_address: Any) -> None:
            if not isinstance(sys.exc_info()[1], ConnectionError):
                default(request, client_address)

        httpd.handle_error = handle_error
        return self

    def proxy_env(self) -> dict[str, str]:
        """Environment for a ``scrapy crawl`` subprocess: ``http_proxy`` -> this server."""
        return {"http_proxy": self.url, "HTTP_PROXY": self.url, "no_proxy": "127.0.0.1,localhost"}

    # -- counters ---------------------------------------------------------------------------
    @property
    def url_log(self) -> list[str]:
        """Absolute URL of every request served (photo URL for path-only ones), in arrival order."""
        with self._lock:
            return list(self._urls)

    def hits_for(self, url: str) -> int:
        with self._lock:
            return self._url_hits[url_key(url)]

    def wnid_of(self, url: str) -> str | None:
        """Class of ``url``: as registered, else a ``/n<8 digits>_`` path segment, else None."""
        with self._lock:
            wnid = self._wnid.get(url_key(url))
        found = re.search(r"/(n\d{8})_", url)
        return wnid or (found[1] if found else None)

    def requests_by_class(self, wnid_of: Callable[[str], str | None] | None = None) -> Counter[str]:
        """Requests per class (placeholders and unclassified URLs are left out)."""
        classify = wnid_of or self.wnid_of
        return Counter(w for w in map(classify, self.url_log) if w)

    @property
    def max_concurrent(self) -> int:
        return self._peak

    @property
    def concurrent_now(self) -> int:
        return self._now

    def clear_log(self) -> None:
        super().clear_log()
        with self._lock:
            self._urls.clear()
            self._url_hits.clear()
            self._peak = self._now

    # -- serving ----------------------------------------------------------------------------
    def not_found(self, req: Request) -> None:
        req.send(404, b"Not Found", "text/plain")

    def _serve(self, req: Request) -> None:
        raw = req.handler.path
        absolute = not raw.startswith("/")
        url = raw if absolute else f"http://{req.headers.get('Host', '')}{raw}"
        target = urlsplit(url)
        own = target.hostname in _LOOPBACK and target.port == urlsplit(self.url).port
        key = url_key(url)
        photo = self.photos.get(key)
        if photo is None and absolute and not own and target.hostname in _LOOPBACK:
            return req.send(502, b"PhotoHosts relays nothing: set no_proxy=127.0.0.1,localhost", "text/plain")
        if photo is None and (own or not absolute):
            photo = self._by_path.get(unquote(target.path) or "/")
            key = url_key(photo.url) if photo else key
        with self._lock:
            self._urls.append(photo.url if photo else url)
            self._url_hits[key] += 1
            req.attempt = self._url_hits[key]
            self._now += 1
            self._peak = max(self._peak, self._now)
        try:
            if photo is None:
                return self.not_found(req)
            if photo.delay:
                self._stopping.wait(photo.delay)
            self._answer(req, photo)
        finally:
            with self._lock:
                self._now -= 1

    def _answer(self, req: Request, photo: FakePhoto) -> None:
        b = photo.behaviour
        if b == "redirect_placeholder":
            req.send_redirect(photo.location or PLACEHOLDER_URL, 302)
        elif b == "redirect_https":
            req.send_redirect(photo.location or moved_url(photo.url), 301)
        elif b in ("placeholder_direct", "placeholder_unknown"):
            body = placeholder_png() if b == "placeholder_direct" else unknown_placeholder()
            req.send(200, body, _sniff(body, ""))
        elif b == "empty":
            req.send(200, b"", photo.content_type)
        else:
            serve_with_behaviour(req, "ok" if b == "huge_pixels" else b, photo.body, photo.content_type)
