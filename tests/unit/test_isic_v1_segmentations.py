"""The v1 API's segmentation list, as Scrapy hands it to the callback: a body Scrapy does not
take for text (binary, or served as octet-stream with binary bytes) arrives as a plain
``Response``, which has no ``json()``; it must still be one warning, not a callback traceback."""

import logging
from types import SimpleNamespace

import pytest
from scrapy.http import Headers, Request
from scrapy.responsetypes import responsetypes

from dataset_spiders.spiders.isic_v1 import parse_segmentations

URL = "https://isic.test/api/v1/segmentation?imageId=5436e3abbae478396759f0cf"


def response(body: bytes, content_type: bytes):
    cls = responsetypes.from_args(headers=Headers({"Content-Type": content_type}), url=URL, body=body)
    return cls(URL, body=body, headers={"Content-Type": content_type}, request=Request(URL))


def spider():
    stats = SimpleNamespace(inc_value=lambda *a, **k: None)
    return SimpleNamespace(params=SimpleNamespace(seg_level=None), crawler=SimpleNamespace(stats=stats),
                           api_url="https://isic.test/api/v1", seg_dir="/tmp/seg")


@pytest.mark.parametrize("body, content_type", [(b"\x00\x01binary", b"application/octet-stream"),
                                                 (b"<html>gateway</html>", b"text/html")])
def test_a_segmentation_list_that_is_not_json_is_one_warning(body, content_type, caplog):
    with caplog.at_level(logging.WARNING):
        assert list(parse_segmentations(spider(), response(body, content_type), "ISIC_0000000")) == []
    assert "unusable segmentation list" in caplog.text


def test_a_segmentation_list_is_read_whatever_response_class_scrapy_chose():
    body = b'[{"_id": "5436e3abbae478396759f0cf", "skill": "expert", "created": "2014"}]'
    (item,) = parse_segmentations(spider(), response(body, b"application/json"), "ISIC_0000000")
    assert item.stems == ["/tmp/seg/ISIC_0000000_expert"]
