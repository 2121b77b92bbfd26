"""Cheap durability (group commit) keeps every crash promise, and settings mean what they say."""

from __future__ import annotations

import json
import sys

from tests.conftest import crawl, run_scrapy
from tests.emulators import ImageHost, IsicV2Server, make_archive
from tests.emulators.imagenet import GeturlsServer, PhotoHosts, make_classes


def verify(out, *flags):
    return run_scrapy([sys.executable, "-m", "scrapy", "verify", *flags, str(out)], timeout=60)


def drop_lines(out, image_ids):
    """As if these lines never became durable (a power cut before their batch was synced)."""
    manifest = out / "manifest.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join(line for line in lines if json.loads(line)["id"] not in image_ids))


def test_writes_a_power_cut_lost_are_found_by_the_next_run_and_fetched_again(out):
    records = make_archive(6)
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        args = (f"api_url={api.url}/api/v2",)
        assert crawl("isic", out, *args).code == 0
        zeroed, cut = out / "Images" / "ISIC_0000004.jpg", out / "Images" / "ISIC_0000005.jpg"
        drop_lines(out, {"ISIC_0000004", "ISIC_0000005"})
        zeroed.write_bytes(b"\0" * zeroed.stat().st_size)  # the blocks never reached the disk
        cut.write_bytes(cut.read_bytes()[:100])  # a write cut short
        host.clear_log()
        again = crawl("isic", out, *args)
    assert again.code == 0, again.stderr[-2000:]
    assert sorted(path for _, path in host.log) == ["/images/ISIC_0000004.jpg", "/images/ISIC_0000005.jpg"]
    assert {p.name: p.read_bytes() for p in (out / "Images").iterdir() if p.name != "metadata.jsonl"} == {
        f"{r.isic_id}.jpg": r.body for r in records}
    assert verify(out).returncode == 0


def test_a_lost_write_in_an_imagenet_class_is_set_aside_and_the_class_refilled(out):
    classes = make_classes(1, 8, seed=31, failure_rate=0.0)
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        args = ("wnids=n00000000", "per_class=4", f"api_url={api.geturls_url('x').split('?')[0]}")
        assert crawl("imagenet", out, *args, env=hosts.proxy_env()).code == 0
        folder = out / "Images" / "n00000000"
        victim = sorted(folder.iterdir())[0]
        drop_lines(out, {victim.stem})
        victim.write_bytes(b"\0" * victim.stat().st_size)
        again = crawl("imagenet", out, *args, env=hosts.proxy_env())
    assert again.code == 0, again.stderr[-2000:]
    assert len(list(folder.iterdir())) == 4
    assert (out / ".quarantine" / "Images" / "n00000000" / victim.name).read_bytes().strip(b"\0") == b""
    assert verify(out).returncode == 0


def test_verify_fix_never_takes_an_image_being_committed_for_junk(out):
    records = make_archive(3)
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        assert crawl("isic", out, f"api_url={api.url}/api/v2").code == 0
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    kept = next(line for line in lines if line["id"] == "ISIC_0000001")
    drop_lines(out, {"ISIC_0000001"})  # killed after the rename, before the kept line
    checked = verify(out)
    assert checked.returncode == 1 and "unlisted" in checked.stdout  # no intent line: junk, rightly
    (out / ".staging" / "committing.jsonl").write_text(json.dumps({**kept, "outcome": "committing"}) + "\n")
    assert verify(out, "--fix").returncode == 0
    assert (out / "Images" / "ISIC_0000001.jpg").read_bytes() == records[1].body


def test_concurrent_requests_cap_image_downloads_too(out):
    classes = make_classes(2, 6, seed=33, failure_rate=0.0, latency=(0.1, 0.15))
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        run = crawl("imagenet", out, f"wnids={','.join(classes)}", "per_class=4",
                    f"api_url={api.geturls_url('x').split('?')[0]}", env=hosts.proxy_env(),
                    settings={"CONCURRENT_REQUESTS": "1", "CONCURRENT_REQUESTS_PER_DOMAIN": "1",
                              "DATASET_EXTRA_IN_FLIGHT": "0"})  # no download cancelled mid-way
        most = hosts.max_concurrent
    assert run.code == 0, run.stderr[-2000:]
    assert most == 1
    assert all(len(run.files(f"Images/{w}")) == 4 for w in classes)
