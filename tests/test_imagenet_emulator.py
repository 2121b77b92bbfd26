"""Fast self-tests of the ImageNet emulators (tests/emulators/imagenet.py)."""

from __future__ import annotations

import http.client
import io
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from PIL import Image

from tests.emulators.imagenet import (
    INVALID,
    NOT_READY,
    PLACEHOLDER_GIF_URL,
    PLACEHOLDER_URL,
    FakePhoto,
    GeturlsServer,
    PhotoHosts,
    make_classes,
    moved_url,
    placeholder_png,
    unknown_placeholder,
)

Response = tuple[int, str, dict[str, str], bytes]  # status, final URL, headers, body
FLICKR = "http://farm3.static.flickr.com/2202"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def fetch(url: str, proxy: str | None = None, timeout: float = 5, follow: bool = True) -> Response:
    """GET ``url`` (through ``proxy`` when given); HTTP errors are returned, not raised."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({"http": proxy} if proxy else {})]
    if not follow:
        handlers.append(NoRedirect())
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status, resp.url, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.url, dict(err.headers), err.read()


PHOTOS = [
    FakePhoto(f"{FLICKR}/1_ok.jpg"),
    FakePhoto(f"{FLICKR}/2_gone.jpg", behaviour="410"),
    FakePhoto(f"{FLICKR}/3_dead.jpg", behaviour="redirect_placeholder"),
    FakePhoto(f"{FLICKR}/4_moved.jpg", behaviour="redirect_https"),
    FakePhoto(f"{FLICKR}/5_direct.jpg", behaviour="placeholder_direct"),
    FakePhoto(f"{FLICKR}/6_empty.jpg", behaviour="empty"),
    FakePhoto("http://www.example-photos.com/x.jpg", behaviour="500_once"),
    FakePhoto("http://www.example-photos.com/hang.jpg", behaviour="hang"),
    FakePhoto("http://www.example-photos.com/bomb.png", behaviour="huge_pixels"),
    FakePhoto(f"{FLICKR}/7_old.jpg", behaviour="redirect_placeholder", location=PLACEHOLDER_GIF_URL),
    FakePhoto(f"{FLICKR}/8_unknown.jpg", behaviour="placeholder_unknown"),
]


@pytest.fixture
def hosts() -> Iterator[PhotoHosts]:
    with PhotoHosts({"n01440764": PHOTOS}) as server:
        yield server
        assert not server.errors


# -- geturls ------------------------------------------------------------------------------------
@pytest.fixture
def geturls() -> Iterator[GeturlsServer]:
    classes = {w: [f"http://h/{w}/{i}.jpg" for i in range(3)] for w in ("n1", "n2", "n3", "n4", "n5", "n6", "n7")}
    formats = {"n2": "plain_lf", "n3": "getmapping", "n4": "getmapping_tab", "n5": "not_ready", "n6": "invalid"}
    with GeturlsServer(classes, formats, behaviours={"n7": "500_once"}) as server:
        yield server
        assert not server.errors


def test_geturls_formats(geturls: GeturlsServer) -> None:
    urls = [f"http://h/n1/{i}.jpg" for i in range(3)]
    status, _, headers, body = fetch(geturls.geturls_url("n1"))
    assert status == 200 and headers["Content-Type"] == "text/plain"
    assert body.decode() == "\r\n".join(urls) + "\r\n\r\n"
    assert fetch(geturls.geturls_url("n1", "text"))[3] == body
    assert fetch(geturls.geturls_url("n2"))[3].decode() == "".join(u.replace("n1", "n2") + "\n" for u in urls)
    assert fetch(geturls.geturls_url("n3"))[3].decode().split("\r\n")[:2] == [
        "n3_1 http://h/n3/0.jpg",
        "n3_2 http://h/n3/1.jpg",
    ]
    assert fetch(geturls.geturls_url("n4"))[3].decode().splitlines()[2] == "n4_3\thttp://h/n4/2.jpg"
    mapping = fetch(geturls.geturls_url("n1", "mapping"))[3].decode()
    assert mapping == "".join(f"n1_{i + 1} {u}\r\n" for i, u in enumerate(urls))


def test_geturls_error_bodies(geturls: GeturlsServer) -> None:
    assert fetch(geturls.geturls_url("n5"))[::3] == (200, NOT_READY.encode())
    assert fetch(geturls.geturls_url("n6", "mapping"))[::3] == (200, INVALID.encode())
    assert fetch(geturls.geturls_url("n99999999"))[::3] == (200, b"The synset is not ready yet. Please stay tuned!")
    assert fetch(f"{geturls.url}/api/imagenet.synset.geturls")[3] == b"Invalid url!"
    assert fetch(geturls.geturls_url("n7"))[0] == 500
    assert fetch(geturls.geturls_url("n7"))[0] == 200
    assert geturls.requests_for_wnid("n7") == 2
    geturls.formats["n1"] = "maintenance"
    status, _, headers, _ = fetch(geturls.geturls_url("n1"))
    assert status == 404 and headers["Content-Type"].startswith("text/html")


# -- photo hosts --------------------------------------------------------------------------------
def test_proxied_get_by_absolute_url(hosts: PhotoHosts) -> None:
    status, _, headers, body = fetch(f"{FLICKR}/1_ok.jpg", hosts.url)
    assert (status, headers["Content-Type"], body) == (200, "image/jpeg", PHOTOS[0].body)
    assert Image.open(io.BytesIO(body)).size == (48, 40)
    assert fetch(f"{FLICKR}/2_gone.jpg", hosts.url)[0] == 410
    assert fetch("http://farm9.static.flickr.com/2202/1_ok.jpg", hosts.url)[0] == 404  # other host
    assert fetch(f"{hosts.url}/2202/1_ok.jpg")[3] == PHOTOS[0].body  # path-only convenience
    assert [fetch("http://www.example-photos.com/x.jpg", hosts.url)[0] for _ in range(2)] == [500, 200]
    assert fetch(f"{FLICKR}/6_empty.jpg", hosts.url)[::3] == (200, b"")
    assert hosts.hits_for(f"{FLICKR}/1_ok.jpg") == 2
    assert hosts.url_log[0] == f"{FLICKR}/1_ok.jpg"
    assert hosts.requests_by_class() == {"n01440764": 6}  # farm9 is not a registered URL


def test_redirects_and_placeholders(hosts: PhotoHosts) -> None:
    status, final, headers, body = fetch(f"{FLICKR}/3_dead.jpg", hosts.url)
    assert (status, final, headers["Content-Type"]) == (200, PLACEHOLDER_URL, "image/png")
    assert body == placeholder_png() and Image.open(io.BytesIO(body)).size == (500, 374)
    status, _, headers, _ = fetch(f"{FLICKR}/3_dead.jpg", hosts.url, follow=False)
    assert (status, headers["Location"]) == (302, PLACEHOLDER_URL)
    status, final, headers, _ = fetch(f"{FLICKR}/7_old.jpg", hosts.url)
    assert (status, final, headers["Content-Type"]) == (200, PLACEHOLDER_GIF_URL, "image/gif")
    status, final, _, body = fetch(f"{FLICKR}/4_moved.jpg", hosts.url)
    assert (status, final, body) == (200, moved_url(f"{FLICKR}/4_moved.jpg"), PHOTOS[3].body)
    assert final.startswith("http://secure.farm3.static.flickr.com/")
    assert fetch(f"{FLICKR}/5_direct.jpg", hosts.url)[::3] == (200, placeholder_png())
    assert fetch(f"{FLICKR}/8_unknown.jpg", hosts.url)[3] == unknown_placeholder()
    assert fetch(PLACEHOLDER_URL, hosts.url)[3] == placeholder_png()
    assert hosts.requests_by_class()["n01440764"] == 7  # 3_dead x2, moved hop counted, placeholders not


def test_huge_pixels_is_a_small_decompression_bomb(hosts: PhotoHosts, monkeypatch: pytest.MonkeyPatch) -> None:
    status, _, headers, body = fetch("http://www.example-photos.com/bomb.png", hosts.url)
    assert status == 200 and headers["Content-Type"] == "image/png" and len(body) < 100_000
    # Pillow's own limit (the image stage lifts it only around its own opens, for ours)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1024 * 1024 * 1024 // 4 // 3)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(body))


def test_hang_is_bounded_and_stop_ends_it(hosts: PhotoHosts) -> None:
    hosts.hang_seconds = 0.3
    start = time.monotonic()
    with pytest.raises((http.client.RemoteDisconnected, urllib.error.URLError, ConnectionError)):
        fetch("http://www.example-photos.com/hang.jpg", hosts.url)
    assert time.monotonic() - start >= 0.3
    hosts.hang_seconds = 30
    failures: list[Exception] = []

    def hang() -> None:
        try:
            fetch("http://www.example-photos.com/hang.jpg", hosts.url, timeout=10)
        except (OSError, http.client.HTTPException) as exc:
            failures.append(exc)

    worker = threading.Thread(target=hang)
    worker.start()
    time.sleep(0.2)
    assert hosts.concurrent_now == 1
    start = time.monotonic()
    hosts.stop()  # must end the hanging request, not wait 30 s
    worker.join(3)
    assert not worker.is_alive() and time.monotonic() - start < 3 and len(failures) == 1


def test_max_concurrent_and_latency() -> None:
    photos = [FakePhoto(f"http://farm4.staticflickr.com/1/{i}.jpg", delay=0.4) for i in range(5)]
    with PhotoHosts(photos) as server:
        threads = [threading.Thread(target=fetch, args=(p.url, server.url)) for p in photos]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        deadline = time.monotonic() + 2  # the server counts a request out just after the client has its answer
        while server.concurrent_now and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.max_concurrent == 5 and server.concurrent_now == 0
        server.clear_log()
        assert server.max_concurrent == 0 and server.url_log == []


def test_loopback_targets_are_refused(geturls: GeturlsServer) -> None:
    with PhotoHosts() as server:
        assert fetch(geturls.geturls_url("n5"), server.url)[0] == 502  # the proxy relays nothing
        assert server.proxy_env()["no_proxy"] == "127.0.0.1,localhost"
    assert geturls.log == []


def test_make_classes_is_deterministic() -> None:
    classes = make_classes(4, 10, seed=7, latency=(0.0, 0.05))
    assert list(classes) == ["n00000000", "n00000001", "n00000002", "n00000003"]
    assert [p.url for ps in classes.values() for p in ps] == [
        p.url for ps in make_classes(4, 10, 7).values() for p in ps
    ]
    photos = [p for ps in classes.values() for p in ps]
    assert len({p.url for p in photos}) == len({p.body for p in photos}) == 40
    assert all(p.url.startswith("http://") and "static" in p.url for p in photos)
    assert all(sum(not p.is_good for p in ps) == 3 for ps in classes.values())
    assert all(0 <= p.delay <= 0.05 for p in photos)
    assert list(make_classes(2, 1, wnids=["n01440764", "n01443537"])) == ["n01440764", "n01443537"]
