"""Right the first time (issue 19), as a user meets it: the installed ``dataset-spiders`` command,
run from a folder outside the checkout. Here: no decompression bomb kept, placeholders learned on
small runs, and messages that say what happened (re-run counts, unknown wnids, collections, the
archive's retired search fields, a torn manifest line repaired once)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import user_run
from tests.emulators import ImageHost, IsicV2Server, make_archive
from tests.emulators.imagenet import FakePhoto, PhotoHosts, huge_pixels_png, make_classes

WNID = "n01440764"


def url_list(path: Path, photos: dict[str, list[FakePhoto]]) -> Path:
    path.write_text("".join(f"{wnid}_{i}\t{p.url}\n" for wnid, ps in photos.items() for i, p in enumerate(ps)))
    return path


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_an_image_over_pillows_warning_limit_is_too_large_and_every_kept_one_opens_quietly(installed, tmp_path):
    """A 10000x9000 PNG (90 megapixels, over Pillow's 89.5 M warning limit, under its 179 M error
    limit) is a decompression bomb to every loader: not kept. The others open with no warning."""
    photos = make_classes(1, 4, seed=11, failure_rate=0.0, wnids=[WNID])[WNID]
    bomb = FakePhoto("http://farm3.static.flickr.com/1/bomb.png", body=huge_pixels_png(10_000, 9_000))
    listed = url_list(tmp_path / "urls.txt", {WNID: [bomb, *photos]})
    with PhotoHosts({WNID: [bomb, *photos]}) as hosts:
        run = user_run(installed, "imagenet", "--urls-file", str(listed), "--wnids", WNID, "--per-class", "4",
                       cwd=tmp_path, env=hosts.proxy_env())
    assert run.returncode == 0, run.stderr
    lines = {json.loads(line)["url"]: json.loads(line) for line in (tmp_path / "ImageNet" / "manifest.jsonl").open()}
    assert lines[bomb.url]["outcome"] == "too_large" and "89478485" in lines[bomb.url]["detail"]
    kept = sorted((tmp_path / "ImageNet" / "Images" / WNID).iterdir())
    assert len(kept) == 4
    for path in kept:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a DecompressionBombWarning would fail here
            with Image.open(path) as im:
                im.load()


def test_a_placeholder_served_twice_in_one_small_class_is_learned_not_kept(installed, tmp_path):
    """An unknown "photo unavailable" image served directly for two photo URLs of one class (not
    by redirect, bytes in no known list), the class filling before a third copy comes: the two
    copies are evidence enough, the one kept is withdrawn and the class topped up."""
    photos = make_classes(1, 12, seed=12, failure_rate=0.0, wnids=[WNID])[WNID]
    stand_ins = [FakePhoto(f"http://farm5.staticflickr.com/4/{WNID}_gone{i}.jpg", behaviour="placeholder_unknown")
                 for i in range(2)]
    order = [photos[0], stand_ins[0], *photos[1:6], stand_ins[1], *photos[6:]]
    listed = url_list(tmp_path / "urls.txt", {WNID: order})
    with PhotoHosts({WNID: order}) as hosts:
        # nothing extra in flight: both copies are examined (the second one, kept or refused as a
        # duplicate); with a copy still in flight when the class fills, it is cancelled unseen
        run = user_run(installed, "imagenet", "--urls-file", str(listed), "--wnids", WNID, "--per-class", "8",
                       "-s", "DATASET_EXTRA_IN_FLIGHT=0", cwd=tmp_path, env=hosts.proxy_env())
    assert run.returncode == 0, run.stderr
    kept = {p.read_bytes() for p in (tmp_path / "ImageNet" / "Images" / WNID).iterdir()}
    assert len(kept) == 8 and kept <= {p.body for p in photos}  # no stand-in among them
    last = {}
    for line in (tmp_path / "ImageNet" / "manifest.jsonl").open():
        record = json.loads(line)
        last[record["url"]] = record
    assert {last[s.url]["outcome"] for s in stand_ins} == {"placeholder"}


def test_imagenet_messages_say_what_happened(installed, tmp_path):
    """A re-run counts the images already there; an unknown wnid is named as unknown and the
    exit status is 1 after the other classes are done; a class short because flickr_only
    dropped its URLs says so."""
    classes = make_classes(2, 6, seed=13, failure_rate=0.0, wnids=[WNID, "n01443537"])
    off_flickr = [FakePhoto(f"http://photos.example.org/{i}.jpg") for i in range(3)]
    both = {WNID: classes[WNID], "n01443537": [*classes["n01443537"][:2], *off_flickr]}
    listed = url_list(tmp_path / "urls.txt", both)
    with PhotoHosts(both) as hosts:
        args = ("imagenet", "--urls-file", str(listed), "--per-class", "4")
        first = user_run(installed, *args, "--wnids", f"{WNID},n01443537", cwd=tmp_path, env=hosts.proxy_env())
        page = (tmp_path / "ImageNet" / "report.html").read_text()
        again = user_run(installed, *args, "--wnids", f"{WNID},n01443537", cwd=tmp_path, env=hosts.proxy_env())
        unknown = user_run(installed, *args, "--wnids", f"{WNID},n09999999", cwd=tmp_path, env=hosts.proxy_env())
    assert first.returncode == 0, first.stderr
    assert "Short: n01443537 (goldfish): 2/4: out of candidates after 2 URLs (3 of its 5 URLs not on Flickr's " \
           "hosts: flickr_only=true)" in first.stderr
    assert "3 of its 5 URLs not on Flickr&#x27;s hosts: flickr_only=true" in page  # the report's why short
    assert again.returncode == 0, again.stderr
    assert "Summary: 6 image(s) in the dataset of the 8 asked for (0 downloaded now, 6 already there)" in again.stderr
    assert unknown.returncode == 1
    assert last_line(unknown.stderr) == ("error: 1 unknown wnid(s), for which the source lists no URL: n09999999 "
                                         "(the other classes were downloaded)")
    assert "n09999999: 0/4: unknown: the URL list has no line for it" in unknown.stderr


@pytest.fixture(scope="module")
def isic_api():
    archive = make_archive(12)
    for record in archive[:5]:
        record.collections = [61]
    with ImageHost(archive) as host, IsicV2Server(archive, host, collections={61: "Challenge 2019"}) as api:
        yield f"{api.url}/api/v2"


def test_isic_messages_name_collections_and_the_fields_that_replaced_retired_ones(installed, isic_api, tmp_path):
    retired = user_run(installed, "isic", "--query", "diagnosis:Benign", "--num-images", "2", "--api-url", isic_api,
                       cwd=tmp_path)
    assert retired.returncode == 1
    line = last_line(retired.stderr)
    assert line.startswith("error: the ISIC API rejected the search")
    assert "diagnosis was retired; use diagnosis_1" in line
    collection = user_run(installed, "isic", "--collections", "61", "--num-images", "2", "--api-url", isic_api,
                          "--out-dir", "C", cwd=tmp_path)
    assert collection.returncode == 0, collection.stderr
    assert "5 image(s) match every record in collection(s) 61" in collection.stderr


def test_a_torn_manifest_line_is_repaired_once_not_warned_about_forever(installed, isic_api, tmp_path):
    assert user_run(installed, "isic", "--num-images", "3", "--api-url", isic_api, cwd=tmp_path).returncode == 0
    manifest = tmp_path / "ISIC" / "manifest.jsonl"
    before = manifest.read_bytes()
    with manifest.open("ab") as f:
        f.write(b'{"id": "ISIC_0000009", "outcome": "kep')  # a write cut short by a full disk
    repaired = user_run(installed, "isic", "--num-images", "4", "--api-url", isic_api, cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stderr
    assert "Repaired " in repaired.stderr and "1 line(s) cut short" in repaired.stderr
    assert (tmp_path / "ISIC" / ".quarantine" / "manifest.torn-lines").read_bytes() == \
        b'{"id": "ISIC_0000009", "outcome": "kep\n'
    assert manifest.read_bytes().startswith(before)
    later = user_run(installed, "isic", "--num-images", "4", "--api-url", isic_api, cwd=tmp_path)
    checked = user_run(installed, "verify", "ISIC", cwd=tmp_path)
    for run in (later, checked):
        assert "skipping a line" not in run.stderr and "Repaired" not in run.stderr
    assert checked.returncode == 0, checked.stdout
