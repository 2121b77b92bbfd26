"""Images travel unencoded; one that arrives encoded anyway may not inflate past a small limit.

Images gain nothing from transfer compression, so image requests ask for
``Accept-Encoding: identity``. A server may encode the body all the same, and a gzip bomb
(2 MB on the wire, 2 GiB inflated) would then be inflated by Scrapy's
``HttpCompressionMiddleware`` up to ``DOWNLOAD_MAXSIZE`` (1 GiB for isic). Worse, the exception
it raises keeps the inflated buffer alive through its traceback, and the media pipeline keeps
every failure for the rest of the run: eight bombs held 8 GB. So before Scrapy inflates an
image body, this middleware counts, chunk by chunk and keeping nothing, how far it inflates;
past ``IMAGES_ENCODED_MAXSIZE`` the image is ``too_large`` and is never inflated at all. A
smaller one goes on to Scrapy, which inflates it as usual (so it is decoded twice: rare).
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from collections.abc import Iterator
from itertools import chain
from typing import Any, Protocol

import brotli
from scrapy import Request
from scrapy.http import Response

from ..outcomes import ImageRejected, Outcome

try:  # the zstd module Scrapy itself decodes with
    from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
except ImportError:
    from backports import zstd

IMAGE_META = "dataset_image"  # request.meta key: the request fetches an image (or a mask)
CHUNK = 64 * 1024


class EncodedImagesMiddleware:
    """Asks for unencoded images; refuses an encoded one that inflates past the limit.

    Its order is above ``HttpCompressionMiddleware``'s 590 so that its ``process_response``
    sees the body before Scrapy inflates it."""

    def __init__(self, max_size: int, download_maxsize: int = 0):
        self.max_size = max_size
        self.download_maxsize = download_maxsize

    @classmethod
    def from_crawler(cls, crawler: Any) -> EncodedImagesMiddleware:
        settings = crawler.settings
        return cls(settings.getint("IMAGES_ENCODED_MAXSIZE"), settings.getint("DOWNLOAD_MAXSIZE"))

    def process_request(self, request: Request, spider: Any = None) -> None:
        if request.meta.get(IMAGE_META):
            request.headers[b"Accept-Encoding"] = b"identity"  # replaces HttpCompression's default

    def process_response(self, request: Request, response: Response, spider: Any = None) -> Response:
        if not request.meta.get(IMAGE_META) or request.method == "HEAD":
            return response
        encodings = decodable(response.headers.getlist(b"Content-Encoding"))
        if not encodings:
            return response
        # The lower of our limit and DOWNLOAD_MAXSIZE: Scrapy's own check is never the one to fail.
        limit, name = self.max_size, "IMAGES_ENCODED_MAXSIZE"
        maxsize = request.meta.get("download_maxsize", self.download_maxsize)
        if maxsize and (not limit or maxsize < limit):
            limit, name = maxsize, "DOWNLOAD_MAXSIZE"
        if limit and inflated_size(response.body, encodings, limit) > limit:
            names = ", ".join(e.decode() for e in encodings)
            detail = f"sent with Content-Encoding {names} ({len(response.body)} B): inflates past {name} ({limit} B)"
            raise ImageRejected(Outcome.TOO_LARGE, detail)
        return response


def decodable(content_encoding: list[bytes]) -> list[bytes]:
    """The encodings Scrapy will undo, in the order they were applied (as Scrapy picks them:
    from the last one listed back to the first it does not know)."""
    listed = [e.strip().lower() for e in chain.from_iterable(h.split(b",") for h in content_encoding)]
    known: list[bytes] = []
    while listed and listed[-1] in _DECODERS:
        known.insert(0, listed.pop())
    return known


class Readable(Protocol):
    """What a decoder reads from: the body, or the decoder before it (``_Chunks``). (``seek``
    because ``GzipFile``'s types ask for it; reading forward, it is never called.)"""

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...


def inflated_size(body: bytes, encodings: list[bytes], limit: int) -> int:
    """How many bytes ``body`` inflates to, undoing ``encodings`` (last applied first).

    Counting stops as soon as it passes ``limit``; chunks are dropped as they are counted, so
    memory stays at a few chunks whatever the body inflates to. A body that stops decoding
    (corrupt, truncated) counts what came out before: Scrapy's decoders return that too."""
    stream: Readable = io.BytesIO(body)
    for encoding in reversed(encodings):
        stream = _Chunks(_DECODERS[encoding](stream))
    total = 0
    try:
        while total <= limit and (chunk := stream.read(CHUNK)):
            total += len(chunk)
    except (OSError, EOFError, ValueError, struct.error, zlib.error, brotli.error, zstd.ZstdError):
        pass
    return total


def _gzip(source: Readable) -> Iterator[bytes]:
    with gzip.GzipFile(fileobj=source) as member:  # every member, like Scrapy's gunzip
        while chunk := member.read1(CHUNK):
            yield chunk


def _deflate(source: Readable) -> Iterator[bytes]:
    """zlib-wrapped deflate, or raw deflate as some servers send it (Scrapy accepts both)."""
    data = source.read(CHUNK)
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, CHUNK)
    except zlib.error:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        out = inflater.decompress(data, CHUNK)
    while True:
        if out:
            yield out
        if inflater.eof:
            return
        data = inflater.unconsumed_tail
        if not data and not out:  # everything given is inflated: feed more
            data = source.read(CHUNK)
            if not data:
                return
        out = inflater.decompress(data, CHUNK)


def _brotli(source: Readable) -> Iterator[bytes]:
    decoder = brotli.Decompressor()
    while not decoder.is_finished():
        data = source.read(CHUNK) if decoder.can_accept_more_data() else b""
        out = decoder.process(data, output_buffer_limit=CHUNK)
        if out:
            yield out
        elif not data:  # no input left and no output: the stream ends early
            return


def _zstd(source: Readable) -> Iterator[bytes]:
    with zstd.ZstdFile(source) as frames:  # every frame, like Scrapy's _unzstd
        while chunk := frames.read(CHUNK):
            yield chunk


_DECODERS = {b"gzip": _gzip, b"x-gzip": _gzip, b"deflate": _deflate, b"br": _brotli, b"zstd": _zstd}


class _Chunks(io.RawIOBase):
    """A readable file over an iterator of chunks: one decoder's output is the next one's input."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._rest = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        # RawIOBase.read says None only for a non-blocking stream with nothing yet: never here.
        return super().read(size) or b""

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._rest = chunk
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size
