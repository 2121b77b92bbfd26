"""`scrapy crawl imagenet` end to end: the geturls emulator and photo hosts behind an HTTP proxy,
so URLs keep their real host names (farm3.static.flickr.com, ...)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import crawl
from tests.emulators.imagenet import FakePhoto, GeturlsServer, PhotoHosts, make_classes, placeholder_png


def imagenet(out: Path, hosts: PhotoHosts, api: GeturlsServer, *args: str, **kwargs):
    return crawl(
        "imagenet", out, f"api_url={api.geturls_url('x').split('?')[0]}", *args, env=hosts.proxy_env(), **kwargs
    )


class FolderWatcher(threading.Thread):
    """Polls the class folders while the crawl runs: the most files ever seen in each at once."""

    def __init__(self, root: Path):
        super().__init__(daemon=True)
        self.root, self.peak, self.stop = root, Counter(), threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if self.root.is_dir():
                for entry in os.scandir(self.root):
                    if entry.is_dir():
                        self.peak[entry.name] = max(self.peak[entry.name], len(os.listdir(entry.path)))
            time.sleep(0.002)


def decoded(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def test_exactly_n_per_class_under_concurrency_failures_and_latency(out):
    classes = make_classes(20, 16, seed=7, failure_rate=0.3, latency=(0.05, 0.3))
    short = "n00000019"  # this class has only 5 good URLs
    for i, photo in enumerate(classes[short]):
        photo.behaviour = "ok" if i in (2, 5, 9, 12, 15) else "404"
    by_url = {p.url: (w, p) for w, ps in classes.items() for p in ps}
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        watcher = FolderWatcher(out / "Images")
        watcher.start()
        # HOSTS_STALL_AFTER=60: a download slow to its first byte on a loaded machine would let its
        # class start more (a feature of its own), and the request budget below is what this test holds
        run = imagenet(out, hosts, api, f"wnids={','.join(classes)}", "per_class=8",
                       settings={"CONCURRENT_REQUESTS": "32", "CONCURRENT_REQUESTS_PER_DOMAIN": "16",
                                 "HOSTS_STALL_AFTER": "60"})
        watcher.stop.set()
        watcher.join()
        requested = Counter(by_url[u][0] for u in set(hosts.url_log) if u in by_url and by_url[u][1].is_good)
        peak_concurrency = hosts.max_concurrent
    assert run.code == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert peak_concurrency >= 16

    tree = {w: run.files(f"Images/{w}") for w in classes}
    assert {w: len(f) for w, f in tree.items()} == {w: 5 if w == short else 8 for w in classes}
    assert max(watcher.peak.values()) <= 8, f"more than 8 files in a class folder at once: {watcher.peak}"
    assert "Short: n00000019: 5/8: out of candidates after " in run.stderr  # the summary says why

    # good URLs requested per class: at most N plus the extra in flight (2); failures are extra
    assert max(requested.values()) <= 8 + 2, requested

    # only valid, distinct, real photos of their own class
    digests = set()
    placeholder = placeholder_png()
    for wnid, files in tree.items():
        for name, data in files.items():
            assert name.startswith(f"{wnid}_") and name.endswith(".jpg")
            photo = next(p for p in classes[wnid] if p.body == data)
            assert photo.is_good
            assert data != placeholder
            decoded(data)
            digests.add(hashlib.sha256(data).hexdigest())
    assert len(digests) == 8 * 19 + 5

    # the manifest: every line names a real reason; kept lines match the files
    lines = run.manifest()
    last = {line["id"]: line for line in lines}
    kept = [line for line in last.values() if line["outcome"] == "kept"]
    assert len(kept) == 8 * 19 + 5
    expected = {"404": "http_404", "410": "http_410", "500": "http_500", "html": "not_image",
                "truncated": "truncated", "empty": "empty", "redirect_placeholder": "placeholder",
                "placeholder_direct": "placeholder", "reset": "connection"}
    for line in last.values():
        _, photo = by_url[line["url"]]
        if line["outcome"] in ("kept", "surplus"):
            continue
        if photo.behaviour == "placeholder_direct" and line["outcome"] == "duplicate":
            continue  # a second copy in one class, refused as a duplicate before the placeholder was learned
        assert expected.get(photo.behaviour) == line["outcome"], (photo.behaviour, line)
    counts = Counter(line["outcome"] for line in last.values())
    summary = next(s for s in run.stderr.splitlines() if "Outcomes (images):" in s).split("Outcomes (images): ")[1]
    logged = {name: int(n) for name, n in (part.rsplit(" ", 1) for part in summary.split(", "))}
    assert logged == dict(counts)


def test_a_learned_placeholder_is_withdrawn_and_its_class_topped_up(out):
    classes = make_classes(3, 10, seed=3, failure_rate=0.0)
    unknown = FakePhoto("http://x/unused").body  # a valid image no list knows: served for 4 photo URLs
    for wnid in ("n00000000", "n00000001"):
        classes[wnid][0].body = unknown
    classes["n00000002"][0].body = unknown
    classes["n00000002"][1].body = unknown
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        run = imagenet(out, hosts, api, f"wnids={','.join(classes)}", "per_class=4",
                       # in order, and no download cancelled by a class filling up: every copy is seen
                       settings={"CONCURRENT_REQUESTS": "1", "DATASET_EXTRA_IN_FLIGHT": "0"})
    assert run.code == 0, run.stderr
    for wnid in classes:
        files = run.files(f"Images/{wnid}")
        assert len(files) == 4
        assert unknown not in files.values()
    withdrawn = [line for line in run.manifest() if (line["detail"] or "").startswith("withdrawn")]
    assert len(withdrawn) == 1  # the copy kept first; the next ones were refused as duplicates or placeholders
    assert "Learned a placeholder of flickr.com" in run.stderr


def test_the_same_url_or_image_in_two_classes_is_kept_in_the_first(out):
    a_photos, b_photos = make_classes(2, 8, seed=4, failure_rate=0.0).values()
    a_photos = a_photos[:4]  # class a needs every one of its URLs
    b_photos[0] = FakePhoto(a_photos[0].url)  # the same URL
    b_photos[1].body = a_photos[1].body  # the same image under another URL
    b_photos = b_photos[:6]  # with nothing extra in flight, b's duplicates are decided before b is full
    classes = {"n00000000": a_photos, "n00000001": b_photos}
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        run = imagenet(out, hosts, api, "wnids=n00000000,n00000001", "per_class=4",
                       settings={"IMAGENET_ACTIVE_CLASSES": "1", "DATASET_EXTRA_IN_FLIGHT": "0"})
    assert run.code == 0, run.stderr
    assert sorted(run.files("Images/n00000000").values()) == sorted(p.body for p in a_photos)
    b_files = run.files("Images/n00000001")
    assert len(b_files) == 4 and not set(b_files.values()) & {p.body for p in a_photos}
    outcomes = {line["url"]: line["outcome"] for line in run.manifest() if line["group"] == "n00000001"}
    assert outcomes[b_photos[0].url] == outcomes[b_photos[1].url] == "duplicate"


def test_a_hanging_host_does_not_hold_the_end_once_the_class_is_full(out):
    classes = make_classes(1, 12, seed=5, failure_rate=0.0)
    wnid = next(iter(classes))
    for photo in classes[wnid][:2]:
        photo.behaviour = "hang"
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        hosts.hang_seconds = 600  # longer than the run may take (the helper's limit): it must not wait
        run = imagenet(out, hosts, api, f"wnids={wnid}", "per_class=5")
    assert run.code == 0, run.stderr
    assert len(run.files(f"Images/{wnid}")) == 5
    assert Counter(line["outcome"] for line in run.manifest())["surplus"] >= 2


@pytest.mark.parametrize("fmt", ["plain", "plain_lf", "getmapping", "getmapping_tab"])
def test_both_geturls_formats(fmt, out):
    classes = make_classes(1, 4, seed=6, failure_rate=0.0)
    wnid = next(iter(classes))
    with PhotoHosts(classes) as hosts, GeturlsServer(classes, formats={wnid: fmt}) as api:
        run = imagenet(out, hosts, api, f"wnids={wnid}", "per_class=3")
    assert run.code == 0, run.stderr
    names = sorted(run.files(f"Images/{wnid}"))
    assert len(names) == 3
    if fmt.startswith("getmapping"):  # the ids the source gives, not ids made from the URL
        assert all(re.fullmatch(rf"{wnid}_[0-9]+\.jpg", name) for name in names), names


def test_error_bodies_mean_no_urls_with_a_warning_and_strict_fails(out):
    classes = make_classes(3, 4, seed=8, failure_rate=0.0)
    w0, w1, w2 = classes
    formats = {w1: "not_ready", w2: "invalid"}
    with PhotoHosts(classes) as hosts, GeturlsServer(classes, formats=formats) as api:
        run = imagenet(out, hosts, api, f"wnids={w0},{w1},{w2}", "per_class=2")
        strict = imagenet(out.parent / "strict", hosts, api, f"wnids={w0},{w1}", "per_class=2", "strict=true")
    assert run.code == 1, run.stderr  # unknown to the source: named, after the other classes are done
    assert run.stderr.strip().splitlines()[-1] == (f"error: 2 unknown wnid(s), for which the source lists no URL: "
                                                   f"{w1}, {w2} (the other classes were downloaded)")
    assert f"Short: {w1}: 0/2: " in run.stderr and "The synset is not ready yet. Please stay tuned!" in run.stderr
    assert f"Short: {w2}: 0/2: " in run.stderr and "'Invalid url!'" in run.stderr
    assert sorted(os.listdir(out / "Images")) == ["classes.txt", "classes_given.txt", w0]  # no empty class folders
    assert (out / "Images" / "classes.txt").read_text() == f"0\t{w0}\t{w0}\t\n"  # the folders ImageFolder sees
    assert strict.code == 1
    assert strict.stderr.strip().splitlines()[-1].startswith("error: strict: 1 class(es) have fewer than 2 images")


def test_flickr_only_filters_hosts_on_domain_boundaries(out):
    classes = make_classes(1, 6, seed=9, failure_rate=0.0)
    wnid = next(iter(classes))
    other = [FakePhoto("http://notflickr.com/1.jpg"), FakePhoto("http://www.example-photos.com/2.jpg")]
    classes[wnid] = other + classes[wnid]
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        run = imagenet(out, hosts, api, f"wnids={wnid}", "per_class=2")
        assert not {p.url for p in other} & set(hosts.url_log)
        everything = imagenet(out.parent / "all", hosts, api, f"wnids={wnid}", "per_class=2", "flickr_only=false")
        assert {p.url for p in other} <= set(hosts.url_log)  # tried first, in list order
    assert run.code == everything.code == 0
    assert len(everything.files(f"Images/{wnid}")) == 2


def test_wnids_from_stdin_label_layout_and_classes_txt(out):
    classes = make_classes(2, 3, seed=10, failure_rate=0.0, wnids=["n01440764", "n02102040"])
    text = "# two classes\ntench,n01440764\nn02102040\tEnglish springer, English springer spaniel\n"
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        run = imagenet(out, hosts, api, "wnids_file=-", "per_class=2", "layout=name_wnid", stdin=text)
    assert run.code == 0, run.stderr
    root = out / "Images"
    assert sorted(os.listdir(root)) == [
        "English_springer_n02102040", "classes.txt", "classes_given.txt", "tench_n01440764"]
    assert (root / "classes_given.txt").read_text() == (
        "0\tn01440764\ttench\n1\tn02102040\tEnglish springer, English springer spaniel\n"
    )
    assert (root / "classes.txt").read_text() == (  # sorted folder names: "E" before "t"
        "0\tEnglish_springer_n02102040\tn02102040\tEnglish springer, English springer spaniel\n"
        "1\ttench_n01440764\tn01440764\ttench\n"
    )


def test_a_url_file_with_random_classes_is_reproducible(tmp_path):
    classes = make_classes(12, 4, seed=11, failure_rate=0.0)
    urls = tmp_path / "fall11_urls.txt"
    urls.write_bytes(b"".join(f"{w}_{i}\t{p.url}\n".encode() for w, ps in classes.items() for i, p in enumerate(ps)))
    picked = []
    with PhotoHosts(classes) as hosts:
        for name, seed in (("a", 1), ("b", 1), ("c", 2)):
            run = crawl("imagenet", tmp_path / name, f"urls_file={urls}", "num_classes=3", f"seed={seed}",
                        "per_class=2", env=hosts.proxy_env())
            assert run.code == 0, run.stderr
            picked.append(sorted(os.listdir(tmp_path / name / "Images")))
    assert picked[0] == picked[1] and picked[0] != picked[2]
    assert len(picked[0]) == 5  # 3 classes + classes.txt + classes_given.txt


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["wnids=n0144"], "error: imagenet: wnids: 'n0144' is not a wnid (n + 8 digits)"),
        (["wnids_file=/nonexistent/w.txt"], "error: imagenet: wnids_file: no such file: /nonexistent/w.txt"),
        (["per_class=0"], "error: imagenet: per_class: expected a whole number >= 1, got 0"),
        ([], "error: imagenet: give exactly one of wnids, wnids_file or num_classes"),
    ],
)
def test_bad_arguments_stop_before_any_request(args, message, out):
    run = crawl("imagenet", out, *args)
    assert (run.code, run.stderr.strip()) == (2, message)


def test_formats_redirects_rate_limits_and_huge_images(out):
    from tests.emulators import images

    wnid = "n00000000"
    photos = [
        FakePhoto("http://farm3.static.flickr.com/1/cmyk.jpg", body=images.cmyk_jpeg(64, 48, seed=1)),
        FakePhoto("http://farm3.static.flickr.com/1/alpha.png", body=images.png_rgba(64, 48, seed=2)),
        FakePhoto("http://farm3.static.flickr.com/1/moved.jpg", behaviour="redirect_https"),
        FakePhoto("http://farm3.static.flickr.com/1/busy.jpg", behaviour="429_once"),
        FakePhoto("http://farm3.static.flickr.com/1/huge.png", behaviour="huge_pixels"),
        FakePhoto("http://farm3.static.flickr.com/1/tiny.jpg", body=images.jpeg(16, 12, seed=3)),
    ]
    with PhotoHosts({wnid: photos}) as hosts, GeturlsServer({wnid: photos}) as api:
        run = imagenet(out, hosts, api, f"wnids={wnid}", "per_class=6")
    assert run.code == 0, run.stderr
    files = run.files(f"Images/{wnid}")
    assert sorted(files.values()) == sorted(p.body for p in photos[:4])
    assert sorted(name.rsplit(".", 1)[1] for name in files) == ["jpg", "jpg", "jpg", "png"]
    outcomes = {line["url"].rsplit("/", 1)[1]: line for line in run.manifest()}
    assert outcomes["huge.png"]["outcome"] == "too_large"
    assert outcomes["tiny.jpg"]["outcome"] == "too_small"
    assert outcomes["moved.jpg"]["final_url"] != outcomes["moved.jpg"]["url"]
    assert f"Short: {wnid}: 4/6: " in run.stderr


def test_ilsvrc1000_writes_the_class_index_in_order(out):
    with PhotoHosts({}) as hosts, GeturlsServer({}) as api:  # every class: "not ready yet"
        run = imagenet(out, hosts, api, "wnids=ilsvrc1000", "per_class=1",
                       settings={"IMAGENET_ACTIVE_CLASSES": "200", "LOG_LEVEL": "ERROR"})
    assert run.code == 1  # no class got its URLs: no success
    assert run.stderr.strip().splitlines()[-1] == (
        "error: no class could get its list of URLs (1000 tried; the first: n01440764: the URL list endpoint "
        "answered 'The synset is not ready yet. Please stay tuned!')")
    lines = (out / "Images" / "classes_given.txt").read_text().splitlines()
    assert len(lines) == 1000
    assert lines[0] == "0\tn01440764\ttench, Tinca tinca"
    assert lines[999].startswith("999\tn15075141\t")
    assert (out / "Images" / "classes.txt").read_text() == ""  # no class folder: ImageFolder sees no class
    assert sorted(os.listdir(out / "Images")) == ["classes.txt", "classes_given.txt"]


def test_an_empty_class_list_is_an_error_before_any_request(out, tmp_path):
    listing = tmp_path / "wnids.txt"
    listing.write_text("# nothing here\n\n")
    with PhotoHosts({}) as hosts, GeturlsServer({}) as api:
        run = imagenet(out, hosts, api, f"wnids_file={listing}")
        assert api.log == [] and hosts.url_log == []
    assert run.code == 2
    assert run.stderr.strip().splitlines()[-1].startswith(f"error: imagenet: wnids_file: {listing} lists no class")


def test_hostile_hosts_are_bounded_and_recorded(out):
    wnid = "n00000000"
    big = FakePhoto("http://farm3.static.flickr.com/1/big.jpg", body=b"\xff\xd8" + bytes(300_000))
    loop = FakePhoto("http://farm3.static.flickr.com/1/loop.jpg", behaviour="redirect_https",
                     location="http://farm3.static.flickr.com/1/loop.jpg")
    scheme = FakePhoto("http://farm3.static.flickr.com/1/file.jpg", behaviour="redirect_https",
                       location="file:///etc/passwd")
    good = FakePhoto("http://farm3.static.flickr.com/1/good.jpg")
    photos = [big, loop, scheme, good]
    with PhotoHosts({wnid: photos}) as hosts, GeturlsServer({wnid: photos}) as api:
        run = imagenet(out, hosts, api, f"wnids={wnid}", "per_class=4", settings={"DOWNLOAD_MAXSIZE": "100000"})
        loop_hits = hosts.hits_for(loop.url)
    assert run.code == 0, run.stderr
    assert list(run.files(f"Images/{wnid}").values()) == [good.body]
    outcomes = {line["url"].rsplit("/", 1)[1]: line["outcome"] for line in run.manifest()}
    assert outcomes == {"big.jpg": "too_large", "loop.jpg": "redirect", "file.jpg": "http_301", "good.jpg": "kept"}
    assert loop_hits <= 25


def test_unusable_urls_and_a_broken_url_file_never_give_a_traceback(out, tmp_path):
    wnid = "n00000000"
    photos = [FakePhoto(f"http://farm3.static.flickr.com/1/{i}.jpg") for i in range(3)]
    listed = {wnid: ["http://a[b@farm3.static.flickr.com/x.jpg", *photos]}
    with PhotoHosts({wnid: photos}) as hosts, GeturlsServer(listed) as api:
        run = imagenet(out, hosts, api, f"wnids={wnid}", "per_class=3")
    assert run.code == 0, run.stderr
    assert len(run.files(f"Images/{wnid}")) == 3 and "Traceback" not in run.stderr
    import gzip

    broken = tmp_path / "urls.txt.gz"
    broken.write_bytes(gzip.compress(b"".join(f"{wnid}_{i}\t{p.url}\n".encode() for i, p in enumerate(photos)))[:-12])
    cut = crawl("imagenet", tmp_path / "cut", f"urls_file={broken}", f"wnids={wnid}")
    assert cut.code == 2 and "Traceback" not in cut.stderr  # a list cut short in its first 64 KB: found at start
    assert cut.stderr.strip().splitlines()[-1].startswith(f"error: imagenet: urls_file: {broken} cannot be read")
