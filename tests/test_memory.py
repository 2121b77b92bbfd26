"""Memory stays bounded however many bodies arrive at once (issue 7): gzip bombs are refused
before they inflate far, and a memory budget makes large images wait their turn, never fail."""

from __future__ import annotations

import subprocess
import tempfile
import threading
from pathlib import Path

from tests.conftest import ROOT, Run, clean_env, crawl, crawl_command
from tests.emulators import FakeImage, FakePhoto, GeturlsServer, ImageHost, IsicV2Server, PhotoHosts, images
from tests.emulators.behaviours import gzip_bomb

BOMBS = 8
# bytes. Before issue 7 each bomb cost 1 GiB, kept to the end of the run (8 bombs: 8.3 GiB);
# now the crawl peaks near 100 MiB. Even 64 MiB kept per bomb would exceed this.
PEAK_RSS_CAP = 400 * 1024 * 1024


def measured_crawl(
    spider: str, out: Path, *args: str, settings: dict[str, str] | None = None, timeout: float = 120
) -> tuple[Run, int]:
    """Like ``tests.conftest.crawl``, plus the crawl process's own peak RSS in bytes: its
    ``VmHWM``, read from /proc every 10 ms until it exits (not ``ru_maxrss``: on Linux a child
    started by vfork or fork inherits the high-water mark of this test process, which earlier
    tests may have raised)."""
    cmd = crawl_command(spider, out, *args, settings=settings)
    peak = [0]

    def watch(pid: int, done: threading.Event) -> None:
        while not done.wait(0.01):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                return
            if "VmHWM:" not in status:
                continue  # a zombie (Popen returns only once the child has exec'd the crawl)
            peak[0] = max(peak[0], int(status.split("VmHWM:")[1].split()[0]) * 1024)

    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, text=True)
        done = threading.Event()
        watcher = threading.Thread(target=watch, args=(proc.pid, done), daemon=True)
        watcher.start()
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            proc.wait()
        finally:
            timer.cancel()
            done.set()
            watcher.join()
        err.seek(0)
        stderr = err.read()
    return Run(proc.returncode, stderr, out), peak[0]


def test_gzip_bombs_at_once_are_too_large_without_inflating_into_memory(out):
    gzip_bomb()  # built once per process (about a second), before the crawl asks for it
    archive = [FakeImage(f"ISIC_{i:07d}", body=images.jpeg(64, 48, seed=900 + i)) for i in range(BOMBS + 4)]
    for img in archive[:BOMBS]:
        img.behaviour = "gzip_bomb"
    archive[BOMBS].behaviour = "gzip_ok"  # a legitimate image sent gzip-encoded anyway: kept
    with ImageHost(archive) as host, IsicV2Server(archive, host) as api:
        run, peak = measured_crawl("isic", out, f"api_url={api.url}/api/v2")
        image_headers = host.headers_for("/images/")
        api_headers = api.headers_for("/api/v2/")
        assert not host.errors and not api.errors
    print(f"peak RSS of the crawl: {peak / 2**20:.0f} MiB")
    assert run.code == 0, run.stderr
    assert "Traceback" not in run.stderr
    lines = {line["id"]: line for line in run.manifest()}
    assert run.outcomes() == {"too_large": BOMBS, "kept": 4}
    for img in archive[:BOMBS]:
        assert lines[img.isic_id]["outcome"] == "too_large"
        assert "Content-Encoding gzip" in lines[img.isic_id]["detail"]
        assert "inflates past IMAGES_ENCODED_MAXSIZE (67108864 B)" in lines[img.isic_id]["detail"]
    assert run.files("Images") == {f"{img.isic_id}.jpg": img.body for img in archive[BOMBS:]}
    assert peak < PEAK_RSS_CAP, f"peak RSS {peak / 2**20:.0f} MiB"

    # images ask for no transfer encoding (the bombs came anyway); API pages keep Scrapy's default
    assert len(image_headers) >= len(archive)
    assert {h.get("accept-encoding") for h in image_headers} == {"identity"}
    assert api_headers and all("gzip" in h.get("accept-encoding", "") for h in api_headers)


def test_large_images_at_once_wait_for_room_in_a_small_budget_and_are_all_kept(out):
    """Six ~600 KB photos and one of ~1.5 MB, all asked for at once, with 1 MB of budget: one
    body at a time fits, the rest wait (stopped after their headers, issued again)."""
    wnid = "n00000000"
    bodies = [images.png_rgb(450, 450, seed=i) for i in range(6)] + [images.png_rgb(710, 710, seed=99)]
    photos = [
        FakePhoto(f"http://farm3.static.flickr.com/1/{wnid}_{i}_ab.jpg", body=body, delay=0.2)
        for i, body in enumerate(bodies)
    ]
    assert 550_000 < len(bodies[0]) < 650_000 and len(bodies[-1]) > 1_000_000
    classes = {wnid: photos}
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        run = crawl(
            "imagenet", out, f"api_url={api.geturls_url('x').split('?')[0]}", f"wnids={wnid}",
            f"per_class={len(photos)}", env=hosts.proxy_env(), settings={"IMAGES_MEMORY_BUDGET": "1000000"},
        )
        requests = sum(hosts.hits_for(p.url) for p in photos)
        assert not hosts.errors and not api.errors
    assert run.code == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert run.outcomes() == {"kept": len(photos)}
    assert sorted(run.files(f"Images/{wnid}").values()) == sorted(bodies)
    assert "image downloads wait their turn" in run.stderr
    assert requests > len(photos), "no download had to wait: the budget was not exercised"
