"""EncodedImagesMiddleware: images ask for no encoding; an encoded one is measured, never
inflated into memory, and refused (too_large) past the limit."""

from __future__ import annotations

import gzip
import random
import tracemalloc
import zlib

import brotli
import pytest
from scrapy import Request
from scrapy.http import Response

from dataset_spiders.downloader.encoded_images import IMAGE_META, EncodedImagesMiddleware, decodable, inflated_size
from dataset_spiders.outcomes import ImageRejected, classify
from tests.emulators.behaviours import gzip_bomb

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd

DATA = random.Random(7).randbytes(200_000) + bytes(300_000)


def raw_deflate(data: bytes) -> bytes:
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    return comp.compress(data) + comp.flush()


ENCODED = {
    "gzip": (gzip.compress(DATA), [b"gzip"]),
    "gzip, 2 members": (gzip.compress(DATA) * 2, [b"gzip"]),
    "x-gzip": (gzip.compress(DATA), [b"x-gzip"]),
    "deflate (zlib)": (zlib.compress(DATA), [b"deflate"]),
    "deflate (raw)": (raw_deflate(DATA), [b"deflate"]),
    "br": (brotli.compress(DATA), [b"br"]),
    "zstd": (zstd.compress(DATA), [b"zstd"]),
    "gzip then br": (brotli.compress(gzip.compress(DATA)), [b"gzip", b"br"]),
}


@pytest.mark.parametrize("name", ENCODED)
def test_inflated_size_counts_every_encoding_and_stops_past_the_limit(name):
    body, encodings = ENCODED[name]
    full = len(DATA) * (2 if "members" in name else 1)
    assert inflated_size(body, encodings, 10**9) == full
    assert len(DATA) // 10 < inflated_size(body, encodings, len(DATA) // 10) < len(DATA) // 10 + 200_000


def test_a_cut_or_broken_body_counts_what_comes_out_before_the_break():
    assert 0 < inflated_size(gzip.compress(DATA)[:-3000], [b"gzip"], 10**9) < len(DATA)
    assert inflated_size(b"not gzip at all", [b"gzip"], 10**9) == 0
    assert inflated_size(b"\xff" * 40, [b"br"], 10**9) == 0


def test_decodable_picks_what_scrapy_undoes():
    assert decodable([b"gzip"]) == [b"gzip"]
    assert decodable([b"gzip, BR"]) == [b"gzip", b"br"]
    assert decodable([b"gzip", b"compress, br"]) == [b"br"]  # stops at one it does not know
    assert decodable([b"identity"]) == []


def test_a_gzip_bomb_is_measured_in_little_memory():
    bomb = gzip_bomb()  # 2 GiB of zeros in ~2 MB
    tracemalloc.start()
    try:
        size = inflated_size(bomb, [b"gzip"], 64 * 1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size > 64 * 1024 * 1024
    assert peak < 4 * 1024 * 1024, f"{peak} bytes allocated while measuring"


def image_request(**meta: object) -> Request:
    return Request("http://host/a.jpg", meta={IMAGE_META: True, **meta})


def encoded(request: Request, body: bytes, encoding: str = "gzip") -> Response:
    return Response(request.url, body=body, headers={"Content-Encoding": encoding}, request=request)


def test_images_ask_for_identity_other_requests_keep_the_default():
    mw = EncodedImagesMiddleware(1000)
    image, page = image_request(), Request("http://host/api", headers={"Accept-Encoding": "gzip, br"})
    image.headers["Accept-Encoding"] = "gzip, deflate, br, zstd"  # as HttpCompression set it before us
    mw.process_request(image)
    mw.process_request(page)
    assert image.headers["Accept-Encoding"] == b"identity"
    assert page.headers["Accept-Encoding"] == b"gzip, br"


def test_an_encoded_image_past_the_limit_is_too_large_and_a_small_one_passes_untouched():
    mw = EncodedImagesMiddleware(100_000, download_maxsize=10**9)
    request = image_request()
    small = encoded(request, gzip.compress(DATA[:50_000]))
    assert mw.process_response(request, small) is small
    with pytest.raises(ImageRejected) as info:
        mw.process_response(request, encoded(request, gzip.compress(DATA)))
    outcome, detail = classify(info.value)
    assert outcome == "too_large"
    assert "Content-Encoding gzip" in detail and "IMAGES_ENCODED_MAXSIZE (100000 B)" in detail


def test_the_lower_of_the_limit_and_download_maxsize_applies_and_pages_are_left_to_scrapy():
    mw = EncodedImagesMiddleware(10**9, download_maxsize=10**9)
    request = image_request(download_maxsize=100_000)
    with pytest.raises(ImageRejected, match=r"DOWNLOAD_MAXSIZE \(100000 B\)"):
        mw.process_response(request, encoded(request, gzip.compress(DATA)))
    off, request = EncodedImagesMiddleware(0, download_maxsize=0), image_request()  # both limits 0: off
    assert off.process_response(request, response := encoded(request, gzip.compress(DATA))) is response
    page = Request("http://host/api")
    assert mw.process_response(page, response := encoded(page, gzip_bomb())) is response
