"""Per-resource failure behaviours for download endpoints (shared by all emulators)."""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Callable, Mapping
from functools import lru_cache

from .server import Request

ErrorRenderer = Callable[[Request, int, Mapping[str, str]], None]

BEHAVIOURS = (
    "ok", "404", "410", "500", "500_once", "429_once", "429_once_3s", "html", "truncated", "hang", "reset", "gzip_ok",
    "gzip_bomb", "429_bare_twice", "503_bare_once", "noai"
)
"""``ok``; ``404``/``410``/``500`` (always); ``500_once``/``429_once`` (first request for the path
fails, 429 with ``Retry-After: 1``; ``429_once_3s``: ``Retry-After: 3``);
``429_bare_twice``/``503_bare_once`` (the same without ``Retry-After``); ``noai`` (200 with
``X-Robots-Tag: noai, noimageai``); ``html`` (200 text/html); ``truncated`` (Content-Length larger
than the bytes sent, then close); ``hang`` (nothing for ``server.hang_seconds``, then close);
``reset`` (TCP RST, no response); ``gzip_ok`` (the body with ``Content-Encoding: gzip``, whatever
the client asked); ``gzip_bomb`` (~2 MB with ``Content-Encoding: gzip`` that inflates to 2 GiB of
zeros, see :func:`gzip_bomb`)."""

BOMB_INFLATED = 2 * 1024**3


@lru_cache(maxsize=2)
def gzip_bomb(inflated: int = BOMB_INFLATED) -> bytes:
    """A valid one-member gzip body (~1/1000 of ``inflated``) of ``inflated`` zero bytes.

    Built in about a second, not the 13 s deflating 2 GiB takes: 16 MiB of zeros is deflated
    once and ended with a full flush (byte-aligned, no back-references past it), so that
    block can be repeated as it is; an empty final block and the gzip trailer close it."""
    chunk = 16 * 1024 * 1024
    if inflated % chunk:
        raise ValueError(f"inflated must be a multiple of {chunk}")
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: the gzip framing is ours
    zeros = bytes(chunk)
    block = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(inflated // chunk):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # gzip, deflate, no name, mtime 0
    final = b"\x03\x00"  # an empty final block
    return header + block * (inflated // chunk) + final + struct.pack("<II", crc, inflated & 0xFFFFFFFF)


def serve_with_behaviour(
    req: Request,
    behaviour: str,
    body: bytes,
    content_type: str,
    headers: Mapping[str, str] | None = None,
    error: ErrorRenderer | None = None,
) -> None:
    """Answer a download request according to ``behaviour`` (see ``BEHAVIOURS``).

    ``*_once`` behaviours fail only on the first request for this path.
    ``error(req, status, extra_headers)`` renders error statuses in the emulated
    service's style (default: plain text).
    """

    def fail(status: int, extra: Mapping[str, str] | None = None) -> None:
        if error is not None:
            error(req, status, extra or {})
        else:
            req.send(status, f"HTTP {status}".encode(), "text/plain", extra)

    if behaviour in ("404", "410", "500"):
        fail(int(behaviour))
    elif behaviour == "500_once" and req.attempt == 1:
        fail(500)
    elif behaviour in ("429_once", "429_once_3s") and req.attempt == 1:
        fail(429, {"Retry-After": "3" if behaviour == "429_once_3s" else "1"})
    elif behaviour == "429_bare_twice" and req.attempt <= 2:
        fail(429)  # slow down, without saying for how long
    elif behaviour == "503_bare_once" and req.attempt == 1:
        fail(503)
    elif behaviour == "noai":
        req.send(200, body, content_type, {**(headers or {}), "X-Robots-Tag": "noai, noimageai"})
    elif behaviour == "html":
        req.send_html()
    elif behaviour == "truncated":
        req.send_truncated(body, content_type)
    elif behaviour == "hang":
        req.hang()
    elif behaviour == "reset":
        req.reset()
    elif behaviour in ("gzip_ok", "gzip_bomb"):
        encoded = gzip_bomb() if behaviour == "gzip_bomb" else gzip.compress(body, mtime=0)
        req.send(200, encoded, content_type, {**(headers or {}), "Content-Encoding": "gzip"})
    elif behaviour in ("ok", "500_once", "429_once", "429_once_3s", "429_bare_twice", "503_bare_once"):
        req.send(200, body, content_type, headers)
    else:
        raise ValueError(f"unknown behaviour {behaviour!r}")
