"""`scrapy crawl isic` end to end against the local v2 emulator: files, bytes, manifest, exit codes."""

from __future__ import annotations

import csv
import json

import pytest

from dataset_spiders.settings import ITEM_PIPELINES
from tests.conftest import crawl
from tests.emulators import FakeImage, ImageHost, IsicV2Server, images, make_archive


@pytest.fixture
def archive():
    """80 records alternating Benign/Malignant; among the first 25 Benign, a 404, HTML and a corrupt JPEG."""
    records = make_archive(80)
    benign = [r for r in records if r.diagnosis_1 == "Benign"]
    benign[3].behaviour = "404"
    benign[7].behaviour = "html"
    benign[11].body = images.truncated(benign[11].body)  # served whole with 200, but the JPEG is cut
    records[1].license = "CC-0"
    return records


@pytest.fixture
def isic(archive):
    with ImageHost(archive) as host, IsicV2Server(archive, host) as api:
        yield api, host
        assert not api.errors and not host.errors


def search_pages(api):
    """The search pages fetched (the size endpoint, asked once for the disk check, is not one)."""
    return [p for p in api.requests_for("/api/v2/images/search/") if not p.startswith("/api/v2/images/search/size/")]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def api_args(api):
    return f"api_url={api.url}/api/v2"


def test_exactly_n_benign_images_byte_identical_in_one_page_request(isic, archive, out):
    api, _ = isic
    run = crawl("isic", out, api_args(api), "num_images=25", "filter=benign")
    assert run.code == 0, run.stderr
    assert "Traceback" not in run.stderr

    files = run.files("Images")
    served = {f"{r.isic_id}.jpg": r.body for r in archive}
    assert len(files) == 25
    assert all(files[name] == served[name] for name in files), "bytes differ from what the server sent"
    for name in files:
        description = json.loads((out / "Descriptions" / name.replace(".jpg", ".json")).read_text())
        assert description["metadata"]["clinical"]["diagnosis_1"] == "Benign"
        assert description["isic_id"] == name[:-4]

    # the 25 kept are the first 25 good Benign records, in archive order: failures were topped up
    good_benign = [r.isic_id for r in archive if r.diagnosis_1 == "Benign" and r.behaviour == "ok"]
    good_benign = [i for i in good_benign if i != [r for r in archive if r.diagnosis_1 == "Benign"][11].isic_id]
    assert sorted(n[:-4] for n in files) == good_benign[:25]

    assert run.outcomes() == {"kept": 25, "http_404": 1, "not_image": 1, "truncated": 1}
    assert "Outcomes (images): http_404 1, kept 25, not_image 1, truncated 1" in run.stderr
    assert len(search_pages(api)) == 1

    rows = read_csv(out / "metadata.csv")
    assert sorted(r["isic_id"] for r in rows) == sorted(n[:-4] for n in files)
    assert list(rows[0])[:3] == ["isic_id", "attribution", "copyright_license"]
    assert {r["diagnosis_1"] for r in rows} == {"Benign"}
    assert (out / "attribution.txt").read_bytes() == b"Test Hospital"  # as isic-cli writes it: no final newline
    assert (out / "licenses" / "CC-BY.txt").read_text().strip()
    assert not list((out / ".staging").iterdir()), "staging files left behind"


def test_second_run_downloads_nothing_and_keeps_the_dataset(isic, out):
    api, host = isic
    first = crawl("isic", out, api_args(api), "num_images=10", "filter=malignant")
    assert first.code == 0, first.stderr
    before = first.files("Images")
    host.clear_log()
    second = crawl("isic", out, api_args(api), "num_images=10", "filter=malignant")
    assert second.code == 0, second.stderr
    assert host.log == [], "a re-run fetched images again"
    assert second.files("Images") == before
    assert second.outcomes()["present"] == 10
    rows = read_csv(out / "metadata.csv")
    assert len(rows) == 10


def test_offset_appends_the_next_records(isic, archive, out):
    api, _ = isic
    run = crawl("isic", out, api_args(api), "num_images=3", "offset=5", "filter=malignant")
    assert run.code == 0, run.stderr
    malignant = [r.isic_id for r in archive if r.diagnosis_1 == "Malignant"]
    assert sorted(run.files("Images")) == [f"{i}.jpg" for i in malignant[5:8]]
    crawl("isic", out, api_args(api), "num_images=2", "filter=malignant")
    rows = read_csv(out / "metadata.csv")
    assert sorted(r["isic_id"] for r in rows) == sorted(malignant[:2] + malignant[5:8])


def test_no_images_saves_descriptions_only(isic, out):
    api, host = isic
    run = crawl("isic", out, api_args(api), "num_images=7", "no_images=true")
    assert run.code == 0, run.stderr
    assert host.log == []
    assert not (out / "Images").exists() or run.files("Images") == {}
    assert len(run.files("Descriptions")) == 7
    assert run.outcomes() == {"described": 7}


def test_formats_are_kept_byte_for_byte_with_their_real_extension(out):
    records = [
        FakeImage("ISIC_0000001", body=images.jpeg(120, 90, seed=1, exif=True, icc=True)),
        FakeImage("ISIC_0000002", body=images.png_rgba(80, 60, seed=2), ext="png"),
        FakeImage("ISIC_0000003", body=images.cmyk_jpeg(80, 60, seed=3)),
        FakeImage("ISIC_0000004", body=images.tiff(90, 70, seed=4), ext="tif"),
        FakeImage("ISIC_0000005", body=images.png_gray(50, 40, seed=5), ext="png"),
    ]
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        run = crawl("isic", out, api_args(api))
    assert run.code == 0, run.stderr
    files = run.files("Images")
    assert files == {f"{r.isic_id}.{r.ext}": r.body for r in records}
    kept = {line["id"]: line for line in run.manifest()}
    assert (kept["ISIC_0000001"]["width"], kept["ISIC_0000001"]["height"]) == (120, 90)


def test_rejected_images_never_appear_under_a_final_name(out):
    records = make_archive(6)
    records[0].behaviour = "html"
    records[1].body = images.truncated(records[1].body)
    records[2].behaviour = "truncated"
    records[3].body = b"GIF89a-not-really"
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        run = crawl("isic", out, api_args(api), settings={"RETRY_TIMES": "0"})
    assert run.code == 0, run.stderr
    assert sorted(run.files("Images")) == ["ISIC_0000004.jpg", "ISIC_0000005.jpg"]
    assert sorted(run.files("Descriptions")) == ["ISIC_0000004.json", "ISIC_0000005.json"]
    outcomes = {line["id"]: line["outcome"] for line in run.manifest()}
    assert outcomes == {
        "ISIC_0000000": "not_image", "ISIC_0000001": "truncated", "ISIC_0000002": "truncated",
        "ISIC_0000003": "not_image", "ISIC_0000004": "kept", "ISIC_0000005": "kept",
    }  # fmt: skip


def test_by_label_layout_and_unlabeled(out):
    records = make_archive(4, diagnoses=["Benign", "Malignant", "Indeterminate", None])
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        run = crawl("isic", out, api_args(api), "layout=by_label")
    assert run.code == 0, run.stderr
    assert sorted(run.files("Images")) == [
        "benign/ISIC_0000000.jpg", "indeterminate/ISIC_0000002.jpg",
        "malignant/ISIC_0000001.jpg", "unlabeled/ISIC_0000003.jpg",
    ]  # fmt: skip


def test_bad_record_id_is_skipped_and_topped_up(out):
    records = make_archive(4)
    records[1].isic_id = "ISIC_12"
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        run = crawl("isic", out, api_args(api), "num_images=3")
    assert run.code == 0, run.stderr
    assert sorted(run.files("Images")) == ["ISIC_0000000.jpg", "ISIC_0000002.jpg", "ISIC_0000003.jpg"]
    assert run.outcomes() == {"kept": 3, "bad_id": 1}


def test_retry_after_is_honoured_and_the_image_kept(out):
    records = make_archive(3)
    records[0].behaviour = "429_once"
    records[1].behaviour = "500_once"
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        run = crawl("isic", out, api_args(api))
        assert host.hits(f"/images/{records[0].isic_id}.jpg") == 2
    assert run.code == 0, run.stderr
    assert run.outcomes() == {"kept": 3}
    assert "(Retry-After)" in run.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["filter=foo"], "error: isic: filter: expected one of benign, malignant, indeterminate, got 'foo'"),
        (["num_images=-3"], "error: isic: num_images: expected a whole number >= 1, got -3"),
        (["api_version=7"], "error: isic: api_version: expected one of 1, 2, got '7'"),
    ],
)
def test_bad_arguments_stop_before_any_request_with_one_line(args, message, out):
    run = crawl("isic", out, "api_url=http://127.0.0.1:9/api/v2", *args)
    assert run.code == 2
    assert run.stderr.strip() == message
    assert not out.exists()


def test_a_query_the_server_rejects_ends_the_run_with_one_line(isic, out):
    api, host = isic
    run = crawl("isic", out, api_args(api), "query=benign_malignant:benign")
    assert run.code == 1
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        "error: the ISIC API rejected the search 'benign_malignant:benign': Could not parse search query. "
        "(benign_malignant was retired; use diagnosis_1 (diagnosis_1:Benign, diagnosis_1:Malignant, "
        "diagnosis_1:Indeterminate))"
    )
    assert host.log == []


def test_a_missing_collection_ends_the_run_before_downloading(isic, out):
    api, host = isic
    run = crawl("isic", out, api_args(api), "collections=999")
    assert run.code == 1
    assert "error: collections: collection 999 does not exist" in run.stderr
    assert host.log == [] and api.requests_for("/api/v2/images/") == []


@pytest.mark.parametrize("mode", ["repeat_next", "empty_with_next", "not_json"])
def test_a_broken_listing_ends_cleanly_and_says_why(mode, out):
    records = make_archive(250, diagnoses=["Benign"])
    with ImageHost(records) as host, IsicV2Server(records, host, page_mode=mode) as api:
        run = crawl("isic", out, api_args(api))
        pages = len(search_pages(api))
    assert run.code == 1
    assert "Traceback" not in run.stderr
    assert "the listing ends here" in run.stderr.strip().splitlines()[-1]
    assert pages <= 3
    assert len(run.files("Images")) == run.outcomes()["kept"] >= 100


def test_an_unwritable_output_folder_is_one_line_and_exit_1(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    run = crawl("isic", blocker / "Data", "api_url=http://127.0.0.1:9/api/v2")
    assert run.code == 1
    assert run.stderr.strip().splitlines()[-1].startswith("error: cannot write to ")
    assert "Traceback" not in run.stderr


def test_retry_after_pauses_only_the_host_that_asked(out):
    slow, fast = make_archive(4), make_archive(4, seed=1)
    for i, record in enumerate(fast):
        record.isic_id = f"ISIC_{i + 100:07d}"
    for record in slow:
        record.behaviour = "429_once_3s"  # Retry-After: 3: the other host's images take far less, even when busy
    records = [r for pair in zip(slow, fast, strict=True) for r in pair]
    with ImageHost(slow) as host_a, ImageHost(fast) as host_b:
        for record in fast:  # another host name: Scrapy's download slots are per host name, not port
            record.full_url = host_b.image_url(record).replace("127.0.0.1", "localhost")
        with IsicV2Server(records, host_a) as api:
            run = crawl("isic", out, api_args(api))
    assert run.code == 0, run.stderr
    assert run.outcomes() == {"kept": 8}
    recorded = {line["id"]: line["time"] for line in run.manifest()}
    slow_times = [recorded[r.isic_id] for r in slow]
    fast_times = [recorded[r.isic_id] for r in fast]
    assert max(fast_times) < min(slow_times), "the other host waited too"
    assert min(slow_times) - min(fast_times) >= 2.9, "the 429 host did not wait for Retry-After"


def test_the_largest_isic_images_are_kept_and_an_old_file_is_not_fetched_again(out):
    from PIL import Image

    big = Image.new("1", (14_000, 13_000))  # 182 megapixels: over Pillow's own hard limit
    buf = __import__("io").BytesIO()
    big.save(buf, format="TIFF", compression="tiff_deflate")
    records = [FakeImage("ISIC_0000001", body=buf.getvalue(), ext="tif")]
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        first = crawl("isic", out, api_args(api))
        assert first.code == 0, first.stderr
        assert first.files("Images") == {"ISIC_0000001.tif": records[0].body}
        path = out / "Images" / "ISIC_0000001.tif"
        old = path.stat().st_mtime - 400 * 86400  # far past Scrapy's 90-day IMAGES_EXPIRES
        __import__("os").utime(path, (old, old))
        host.clear_log()
        second = crawl("isic", out, api_args(api))
        assert host.log == []
    line = second.manifest()[-1]
    assert line["outcome"] == "present"
    assert (line["width"], line["height"]) == (14_000, 13_000)


def test_the_pixel_limit_rejects_before_decoding(isic, out):
    api, _ = isic
    run = crawl("isic", out, api_args(api), "num_images=2", settings={"IMAGES_MAX_PIXELS": "1000"})
    assert run.code == 0, run.stderr
    assert run.files("Images") == {}
    assert run.outcomes() == {"too_large": 78, "http_404": 1, "not_image": 1}
    assert "kept 0 of the 2 images asked for" in run.stderr


def test_an_unwritable_folder_mid_run_stops_cleanly_with_exit_1(out):
    records = make_archive(30)
    (out / "Images").mkdir(parents=True)
    (out / "Images" / "malignant").write_text("a file where a folder should be")
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        run = crawl("isic", out, api_args(api), "layout=by_label", timeout=60)
    assert run.code == 1
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: cannot write to Images/malignant/ISIC_")
    kept = run.files("Images")
    assert kept and all(name.startswith("benign/") for name in kept if name != "malignant")
    assert not list((out / ".staging").iterdir())


def test_urls_that_are_not_http_are_never_fetched(out):
    records = make_archive(3)
    records[0].full_url = "file:///etc/passwd"
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        run = crawl("isic", out, api_args(api))
    assert run.code == 0, run.stderr
    assert sorted(run.files("Images")) == ["ISIC_0000001.jpg", "ISIC_0000002.jpg"]
    assert run.outcomes() == {"kept": 2, "no_url": 1}


def test_a_record_listed_twice_counts_once(out):
    records = make_archive(8)
    records[3].isic_id = records[2].isic_id
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        run = crawl("isic", out, api_args(api), "num_images=5")
    assert run.code == 0, run.stderr
    assert len(run.files("Images")) == 5
    assert "ISIC_0000002 is listed twice" in run.stderr


def test_a_rerun_replaces_a_damaged_file_and_skips_permanent_failures(isic, archive, out):
    api, host = isic
    first = crawl("isic", out, api_args(api), "num_images=12", "filter=benign")
    assert first.code == 0, first.stderr
    victim = out / "Images" / sorted(first.files("Images"))[0]
    good = victim.read_bytes()
    victim.write_bytes(good[:200])
    host.clear_log()
    second = crawl("isic", out, api_args(api), "num_images=12", "filter=benign")
    assert second.code == 0, second.stderr
    assert victim.read_bytes() == good
    fetched = {path for _, path in host.log}
    benign = [r for r in archive if r.diagnosis_1 == "Benign"]
    # the damaged file, and the truncated one (maybe a dropped connection); not the 404 nor the HTML page
    assert fetched == {f"/images/{victim.name}", f"/images/{benign[11].isic_id}.jpg"}


def test_filter_and_query_combine_into_one_search(out):
    records = make_archive(12)
    for i, record in enumerate(records):
        record.extra_clinical = {"sex": "female" if i % 3 == 0 else "male"}
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        run = crawl("isic", out, api_args(api), "filter=malignant", "query=sex:female")
        searches = search_pages(api)
    assert run.code == 0, run.stderr
    wanted = [r for r in records if r.diagnosis_1 == "Malignant" and r.extra_clinical["sex"] == "female"]
    expected = sorted(f"{r.isic_id}.jpg" for r in wanted)
    assert sorted(run.files("Images")) == expected and expected
    assert "query=diagnosis_1%3AMalignant+AND+%28sex%3Afemale%29" in searches[0]


def test_num_images_100_costs_one_page_request(out):
    records = make_archive(250, diagnoses=["Benign"])
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        run = crawl("isic", out, api_args(api), "num_images=100")
        pages = search_pages(api)
    assert run.code == 0, run.stderr
    assert len(run.files("Images")) == 100
    assert len(pages) == 1


class UnconfiguredPipeline:
    """A pipeline Scrapy disables (NotConfigured), as it does an s3:// store without botocore."""

    @classmethod
    def from_crawler(cls, crawler):
        from scrapy.exceptions import NotConfigured

        raise NotConfigured("botocore is not installed")


def test_a_disabled_pipeline_stops_the_run_instead_of_succeeding_empty(isic, out):
    api, host = isic
    pipelines = {**ITEM_PIPELINES, "tests.test_isic_crawl.UnconfiguredPipeline": 300}
    run = crawl("isic", out, api_args(api), "num_images=2", settings={"ITEM_PIPELINES": json.dumps(pipelines)})
    assert run.code == 1
    assert run.stderr.strip().splitlines()[-1] == (
        "error: the item pipeline UnconfiguredPipeline is disabled (the warning above says why); stopping"
    )
    assert host.log == [] and search_pages(api) == []


def test_images_store_on_the_command_line_does_not_move_the_dataset(isic, out):
    api, _ = isic
    run = crawl("isic", out, api_args(api), "num_images=2", settings={"IMAGES_STORE": "s3://bucket/images"})
    assert run.code == 0, run.stderr[-2000:]
    assert len(run.files("Images")) == 2 and run.outcomes() == {"kept": 2}


def test_retry_failed_asks_again_for_what_failed_for_good(out):
    records = make_archive(4)
    records[1].behaviour = "404"
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        assert crawl("isic", out, api_args(api)).outcomes() == {"kept": 3, "http_404": 1}
        records[1].behaviour = "ok"  # the server has it again
        host.clear_log()
        assert crawl("isic", out, api_args(api)).code == 0
        assert host.log == []  # a 404 is not asked again by default
        again = crawl("isic", out, api_args(api), "retry_failed=true")
        assert [path for _, path in host.log] == [f"/images/{records[1].isic_id}.jpg"]
    assert again.code == 0
    assert len(again.files("Images")) == 4


def test_a_host_that_never_answers_is_bounded_by_the_image_timeout(out):
    """The host holds the request far longer than the run may take (the helper's limit): the
    crawl ends, so it gave up on the request, and says timeout."""
    records = make_archive(4)
    records[1].behaviour = "hang"
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        host.hang_seconds = 600
        run = crawl("isic", out, api_args(api), settings={"IMAGES_DOWNLOAD_TIMEOUT": "2", "RETRY_TIMES": "1"})
    assert run.code == 0, run.stderr
    assert run.outcomes() == {"kept": 3, "timeout": 1}


def test_ids_meant_to_escape_the_output_folder_are_bad_ids(tmp_path):
    records = make_archive(5)
    records[0].isic_id = "../../escaped"
    records[1].isic_id = "/tmp/absolute"
    records[2].isic_id = "ISIC_0000002\x00.jpg"
    records[3].isic_id = "ISIC_" + "1" * 300
    out = tmp_path / "a" / "b" / "Data"
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        run = crawl("isic", out, api_args(api))
        assert [path for _, path in host.log] == ["/images/ISIC_0000004.jpg"]
    assert run.code == 0, run.stderr
    assert run.outcomes() == {"bad_id": 4, "kept": 1}
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert all(name.startswith("a/b/Data/") for name in written), written
