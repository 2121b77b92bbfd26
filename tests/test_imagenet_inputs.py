"""`scrapy crawl imagenet` from the class files researchers hold, each in its published shape."""

from __future__ import annotations

import itertools
import os

import pytest

from tests.emulators.imagenet import GeturlsServer, PhotoHosts, make_classes
from tests.test_imagenet_crawl import imagenet

WNIDS = ["n01440764", "n01443537", "n02119789"]
NAMED = [("tench", "n01440764"), ("goldfish", "n01443537"), ("kit_fox", "n02119789")]
#: (file name, its bytes, the (first lemma, wnid) of each class folder that layout=name_wnid makes)
CLASS_FILES = [
    ("synset_words.txt", "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n"
                         "n02119789 kit fox, Vulpes macrotis\n", NAMED),
    ("LOC_synset_mapping.txt", "n01440764 tench, Tinca tinca\r\nn01443537 goldfish, Carassius auratus\r\n"
                               "n02119789 kit fox, Vulpes macrotis\r\n", NAMED),
    ("map_clsloc.txt", "n01440764 449 tench\nn01443537 450 goldfish\nn02119789 1 kit_fox\n",
     NAMED),
    ("imagenet_class_index.json", '{"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"], '
                                  '"2": ["n02119789", "kit_fox"]}', NAMED),
    ("classes_in_imagenet.csv", "\ufeffsynid,class_name,urls,flickr_urls\r\nn01440764,tench,1300,900\r\n"
                                "n01443537,goldfish,1300,1000\r\nn02119789,kit fox,1200,800\r\n",
     NAMED),
]


@pytest.mark.parametrize(("name", "text", "labels"), CLASS_FILES, ids=[c[0] for c in CLASS_FILES])
def test_each_class_file_format_runs_a_whole_crawl(name, text, labels, out, tmp_path):
    listing = tmp_path / name
    listing.write_bytes(text.encode("utf-8"))
    classes = make_classes(3, 3, seed=21, failure_rate=0.0, wnids=WNIDS)
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        run = imagenet(out, hosts, api, f"wnids_file={listing}", "per_class=2", "layout=name_wnid")
    assert run.code == 0, run.stderr
    folders = sorted(f for f in os.listdir(out / "Images") if f not in ("classes.txt", "classes_given.txt"))
    assert folders == sorted(f"{label}_{wnid}" for label, wnid in labels)
    assert all(len(os.listdir(out / "Images" / f)) == 2 for f in folders)
    order = [line.split("\t")[1] for line in (out / "Images" / "classes_given.txt").read_text().splitlines()]
    assert order == WNIDS  # the file's order (Keras: its indices)
    index = [line.split("\t")[1] for line in (out / "Images" / "classes.txt").read_text().splitlines()]
    assert index == folders  # ImageFolder's order
    assert f"Read 3 class(es) from {listing}" in run.stderr


def test_a_file_in_no_known_format_is_one_line_and_exit_2(out, tmp_path):
    listing = tmp_path / "classes.html"
    listing.write_text("<html><body><h1>404 Not Found</h1></body></html>\n")
    with PhotoHosts({}) as hosts, GeturlsServer({}) as api:
        run = imagenet(out, hosts, api, f"wnids_file={listing}")
        assert api.log == [] and hosts.url_log == []
    assert run.code == 2
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: imagenet: wnids_file: {listing} line 1: '<html>")
    assert "is not a class line (accepted: one wnid a line;" in last and "Traceback" not in run.stderr


def test_the_list_as_imagenet_shipped_it_a_tgz_is_read_where_it_lies(tmp_path):
    import io
    import tarfile

    from tests.conftest import crawl

    classes = make_classes(2, 4, seed=22, failure_rate=0.0)
    lines = b"".join(f"{w}_{i}\t{p.url}\n".encode() for w, ps in classes.items() for i, p in enumerate(ps))
    archive = tmp_path / "imagenet_fall11_urls.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("fall11_urls.txt")
        info.size = len(lines)
        tar.addfile(info, io.BytesIO(lines))
    with PhotoHosts(classes) as hosts:
        run = crawl("imagenet", tmp_path / "Data", f"urls_file={archive}", f"wnids={','.join(classes)}",
                    "per_class=3", "flickr_only=false", env=hosts.proxy_env())
    assert run.code == 0, run.stderr
    assert {w: len(run.files(f"Images/{w}")) for w in classes} == dict.fromkeys(classes, 3)
    assert sorted(os.listdir(tmp_path)) == ["Data", "imagenet_fall11_urls.tgz"]  # nothing extracted beside it


def test_an_archive_holding_something_else_is_one_line_and_exit_2(tmp_path):
    import io
    import tarfile

    from tests.conftest import crawl

    archive = tmp_path / "fall11_urls.tar"
    with tarfile.open(archive, "w") as tar:
        data = b"\x89PNG\r\n\x1a\n" + bytes(64)
        info = tarfile.TarInfo("logo.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    run = crawl("imagenet", tmp_path / "Data", f"urls_file={archive}", "wnids=n01440764")
    assert run.code == 2
    last = run.stderr.strip().splitlines()[-1]
    assert last == (f"error: imagenet: urls_file: {archive} holds binary data, not a URL list (accepted: a "
                    "fall11_urls.txt-style list (<wnid>_<n> TAB URL), gzipped (.gz), or alone in a .tgz/.tar.gz/.tar)")
    assert not (tmp_path / "Data").exists()


def test_no_class_getting_its_urls_is_exit_1_with_the_reason(out):
    from tests.conftest import crawl

    run = crawl("imagenet", out, "api_url=http://127.0.0.1:9/api/imagenet.synset.geturls", "wnids=n01440764,n01443537",
                settings={"RETRY_TIMES": "0"})
    assert run.code == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no class could get its list of URLs (2 tried; the first: n01440764: cannot fetch")


def test_every_image_failing_is_exit_1_with_the_failure_kinds(out):
    classes = make_classes(2, 3, seed=23, failure_rate=0.0)
    for photos in classes.values():
        for photo in photos:
            photo.behaviour = "404"
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        run = imagenet(out, hosts, api, f"wnids={','.join(classes)}", "per_class=2")
    assert run.code == 1
    assert run.stderr.strip().splitlines()[-1] == "error: no image in the dataset for the 2 class(es) asked: http_404 6"


def test_a_host_saying_slow_down_without_saying_how_long_is_backed_off(out):
    from urllib.parse import urlsplit

    classes = make_classes(1, 1, seed=24, failure_rate=0.0)  # one photo: no success on its host resets the back-off
    photo = next(iter(classes.values()))[0]
    photo.behaviour = "429_bare_twice"
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        run = imagenet(out, hosts, api, f"wnids={','.join(classes)}", "per_class=1",
                       settings={"IMAGES_RETRY_TIMES": "2", "DATASET_CONTACT": "https://example.org/lab"})
        path = urlsplit(photo.url).path
        times = [t for t, p in hosts.times if urlsplit(p).path == path]
        agents = {h.get("user-agent") for h in hosts.headers_for("/")}
    assert run.code == 0, run.stderr
    assert len(times) == 3 and len(run.files(f"Images/{next(iter(classes))}")) == 1
    # base 1 s x 2^n with jitter in [0.5, 1]: at least 0.5 s, then at least 1 s (lower bounds only)
    assert times[1] - times[0] >= 0.45 and times[2] - times[1] >= 0.95, times
    assert agents == {"dataset-spiders/0.1 (research image downloader; +https://pypi.org/project/dataset-spiders/; "
                      "contact: https://example.org/lab)"}


@pytest.mark.parametrize("honour", [True, False])
def test_an_image_whose_host_opted_out_of_ai_is_not_kept(honour, out):
    classes = make_classes(1, 3, seed=25, failure_rate=0.0)
    wnid, photos = next(iter(classes.items()))
    photos[0].behaviour = "noai"
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        run = imagenet(out, hosts, api, f"wnids={wnid}", "per_class=3",
                       settings={"IMAGES_HONOUR_NOAI": str(honour)})
    assert run.code == 0, run.stderr
    kept = {line["url"] for line in run.manifest() if line["outcome"] == "kept"}
    opted = [line for line in run.manifest() if line["outcome"] == "opted_out"]
    if honour:
        assert photos[0].url not in kept and len(kept) == 2
        assert [line["url"] for line in opted] == [photos[0].url]
        assert opted[0]["detail"].startswith("X-Robots-Tag: noai from ")
    else:
        assert photos[0].url in kept and not opted


def test_autothrottle_paces_image_downloads_per_host(out):
    from urllib.parse import urlsplit

    classes = make_classes(1, 8, seed=26, failure_rate=0.0, hosts=["farm3.static.flickr.com"], latency=(0.2, 0.2))
    wnid = next(iter(classes))
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        run = imagenet(out, hosts, api, f"wnids={wnid}", "per_class=8", settings={
            "AUTOTHROTTLE_ENABLED": "True", "AUTOTHROTTLE_START_DELAY": "0.5", "AUTOTHROTTLE_TARGET_CONCURRENCY": "1",
            "AUTOTHROTTLE_DEBUG": "True", "RANDOMIZE_DOWNLOAD_DELAY": "False"})
        times = sorted(t for t, p in hosts.times if urlsplit(p).path.endswith(".jpg"))
    assert run.code == 0, run.stderr
    assert len(run.files(f"Images/{wnid}")) == 8
    # one request at a time per host, spaced by AutoThrottle's delay (which starts at 0.5 s and adapts)
    assert all(b - a >= 0.15 for a, b in itertools.pairwise(times)), times
    delays = [int(line.split("delay:")[1].split("ms")[0]) for line in run.stderr.splitlines()
              if "[scrapy.extensions.throttle]" in line and "farm3.static.flickr.com" in line and "delay:" in line]
    assert len(delays) >= 6 and len(set(delays)) > 1, delays  # the delay adapted to the host's answers


def test_the_api_text_form_of_geturls_works_through_api_url(out):
    from tests.conftest import crawl

    classes = make_classes(1, 3, seed=27, failure_rate=0.0)
    wnid = next(iter(classes))
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        text_url = api.geturls_url(wnid, "text").split("?")[0]
        assert "/api/text/" in text_url
        run = crawl("imagenet", out, f"api_url={text_url}", f"wnids={wnid}", "per_class=2", env=hosts.proxy_env())
        assert api.requests_for_wnid(wnid) == 1
    assert run.code == 0, run.stderr
    assert len(run.files(f"Images/{wnid}")) == 2


def _near_copies() -> tuple[list[bytes], list[bytes]]:
    """Three photos, and a near-copy of each: resized, re-encoded at a lower quality, enlarged as PNG."""
    from PIL import Image

    from tests.emulators.images import encode, photo

    shots = [photo(seed) for seed in (1, 2, 3)]
    originals = [encode(shot, quality=90) for shot in shots]
    copies = [encode(shots[0].resize((160, 120), Image.Resampling.LANCZOS), quality=70),
              encode(shots[1], quality=55),
              encode(shots[2].resize((480, 360), Image.Resampling.BICUBIC), "PNG")]
    return originals, copies


def _photos(prefix: str, bodies: list[bytes], delay: float = 0.0) -> list:
    from tests.emulators.imagenet import FakePhoto

    return [FakePhoto(f"http://farm1.static.flickr.com/1/{prefix}_{i}.jpg", body, delay=delay)
            for i, body in enumerate(bodies)]


def test_near_copies_across_classes_are_refused_naming_the_image_they_copy(tmp_path):
    """Off, a resized or re-encoded copy is a new image (exact deduplication cannot see it); with
    NEAR_DUPLICATES it is refused in any class, its line naming the original, and the class is
    filled with distinct photos. A re-run remembers the kept images' hashes from the manifest."""
    from tests.emulators.images import encode, photo

    originals, copies = _near_copies()
    distinct = [encode(photo(seed), quality=85) for seed in (11, 12, 13)]
    tench, goldfish, fox = WNIDS

    control = {tench: _photos("a", originals), goldfish: _photos("b", copies, delay=0.5)}
    with PhotoHosts(control) as hosts, GeturlsServer(control) as api:
        off = imagenet(tmp_path / "off", hosts, api, f"wnids={tench},{goldfish}", "per_class=3")
    assert off.code == 0, off.stderr
    assert off.outcomes() == {"kept": 6}

    # the copies come well after their originals (a loaded machine once had a copy first)
    classes = {tench: _photos("a", originals), goldfish: _photos("b", copies, delay=2.0) + _photos("d", distinct, 3.0)}
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        run = imagenet(tmp_path / "on", hosts, api, f"wnids={tench},{goldfish}", "per_class=3",
                       settings={"NEAR_DUPLICATES": "true"})
    assert run.code == 0, run.stderr
    lines = {line["url"]: line for line in run.manifest()}
    kept = sorted(body for name, body in run.files("Images").items() if "/" in name)
    assert kept == sorted(originals + distinct)
    for i, photo_ in enumerate(_photos("b", copies)):
        line = lines[photo_.url]
        original = lines[_photos("a", originals)[i].url]
        assert line["outcome"] == "duplicate" and line["path"] is None
        assert line["detail"].startswith(f"a near-copy of {original['id']} in {tench} (")
        assert " of 64 bits differ; " in line["detail"] and original["url"] in line["detail"]
        assert line["sha256"] != original["sha256"]  # not an exact copy

    again = {fox: _photos("f", [encode(photo(1).resize((200, 150)), quality=80)], 0.0)
             + _photos("e", [encode(photo(seed), quality=85) for seed in (21, 22)], 0.5)}
    with PhotoHosts(again) as hosts, GeturlsServer(again) as api:
        rerun = imagenet(tmp_path / "on", hosts, api, f"wnids={fox}", "per_class=2",
                         settings={"NEAR_DUPLICATES": "true"})
    assert rerun.code == 0, rerun.stderr
    last = {line["url"]: line for line in rerun.manifest()}
    refused = last[again[fox][0].url]
    assert refused["outcome"] == "duplicate"
    assert refused["detail"].startswith(f"a near-copy of {lines[_photos('a', originals)[0].url]['id']} in {tench}")
    assert len(rerun.files(f"Images/{fox}")) == 2


@pytest.mark.parametrize(("setting", "code", "message"), [
    ({"NEAR_DUPLICATE_DISTANCE": "16"}, 2,
     "error: setting NEAR_DUPLICATE_DISTANCE: expected a whole number from 0 to 15, got '16'"),
    ({}, 1,
     "error: NEAR_DUPLICATES needs the imagehash package (imagehash is not installed here): pip install imagehash"),
], ids=["distance", "no-imagehash"])
def test_near_duplicates_misconfigured_is_one_line(setting, code, message, out, tmp_path):
    from tests.conftest import crawl

    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "imagehash.py").write_text("raise ImportError('imagehash is not installed here')\n")
    env = {} if setting else {"PYTHONPATH": str(blocker)}
    with PhotoHosts({}) as hosts, GeturlsServer({}) as api:
        run = crawl("imagenet", out, f"api_url={api.geturls_url('x').split('?')[0]}", "wnids=n01440764",
                    settings={"NEAR_DUPLICATES": "true", **setting}, env=hosts.proxy_env() | env)
        assert api.log == [] and hosts.url_log == []
    assert run.code == code and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == message
