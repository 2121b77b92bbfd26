"""Kill -9 at any moment, run the same command again: the dataset an uninterrupted run gives."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import crawl, start_scrapy
from tests.emulators import FakeImage, ImageHost, IsicV2Server, images
from tests.emulators.imagenet import GeturlsServer, PhotoHosts, make_classes, placeholder_png


def start(spider: str, out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "scrapy", "crawl", spider, "-a", f"out_dir={out}", *(f"-a{a}" for a in args)]
    environ = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")} | (env or {})
    return start_scrapy(cmd, env=environ)


def interrupt(proc: subprocess.Popen, after: float, sig: int = signal.SIGKILL) -> None:
    time.sleep(after)
    proc.send_signal(sig)
    proc.wait(timeout=60)


def kill_after_lines(proc: subprocess.Popen, manifest: Path, lines: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` once the manifest has ``lines`` lines: mid-crawl, whatever the machine's speed."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists() and manifest.read_bytes().count(b"\n") >= lines:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the crawl ended before it could be killed"
    proc.send_signal(sig)
    if sig == signal.SIGKILL:
        proc.wait(timeout=60)


def assert_every_file_is_whole(root: Path) -> None:
    for path in root.rglob("*") if root.exists() else []:
        if path.is_file() and path.suffix in (".jpg", ".png", ".tif"):
            with Image.open(path) as im:
                im.load()  # raises on a partial file


@pytest.mark.parametrize("lines", [2, 15, 40])
def test_imagenet_killed_then_rerun_meets_every_guarantee(lines, out):
    # placeholder_direct serves bytes no list knows, for 5 URLs: only learning can catch it
    behaviours = ("404", "html", "truncated", "reset", "redirect_placeholder", "placeholder_direct")
    classes = make_classes(6, 18, seed=21, failure_rate=0.35, latency=(0.05, 0.3), rng_behaviours=behaviours)
    good = {w: {p.body for p in ps if p.is_good} for w, ps in classes.items()}
    wnids = ",".join(classes)
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        args = (f"wnids={wnids}", "per_class=8", f"api_url={api.geturls_url('x').split('?')[0]}")
        kill_after_lines(start("imagenet", out, *args, env=hosts.proxy_env()), out / "manifest.jsonl", lines)
        assert_every_file_is_whole(out / "Images")
        for folder in (out / "Images").iterdir() if (out / "Images").exists() else []:
            assert not folder.is_dir() or len(list(folder.iterdir())) <= 8
        run = crawl("imagenet", out, *args, env=hosts.proxy_env())
    assert run.code == 0, run.stderr
    assert not list((out / ".staging").iterdir())
    digests = set()
    for wnid in classes:
        files = run.files(f"Images/{wnid}")
        assert len(files) == 8, (wnid, sorted(files))
        assert set(files.values()) <= good[wnid]
        assert placeholder_png() not in files.values()
        digests |= {hashlib.sha256(b).hexdigest() for b in files.values()}
    assert len(digests) == 8 * len(classes)
    assert_every_file_is_whole(out / "Images")


def test_isic_killed_then_rerun_gives_the_uninterrupted_selection(tmp_path):
    records = [FakeImage(f"ISIC_{i:07d}", body=images.jpeg(640, 480, seed=i)) for i in range(160)]
    for i in (5, 40, 90):
        records[i].behaviour = "404"
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        args = (f"api_url={api.url}/api/v2", "num_images=150")
        reference = crawl("isic", tmp_path / "ref", *args)
        assert reference.code == 0
        for lines in (20, 90):
            kill_after_lines(start("isic", tmp_path / "k", *args), tmp_path / "k" / "manifest.jsonl", lines)
            assert_every_file_is_whole(tmp_path / "k" / "Images")
        resumed = crawl("isic", tmp_path / "k", *args)
    assert resumed.code == 0, resumed.stderr
    assert resumed.files("Images") == reference.files("Images")
    assert resumed.files("Descriptions") == reference.files("Descriptions")
    assert (tmp_path / "k" / "metadata.csv").read_text() == (tmp_path / "ref" / "metadata.csv").read_text()


def test_one_ctrl_c_stops_cleanly_and_the_rerun_completes(out):
    classes = make_classes(4, 16, seed=22, failure_rate=0.2, latency=(0.2, 0.5))
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        args = (f"wnids={','.join(classes)}", "per_class=8", f"api_url={api.geturls_url('x').split('?')[0]}")
        proc = start("imagenet", out, *args, env=hosts.proxy_env())
        kill_after_lines(proc, out / "manifest.jsonl", 5, signal.SIGINT)
        proc.wait(timeout=20)  # one Ctrl-C stops the crawl: the images in flight finish or are dropped
        assert proc.returncode == 1  # stopped early, and said so
        assert_every_file_is_whole(out / "Images")
        run = crawl("imagenet", out, *args, env=hosts.proxy_env())
    assert run.code == 0, run.stderr
    assert all(len(run.files(f"Images/{w}")) == 8 for w in classes)


def test_a_torn_manifest_line_is_tolerated_and_repaired(out):
    records = [FakeImage(f"ISIC_{i:07d}") for i in range(4)]
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        assert crawl("isic", out, f"api_url={api.url}/api/v2", "num_images=2").code == 0
        with open(out / "manifest.jsonl", "a") as f:
            f.write('{"id": "ISIC_0000002", "kind": "ima')  # a write cut by a crash
        run = crawl("isic", out, f"api_url={api.url}/api/v2", "num_images=4")
    assert run.code == 0, run.stderr
    assert len(run.files("Images")) == 4
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert '{"id": "ISIC_0000002", "kind": "ima' not in lines  # repaired once: cut off, set aside in .quarantine
    assert (out / ".quarantine" / "manifest.torn-lines").read_text() == '{"id": "ISIC_0000002", "kind": "ima\n'
    assert sum(1 for line in lines if '"outcome": "kept"' in line) == 4


def test_a_second_ctrl_c_stops_at_once_and_still_leaves_no_partial_file(out):
    classes = make_classes(4, 16, seed=23, failure_rate=0.2, latency=(0.3, 0.8))
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        hosts.hang_seconds = 600  # a run that waited on its downloads would outlast interrupt's wait
        args = (f"wnids={','.join(classes)}", "per_class=8", f"api_url={api.geturls_url('x').split('?')[0]}")
        proc = start("imagenet", out, *args, env=hosts.proxy_env())
        kill_after_lines(proc, out / "manifest.jsonl", 5, signal.SIGINT)
        time.sleep(0.2)
        interrupt(proc, 0, signal.SIGINT)
        assert_every_file_is_whole(out / "Images")
        run = crawl("imagenet", out, *args, env=hosts.proxy_env())
    assert run.code == 0, run.stderr
    assert all(len(run.files(f"Images/{w}")) == 8 for w in classes)


def test_files_a_crash_left_without_their_lines_are_checked_like_new_downloads(out):
    classes = make_classes(2, 14, seed=24, failure_rate=0.0)
    wnid = next(iter(classes))
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        args = (f"wnids={','.join(classes)}", "per_class=8", f"api_url={api.geturls_url('x').split('?')[0]}")
        assert crawl("imagenet", out, *args, env=hosts.proxy_env()).code == 0
        folder = out / "Images" / wnid
        files = sorted(folder.iterdir())
        manifest = out / "manifest.jsonl"
        lines = manifest.read_text().splitlines(keepends=True)
        unlisted = files[0].stem  # its line lost: as if killed between the rename and the line
        manifest.write_text("".join(line for line in lines if f'"id": "{unlisted}"' not in line))
        files[1].unlink()  # room for two newcomers that must be refused
        (folder / f"{wnid}_copy.jpg").write_bytes(files[2].read_bytes())  # a duplicate under a new name
        (folder / f"{wnid}_junk.jpg").write_bytes(b"<html>not an image</html>")
        run = crawl("imagenet", out, *args, env=hosts.proxy_env())
    assert run.code == 0, run.stderr
    kept = run.files(f"Images/{wnid}")
    assert len(kept) == 8 and f"{wnid}_junk.jpg" not in kept and f"{wnid}_copy.jpg" not in kept
    assert len(set(kept.values())) == 8
    assert f"{unlisted}.jpg" in kept
    assert sorted(p.name for p in (out / ".quarantine" / "Images" / wnid).iterdir()) == [
        f"{wnid}_copy.jpg", f"{wnid}_junk.jpg"
    ]
    adopted = [line for line in run.manifest() if line["id"] == unlisted]
    assert adopted[-1]["outcome"] == "present" and adopted[-1]["detail"] == "found without a manifest line"
