"""Dead hosts cost a few connections, not one timeout per URL (issue 17), against real peers on
loopback (tests/emulators/dead_hosts.py): hosts that accept and never answer, refuse, never let a
connection complete, do not resolve, sit behind a proxy that cannot reach them, or are down for a
moment. Limits are small here (1 s); the defaults are in the README. Exactness is checked in
every case: exactly N per class, each file byte for byte an image its class listed.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

from tests.conftest import ROOT, clean_env, crawl, crawl_command
from tests.emulators.dead_hosts import (
    BLACK_HOLED,
    DNS_ENV,
    REFUSED,
    DeadHostsWorld,
    FlappingHost,
    GatewayProxy,
    SlowHost,
    image_body,
    write_url_list,
)

FAST = {"IMAGES_CONNECT_TIMEOUT": "1", "IMAGES_FIRST_BYTE_TIMEOUT": "1", "HOSTS_DOWN_FOR": "1",
        "DNS_TIMEOUT": "2", "RETRY_TIMES": "1"}


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def last_lines(out: Path) -> dict[str, dict]:
    return {line["id"]: line for line in lines(out)}


def one_class(tmp_path: Path, urls: list[str], per_class: int, settings: dict[str, str]):
    """``scrapy crawl imagenet`` of one class (n01440764) listing ``urls``, into ``tmp_path/out``."""
    listed = tmp_path / "urls.txt"
    write_url_list(listed, {"n01440764": urls})
    return crawl("imagenet", tmp_path / "out", f"urls_file={listed}", "wnids=n01440764", f"per_class={per_class}",
                 "flickr_only=false", settings=settings, timeout=90)


def test_dead_hosts_in_front_of_good_urls_cost_a_few_connections_and_every_class_is_exact(tmp_path):
    """Two black-holed hosts, a refusing one, an unconnectable one and a name that does not
    resolve, each in front of good URLs: every class ends exact, the silent hosts get a bounded
    number of requests however many URLs they have, and the summary names the hosts down."""
    with DeadHostsWorld(black_holed=15, refused=30, good=8, unconnectable=15, unresolvable=30) as world:
        urls = world.write(tmp_path / "urls.txt")
        run = crawl("imagenet", tmp_path / "out", f"urls_file={urls}", f"wnids={','.join(world.wnids)}",
                    "per_class=5", "flickr_only=false", settings=FAST, env=DNS_ENV, timeout=90)
        requests = {host: seen["requests"] for host, seen in world.dead_host_requests().items()}
        assert run.code == 0, run.stderr[-3000:]
        assert world.check(tmp_path / "out" / "Images", 5) == []
    assert all(n <= 4 for n in requests.values()), requests  # 15 URLs each; a couple of probes at most
    outcomes = Counter(line["outcome"] for line in last_lines(tmp_path / "out").values())
    assert outcomes["kept"] == 25 and "Traceback" not in run.stderr


def test_a_class_whose_dead_candidates_must_be_decided_skips_them_once_the_host_is_down(tmp_path):
    """Only 3 good URLs behind 12 on a refusing host and 12 on a black-holed one: the class ends
    short after at most a few tries of each host; the rest are host_down, named in the summary,
    the report and each line's detail; a re-run tries them again."""
    with DeadHostsWorld(black_holed=12, black_holes=1, refused=12, good=3) as world:
        wnids = [BLACK_HOLED, REFUSED]
        urls = world.write(tmp_path / "urls.txt")
        args = (f"urls_file={urls}", f"wnids={','.join(wnids)}", "per_class=5", "flickr_only=false")
        first = crawl("imagenet", tmp_path / "out", *args, settings=FAST, timeout=90)
        holes = {host: seen["requests"] for host, seen in world.dead_host_requests().items()}
        after_first = lines(tmp_path / "out")
        second = crawl("imagenet", tmp_path / "out", *args, settings=FAST, timeout=90)
        again = {host: seen["requests"] for host, seen in world.dead_host_requests().items()}
    assert first.code == 0 and second.code == 0, first.stderr[-3000:]
    assert all(n <= 6 for n in holes.values()), holes  # 3 failures take it down, then a probe or two
    last = {line["id"]: line for line in after_first}
    down = [line for line in last.values() if line["outcome"] == "host_down"]
    assert len(down) >= 12, Counter(line["outcome"] for line in last.values())
    assert all(" is down (" in line["detail"] and "connection failures in a row" in line["detail"] for line in down)
    assert "Hosts down: 2: " in first.stderr and "candidate(s) not asked" in first.stderr
    assert "host_down" in (tmp_path / "out" / "report.html").read_text()
    assert sum(again.values()) > sum(holes.values())  # the re-run asked the host again: host_down is not final
    rerun = {line["id"] for line in lines(tmp_path / "out")[len(after_first):]}
    assert {line["id"] for line in down} & rerun


def test_a_host_down_for_a_moment_never_leaves_a_class_short(tmp_path):
    """Every candidate of the class is on one host that refuses connections until the crawl has
    taken it down: its candidates are skipped, and before the class ends short the host's probe
    (HOSTS_SHORT_PROBE_AFTER later, not its 30 s cool-down) finds it back: the class ends full.
    7 of 8: the candidates refused while it went down (several in flight at once) go again too."""
    bodies = [image_body(f"flap-{i}") for i in range(8)]
    with FlappingHost(bodies) as host:
        host.down()
        listed = tmp_path / "urls.txt"
        write_url_list(listed, {"n01440764": host.urls})
        settings = {**FAST, "HOSTS_DOWN_FOR": "30", "HOSTS_SHORT_PROBE_AFTER": "6"}
        proc = subprocess.Popen(
            crawl_command("imagenet", tmp_path / "out", f"urls_file={listed}", "wnids=n01440764", "per_class=7",
                          "flickr_only=false", settings=settings),
            cwd=ROOT, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        manifest = tmp_path / "out" / "manifest.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and b"host_down" not in (manifest.read_bytes() if manifest.exists() else b""):
            time.sleep(0.05)
        host.up()  # back after a moment: before the probe
        _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 0, stderr[-3000:]
    files = sorted(p.read_bytes() for p in (tmp_path / "out" / "Images" / "n01440764").iterdir())
    assert len(files) == 7 and set(files) <= set(bodies)
    assert "host_down" in json.dumps(lines(tmp_path / "out")) and " answers again " in stderr


def test_a_proxy_that_cannot_reach_a_host_takes_it_down(tmp_path):
    """Through an HTTP proxy, 502/504 for an unreachable host count as connection failures: the
    host goes down after a few, its other candidates are not asked; 404 proves a host alive."""
    with GatewayProxy(bad_gateway=["gone.example.com"], gateway_timeout=["slow.example.net"]) as proxy:
        gone = [f"http://gone.example.com/p/{i}.jpg" for i in range(12)]
        stalled = [f"http://slow.example.net/p/{i}.jpg" for i in range(12)]
        good = proxy.photo_urls("farm1.staticflickr.com", 6, "n01440764")
        listed = tmp_path / "urls.txt"
        write_url_list(listed, {"n01440764": [*gone, *good[:3]], "n01443537": [*stalled, *good[3:]]})
        run = crawl("imagenet", tmp_path / "out", f"urls_file={listed}", "wnids=n01440764,n01443537",
                    "per_class=3", "flickr_only=false", settings=FAST, env=proxy.proxy_env(), timeout=90)
        asked = {host: proxy.requests_to(host) for host in ("gone.example.com", "slow.example.net")}
    assert run.code == 0, run.stderr[-3000:]
    assert all(len(list((tmp_path / "out" / "Images" / w).iterdir())) == 3 for w in ("n01440764", "n01443537"))
    assert all(n <= 8 for n in asked.values()), asked  # 12 URLs each, retries included, and probes


def test_a_slow_but_living_host_keeps_every_image(tmp_path):
    """Every answer after 1.5 s, under a 3 s first-byte limit: slow is not dead."""
    bodies = [image_body(f"slow-{i}") for i in range(6)]
    with SlowHost(bodies, delay=1.5) as host:
        run = one_class(tmp_path, host.urls, 6, {**FAST, "IMAGES_FIRST_BYTE_TIMEOUT": "3"})
    assert run.code == 0, run.stderr[-3000:]
    files = sorted(p.read_bytes() for p in (tmp_path / "out" / "Images" / "n01440764").iterdir())
    assert files == sorted(bodies)
    assert "host_down" not in json.dumps(lines(tmp_path / "out"))
