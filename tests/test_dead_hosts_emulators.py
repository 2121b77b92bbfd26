"""The dead-host emulators (tests/emulators/dead_hosts.py) do what their names say, seen from a plain
socket or urllib client with short timeouts: the crawl tests of issue 17 rely on each behaviour being
real (a connect that hangs, a refusal, a status line that never comes) and on their counters."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.emulators.dead_hosts import (
    ALL_GOOD,
    BLACK_HOLED,
    DNS_ENV,
    REFUSED,
    UNCONNECTED,
    UNRESOLVED,
    BlackHole,
    DeadHostsWorld,
    FlappingHost,
    GatewayProxy,
    Refusing,
    SlowHost,
    Unconnectable,
    refusing_url,
    unresolvable_urls,
    wait_until,
    write_url_list,
)
from tests.emulators.images import pixel_size

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def address(url: str) -> tuple[str, int]:
    netloc = url.split("://", 1)[1].split("/", 1)[0]
    host, port = netloc.rsplit(":", 1)
    return host, int(port)


def get(url: str, timeout: float = 2.0) -> bytes:
    with DIRECT.open(url, timeout=timeout) as answer:
        return answer.read()


def test_each_peer_is_a_host_of_its_own_on_loopback():
    with BlackHole() as a, Refusing() as b, SlowHost(1, delay=0) as c:
        hosts = [a.host, b.host, c.host]
        assert len(set(hosts)) == 3 and all(h.startswith("127.0.0.") and h != "127.0.0.1" for h in hosts)
        assert c.urls[0].startswith(f"http://{c.host}:")


def test_a_black_hole_accepts_reads_and_never_answers():
    with BlackHole() as hole:
        with socket.create_connection((hole.host, hole.port), timeout=1) as sock:  # the connect succeeds
            sock.sendall(b"GET /a.jpg HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):
                sock.recv(1)  # not a byte back
            assert wait_until(lambda: hole.requests == ["GET /a.jpg HTTP/1.1"])
            assert hole.open_connections == 1
        with pytest.raises(TimeoutError):
            get(hole.url_for("/b.jpg"), timeout=0.3)
        assert wait_until(lambda: hole.closed_by_client == 2)  # both clients gave up and closed
        assert hole.connections == 2 and hole.open_connections == 0 and hole.peak_open >= 1
        assert hole.requests == ["GET /a.jpg HTTP/1.1", "GET /b.jpg HTTP/1.1"]


def test_a_black_hole_holds_connections_until_stopped():
    hole = BlackHole().start()
    sock = socket.create_connection((hole.host, hole.port), timeout=1)
    assert wait_until(lambda: hole.open_connections == 1)
    hole.stop()
    sock.settimeout(1)
    assert sock.recv(1) == b""  # closed by the peer at stop, never answered
    sock.close()


def test_connecting_to_an_unconnectable_host_hangs_until_the_client_gives_up():
    with Unconnectable() as host:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            socket.create_connection((host.host, host.port), timeout=0.5)
        assert time.monotonic() - start >= 0.45
        with pytest.raises((TimeoutError, urllib.error.URLError)):
            get(host.url_for("/x.jpg"), timeout=0.3)
    with pytest.raises(ConnectionRefusedError):  # stopped: the port is closed
        socket.create_connection((host.host, host.port), timeout=0.5)


def test_a_refusing_host_refuses_at_once():
    with Refusing() as host:
        with pytest.raises(ConnectionRefusedError):  # refused, not timed out
            socket.create_connection((host.host, host.port), timeout=2)
        with pytest.raises(urllib.error.URLError, match="refused"):
            get(host.url_for("/x.jpg"))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address(refusing_url()), timeout=2)


def test_a_slow_host_answers_after_its_delay_and_counts_concurrency():
    with SlowHost(2, delay=0.4) as host:
        with socket.create_connection((host.host, host.port), timeout=1) as sock:
            sock.sendall(f"GET /{host.urls[0].split('/', 3)[3]} HTTP/1.1\r\nHost: {host.netloc}\r\n\r\n".encode())
            sock.settimeout(0.2)
            with pytest.raises(TimeoutError):
                sock.recv(1)  # not even the status line before the delay
            sock.settimeout(1)
            assert sock.recv(12) == b"HTTP/1.1 200"
        got: dict[str, bytes] = {}
        threads = [threading.Thread(target=lambda u=u: got.setdefault(u, get(u))) for u in host.urls]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert time.monotonic() - start > 0.35  # both waited the delay (side by side: max_concurrent)
        assert got == host.bodies
        assert wait_until(lambda: host.concurrent_now == 0, timeout=5)  # its threads end after the reply
        assert host.requests == 3 and host.max_concurrent == 2
        assert all(pixel_size(body) == (48, 40) for body in got.values())
        assert len(set(got.values())) == 2


def test_a_flapping_host_refuses_while_down_and_serves_on_the_same_address_when_up():
    with FlappingHost(2) as host:
        url = host.urls[0]
        assert get(url) == host.bodies[url]
        host.down()
        assert not host.is_up and host.url == url.rsplit("/", 1)[0]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address(url), timeout=1)
        host.up()
        assert get(host.urls[1]) == host.bodies[host.urls[1]]
        assert host.served == 2 and host.downs == 1


def test_a_flapping_host_can_start_down_for_a_while():
    with FlappingHost(1, down_for=0.3) as host:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address(host.urls[0]), timeout=1)
        assert wait_until(lambda: host.is_up, timeout=2)
        assert get(host.urls[0]) == host.bodies[host.urls[0]] and host.served == 1


def test_an_invalid_name_does_not_resolve():
    url = unresolvable_urls(1)[0]
    name = url.split("/")[2]
    assert name.endswith(".invalid")
    done = subprocess.run(["getent", "hosts", name], env=os.environ | DNS_ENV, capture_output=True, timeout=10)
    assert done.returncode == 2 and not done.stdout  # 2: not found


def test_the_gateway_proxy_answers_502_and_504_for_unreachable_upstreams_and_serves_the_rest():
    with GatewayProxy(bad_gateway=["gone.example"], gateway_timeout=["slow.example"]) as proxy:
        urls = proxy.photo_urls("farm1.staticflickr.com", 2, wnid="n01440764")
        client = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url}))
        statuses = []
        for url in ["http://gone.example/1.jpg", "http://gone.example/2.jpg", "http://slow.example/1.jpg",
                    "http://else.example/1.jpg"]:
            with pytest.raises(urllib.error.HTTPError) as failed:
                client.open(url, timeout=2)
            statuses.append(failed.value.code)
        assert statuses == [502, 502, 504, 404]
        with client.open(urls[0], timeout=2) as answer:
            assert answer.read() == proxy.photos[urls[0]].body
        assert proxy.requests_to("gone.example") == 2 and proxy.requests_to("slow.example") == 1
        assert proxy.requests_to("farm1.staticflickr.com") == 1
        assert "127.0.0.37" in proxy.proxy_env()["no_proxy"].split(",")


def test_write_url_list_is_fall11_form(tmp_path: Path):
    path = write_url_list(tmp_path / "urls.txt", {"n01440764": ["http://a/1.jpg", "http://b/2.jpg"],
                                                  "n01443537": ["http://c/3.jpg"]})
    assert path.read_text() == ("n01440764_1\thttp://a/1.jpg\nn01440764_2\thttp://b/2.jpg\n"
                                "n01443537_1\thttp://c/3.jpg\n")


def test_the_world_puts_dead_hosts_in_front_of_good_urls_and_checks_a_result(tmp_path: Path):
    with DeadHostsWorld(black_holed=3, refused=4, good=6, unconnectable=2, unresolvable=2) as world:
        assert world.wnids == [BLACK_HOLED, REFUSED, ALL_GOOD, UNCONNECTED, UNRESOLVED]
        bh = world.classes[BLACK_HOLED]
        a, b = (hole.netloc for hole in world.black_holes)
        assert [u.split("/")[2] for u in bh[:6]] == [a, b] * 3  # two black holes, interleaved
        assert all(u in world.bodies for u in bh[6:]) and len(bh) == 12
        assert all(u.split("/")[2] == world.refusing.netloc for u in world.classes[REFUSED][:4])
        assert all(u in world.bodies for u in world.classes[ALL_GOOD]) and len(world.classes[ALL_GOOD]) == 6
        assert world.classes[UNRESOLVED][0].startswith("http://photos-gone.invalid/")
        assert world.dead_urls == 6 + 4 + 2 + 2
        assert len(set(world.bodies.values())) == 5 * 6  # every good URL its own bytes
        assert get(world.classes[ALL_GOOD][0]) == world.bodies[world.classes[ALL_GOOD][0]]
        lines = world.write(tmp_path / "list.txt").read_text().splitlines()
        assert lines[0] == f"{BLACK_HOLED}_1\t{bh[0]}" and len(lines) == sum(map(len, world.classes.values()))

        images = tmp_path / "Images"
        for wnid, urls in world.classes.items():
            (images / wnid).mkdir(parents=True)
            for i, url in enumerate(u for u in urls if u in world.bodies):
                if i < 2:
                    (images / wnid / f"{wnid}_{i}.jpg").write_bytes(world.bodies[url])
        assert world.check(images, 2) == []
        assert world.check(images, 3) == [f"{w}: 2 files, expected 3" for w in world.classes]
        (images / REFUSED / "x.jpg").write_bytes(world.bodies[world.classes[ALL_GOOD][0]])
        assert world.check(images, 3)[1] == f"{REFUSED}/x.jpg: not a body served for this class"
        assert world.good_requests() == 1 and world.dead_host_requests() == {
            a: {"connections": 0, "requests": 0}, b: {"connections": 0, "requests": 0}}
