"""Fast self-tests of the offline HTTP emulators (tests/emulators)."""

from __future__ import annotations

import base64
import http.client
import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from PIL import Image

from tests.emulators import (
    EmulatorServer,
    FakeImage,
    FakeSegmentation,
    ImageHost,
    IsicV1Server,
    IsicV2Server,
    images,
    make_archive,
    parse_query,
)
from tests.emulators.isic_dsl import QueryError

Response = tuple[int, dict[str, str], bytes]


def get(url: str, timeout: float = 5) -> Response:
    """GET ``url``; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def get_json(url: str) -> Any:
    status, _, body = get(url)
    assert status == 200, body
    return json.loads(body)


@pytest.fixture
def servers() -> Iterator[tuple[list[FakeImage], ImageHost, IsicV2Server]]:
    archive = make_archive(25)
    with ExitStack() as stack:
        host = stack.enter_context(ImageHost(archive))
        v2 = stack.enter_context(IsicV2Server(archive, host, collections={61: "Challenge 2016"}))
        yield archive, host, v2
        assert not host.errors and not v2.errors


def search_url(v2: IsicV2Server, query: str = "", **params: str) -> str:
    extra = "".join(f"&{k}={v}" for k, v in params.items())
    return f"{v2.url}/api/v2/images/search/?query={quote(query)}{extra}"


def follow(url: str, max_pages: int = 50) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Follow ``next`` to the end; returns (pages, records)."""
    pages: list[dict[str, Any]] = []
    while url:
        assert len(pages) < max_pages, "pagination does not terminate"
        pages.append(get_json(url))
        url = pages[-1]["next"]
    return pages, [r for p in pages for r in p["results"]]


# -- ISIC v2 --------------------------------------------------------------------------------
def test_pagination_returns_each_match_once_in_created_order(servers: Any) -> None:
    archive, _, v2 = servers
    pages, records = follow(search_url(v2, "diagnosis_1:Benign", limit="4"))
    benign = [img.isic_id for img in archive if img.diagnosis_1 == "Benign"]
    assert [r["isic_id"] for r in records] == benign
    assert pages[0]["count"] == len(benign) and pages[0]["previous"] is None
    assert all(p["count"] is None and p["previous"] for p in pages[1:])
    nxt = urlsplit(pages[0]["next"])
    assert f"{nxt.scheme}://{nxt.netloc}" == v2.url
    assert list(parse_qs(nxt.query)) == ["cursor", "limit", "query"]
    cursor = base64.b64decode(parse_qs(nxt.query)["cursor"][0]).decode()
    assert cursor.startswith("p=2020-01-01+")


def test_previous_links_walk_back(servers: Any) -> None:
    _, _, v2 = servers
    pages, _ = follow(search_url(v2, limit="10"))
    back = get_json(pages[-1]["previous"])
    assert [r["isic_id"] for r in back["results"]] == [r["isic_id"] for r in pages[-2]["results"]]


def test_ties_and_out_of_order_created() -> None:
    stamps = ["2021-01-01T00:00:00+00:00"] * 5 + ["2020-06-01T00:00:00+00:00", "2022-01-01T00:00:00+00:00"]
    archive = [FakeImage(f"ISIC_{i:07d}", created=c) for i, c in enumerate(stamps)]
    with ImageHost(archive) as host, IsicV2Server(archive, host) as v2:
        _, records = follow(f"{v2.url}/api/v2/images/search/?limit=2")
    ids = [r["isic_id"] for r in records]
    assert ids[0] == "ISIC_0000005" and ids[-1] == "ISIC_0000006"
    assert sorted(ids) == sorted(img.isic_id for img in archive)


def test_image_out_shape(servers: Any) -> None:
    archive, host, v2 = servers
    rec = get_json(f"{v2.url}/api/v2/images/ISIC_0000001/")
    assert rec["files"]["full"] == {"url": f"{host.url}/images/ISIC_0000001.jpg", "size": len(archive[1].body)}
    assert rec["metadata"]["acquisition"] == {"pixels_x": 64, "pixels_y": 48, "image_type": "dermoscopic"}
    assert rec["metadata"]["clinical"]["diagnosis_1"] == "Malignant"
    status, headers, thumb = get(rec["files"]["thumbnail_256"]["url"])
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert len(thumb) == rec["files"]["thumbnail_256"]["size"]
    assert get(f"{v2.url}/api/v2/images/ISIC_9999999/")[0] == 404


def test_missing_diagnosis_is_omitted() -> None:
    archive = [FakeImage("ISIC_0000001", diagnosis_1=None, extra_clinical={"sex": "male"})]
    with ImageHost(archive) as host, IsicV2Server(archive, host) as v2:
        assert get_json(f"{v2.url}/api/v2/images/ISIC_0000001/")["metadata"]["clinical"] == {"sex": "male"}


def test_limit_clamp_and_validation() -> None:
    archive = make_archive(105, size=(8, 8))
    with ImageHost(archive) as host, IsicV2Server(archive, host) as v2:
        assert len(get_json(search_url(v2, limit="500"))["results"]) == 100
        assert len(get_json(search_url(v2))["results"]) == 100
        assert len(get_json(search_url(v2, limit="3", offset="50"))["results"]) == 3
        for bad in ("0", "-1", "abc"):
            assert get(search_url(v2, limit=bad))[0] == 400


@pytest.mark.parametrize(
    "query",
    [
        "benign_malignant:benign",
        "diagnosis:nevus",
        "(diagnosis_1:Benign",
        "diagnosis_1:Benign)",
        "diagnosis_1:Benign AND",
        "age_approx:old",
        "melanocytic:yes",
        "Benign",
    ],
)
def test_bad_query_is_400(servers: Any, query: str) -> None:
    status, _, body = get(search_url(servers[2], query))
    assert status == 400 and json.loads(body) == {"message": "Could not parse search query."}


def test_bad_cursor_is_400(servers: Any) -> None:
    status, _, body = get(search_url(servers[2], cursor="%%%notbase64"))
    assert status == 400 and "cursor" in json.loads(body)["detail"].lower()


def test_dsl_semantics() -> None:
    rec = {
        "diagnosis_1": "Benign",
        "diagnosis_3": "Melanoma Invasive",
        "age_approx": 35,
        "melanocytic": True,
        "image_type": "clinical: close-up",
        "copyright_license": "CC-BY-NC",
    }
    matches = [
        "diagnosis_1:Benign",
        'diagnosis_3:"Melanoma Invasive"',
        "diagnosis_3:Melanoma*",
        "diagnosis_3:*Invasive",
        "age_approx:[30 TO 40]",
        "age_approx:{30 TO *]",
        "melanocytic:true",
        "image_type:clinical",
        "diagnosis_1:Malignant OR (age_approx:35 AND -sex:male)",
        "copyright_license:CC-BY-NC",
    ]
    misses = [
        "diagnosis_1:benign",
        "age_approx:{35 TO 40]",
        "-diagnosis_1:Benign",
        "sex:*",
        "melanocytic:false",
        "diagnosis_1:Benign AND diagnosis_2:*",
    ]
    assert all(parse_query(q)(rec) for q in matches)
    assert not any(parse_query(q)(rec) for q in misses)
    with pytest.raises(QueryError):
        parse_query("diagnosis_1:Benign and sex:male")


def test_collections(servers: Any) -> None:
    archive, _, v2 = servers
    archive[3].collections = [61]
    archive[7].collections = [74]
    body = get_json(search_url(v2, collections="61,74"))
    assert [r["isic_id"] for r in body["results"]] == ["ISIC_0000003", "ISIC_0000007"]
    assert get_json(f"{v2.url}/api/v2/collections/61/")["name"] == "Challenge 2016"
    status, _, err = get(f"{v2.url}/api/v2/collections/74/")
    assert status == 404 and json.loads(err) == {"detail": "Not Found"}


def test_license_file_and_append_slash(servers: Any) -> None:
    v2 = servers[2]
    status, headers, body = get(f"{v2.url}/api/v2/zip-download/license-file/CC-BY-NC/")
    assert status == 200 and headers["Content-Type"].startswith("text/plain") and b"CC-BY-NC" in body
    assert get(f"{v2.url}/api/v2/zip-download/license-file/MIT/")[0] == 404
    assert get_json(f"{v2.url}/api/v2/images/ISIC_0000000")["isic_id"] == "ISIC_0000000"  # 301 followed


def test_page_mode_repeat_next(servers: Any) -> None:
    v2 = servers[2]
    v2.page_mode = "repeat_next"
    first = get_json(search_url(v2, limit="5"))
    assert get_json(first["next"])["next"] == first["next"]


def test_page_mode_empty_with_next(servers: Any) -> None:
    archive, _, v2 = servers
    v2.page_mode = "empty_with_next"
    pages, records = follow(search_url(v2, limit="10"))
    assert pages[1]["results"] == [] and pages[1]["next"]
    assert [r["isic_id"] for r in records] == [img.isic_id for img in archive]


def test_page_mode_not_json(servers: Any) -> None:
    v2 = servers[2]
    v2.page_mode = "not_json"
    status, headers, body = get(get_json(search_url(v2, limit="5"))["next"])
    assert status == 200 and headers["Content-Type"].startswith("text/html") and body.startswith(b"<html")


# -- image host behaviours -----------------------------------------------------------------
@pytest.fixture
def host() -> Iterator[ImageHost]:
    names = ["ok", "404", "410", "500", "500_once", "429_once", "html", "truncated", "hang", "reset"]
    archive = [FakeImage(f"ISIC_{i:07d}", behaviour=b) for i, b in enumerate(names)]
    archive.append(FakeImage("ISIC_0000099", ext="png", body=images.png_gray(10, 10, 1)))
    with ImageHost(archive) as server:
        server.hang_seconds = 0.3
        yield server


def image_url(host: ImageHost, i: int, ext: str = "jpg") -> str:
    return f"{host.url}/images/ISIC_{i:07d}.{ext}"


def test_host_ok_and_errors(host: ImageHost) -> None:
    status, headers, body = get(image_url(host, 0))
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and body == host.images[0].body
    assert get(image_url(host, 99, "png"))[1]["Content-Type"] == "image/png"
    assert get(image_url(host, 0, "png"))[0] == 404
    status, headers, body = get(image_url(host, 1))
    assert status == 404 and b"NoSuchKey" in body
    assert get(image_url(host, 2))[0] == 410
    assert [get(image_url(host, 3))[0] for _ in range(2)] == [500, 500]
    assert host.hits("/images/ISIC_0000003.jpg") == 2
    assert host.requests_for("/images/ISIC_0000003") == ["/images/ISIC_0000003.jpg"] * 2


def test_host_once_behaviours(host: ImageHost) -> None:
    assert [get(image_url(host, 4))[0] for _ in range(2)] == [500, 200]
    status, headers, _ = get(image_url(host, 5))
    assert status == 429 and headers["Retry-After"] == "1"
    assert get(image_url(host, 5))[0] == 200


def test_host_html_truncated_hang_reset(host: ImageHost) -> None:
    status, headers, _ = get(image_url(host, 6))
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    with pytest.raises(http.client.IncompleteRead):
        get(image_url(host, 7))
    for i in (8, 9):  # hang (bounded) then close; reset
        with pytest.raises((OSError, http.client.HTTPException)):
            get(image_url(host, i), timeout=3)
    assert [m for m, _ in host.log] == ["GET"] * 4


def test_base_server_helpers() -> None:
    server = EmulatorServer()
    server.route("GET", r"/go", lambda req: req.send_redirect("/there"))
    server.route("GET", r"/there", lambda req: req.send_json({"q": req.arg("x")}))
    with server:
        assert get_json(f"{server.url}/go") == {"q": None}
        assert get(f"{server.url}/nothing")[0] == 404
    assert server.log == [("GET", "/go"), ("GET", "/there"), ("GET", "/nothing")]


# -- images --------------------------------------------------------------------------------
def open_image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_image_helpers() -> None:
    a, b = images.jpeg(16, 12, 1), images.jpeg(16, 12, 2)
    assert a != b and open_image(a).tobytes() != open_image(b).tobytes()
    exif_icc = open_image(images.jpeg(16, 12, 1, exif=True, icc=True))
    assert exif_icc.getexif()[0x0112] == 6 and exif_icc.info["icc_profile"]
    assert open_image(images.png_rgba(8, 8, 0)).getpixel((0, 0))[3] == 0
    assert open_image(images.png_gray(8, 8, 0)).mode == "L"
    assert set(open_image(images.mask_png(20, 10)).tobytes()) == {0, 255}
    assert open_image(images.cmyk_jpeg(8, 8, 0)).mode == "CMYK"
    assert open_image(images.tiff(8, 8, 0)).mode == "RGB"
    with pytest.raises(OSError):
        open_image(images.truncated(images.jpeg(64, 64, 3)))


# -- ISIC v1 ---------------------------------------------------------------------------------
@pytest.fixture
def v1() -> Iterator[IsicV1Server]:
    archive = make_archive(6, diagnoses=["Benign", "Malignant", "Indeterminate"])
    archive[2].v1_label = "indeterminate/benign"
    archive[0].segmentations = [FakeSegmentation(skill="expert"), FakeSegmentation(skill="novice", failed=True)]
    with IsicV1Server(archive) as server:
        yield server
        assert not server.errors


def test_v1_listing_and_filter(v1: IsicV1Server) -> None:
    summaries = get_json(f"{v1.url}/api/v1/image?limit=0&offset=0&sort=name&sortdir=1")
    assert [s["name"] for s in summaries] == [f"ISIC_{i:07d}" for i in range(6)]
    assert set(summaries[0]) == {"_id", "name", "updated"}
    assert len(get_json(f"{v1.url}/api/v1/image?limit=2&offset=5")) == 1
    assert len(get_json(f"{v1.url}/api/v1/image")) == 6
    ident = {"identifier": "meta.clinical.benign_malignant", "type": "string"}
    flt = quote(json.dumps({"operator": "=", "operands": [ident, "benign"]}))
    docs = get_json(f"{v1.url}/api/v1/image?limit=0&detail=true&filter={flt}")
    assert [d["name"] for d in docs] == ["ISIC_0000000", "ISIC_0000003"]
    assert docs[0]["meta"]["acquisition"] == {"image_type": "dermoscopic", "pixelsX": 64, "pixelsY": 48}
    flt = quote(json.dumps({"operator": "in", "operands": [ident, ["indeterminate", "indeterminate/benign"]]}))
    names = [d["name"] for d in get_json(f"{v1.url}/api/v1/image?limit=0&filter={flt}")]
    assert names == ["ISIC_0000002", "ISIC_0000005"]
    status, _, body = get(f"{v1.url}/api/v1/image?filter=%7Bnot-json")
    assert status == 400 and json.loads(body)["type"] == "rest"


def test_v1_description_download_and_masks(v1: IsicV1Server) -> None:
    img = v1.images[0]
    desc = get_json(f"{v1.url}/api/v1/image/{img.v1_id}")
    assert desc["_id"] == img.v1_id and desc["name"] == "ISIC_0000000" and desc["_modelType"] == "image"
    assert desc["meta"]["clinical"]["benign_malignant"] == "benign"
    status, headers, body = get(f"{v1.url}/api/v1/image/{img.v1_id}/download?contentDisposition=inline")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and body == img.body
    segs = get_json(f"{v1.url}/api/v1/segmentation?limit=0&imageId={img.v1_id}")
    assert [s["skill"] for s in segs] == ["novice", "expert"] and segs[0]["failed"] is True
    assert segs[0]["created"] > segs[1]["created"]
    status, _, body = get(f"{v1.url}/api/v1/segmentation/{segs[0]['_id']}/mask?contentDisposition=inline")
    assert status == 410 and json.loads(body)["message"] == "This segmentation is failed, and thus has no mask."
    status, headers, body = get(f"{v1.url}/api/v1/segmentation/{segs[1]['_id']}/mask?contentDisposition=inline")
    assert status == 200 and headers["Content-Type"] == "image/png" and open_image(body).size == (64, 48)
    assert get_json(f"{v1.url}/api/v1/segmentation?imageId={v1.images[1].v1_id}") == []
