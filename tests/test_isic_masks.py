"""v2 lesion masks from the challenge ground-truth ZIP archives, read by HTTP Range against a
local S3-like host serving real ZIP files (made here with ``zipfile``, with the member names of
two different years, stored and deflated members)."""

from __future__ import annotations

import json
import os
import zipfile

from dataset_spiders.dataset.verify import verify
from tests.conftest import crawl
from tests.emulators import ImageHost, IsicV2Server, images, make_archive
from tests.emulators.challenge_archives import LAYOUT_2016, LAYOUT_2018, ChallengeArchives, make_zip

SIZE = (40, 30)
FILLER = 150  # masks of other images in each archive: what a real archive mostly holds, for us


def mask(isic_id: str, size: tuple[int, int] = SIZE) -> bytes:
    return images.mask_png(*size, seed=int(isic_id[5:]))


def ground_truth(layout: str, masks: dict[str, bytes], first_filler: int, long_extra: str = "") -> bytes:
    """An archive holding ``masks`` (every other one deflated), filler masks and a licence file;
    the mask of ``long_extra`` with a 200-byte extra field (more than the reader guesses)."""
    members = [(layout.format(isic_id=i), data, zipfile.ZIP_DEFLATED if n % 2 else zipfile.ZIP_STORED)
               for n, (i, data) in enumerate(masks.items())]
    for n in range(first_filler, first_filler + FILLER):  # noise: they do not compress away
        members.append((layout.format(isic_id=f"ISIC_{n:07d}"), images.png_gray(64, 64, seed=n), zipfile.ZIP_STORED))
    members.append((layout.split("/")[0] + "/LICENSE.txt", b"CC-BY-NC 4.0\n" * 20, zipfile.ZIP_DEFLATED))
    extra = {layout.format(isic_id=long_extra): b"\xfe\xca\xc4\x00" + bytes(196)} if long_extra else {}
    return make_zip(members, extra)


def archives_setting(host: ChallengeArchives, *paths: str) -> dict[str, str]:
    return {"ISIC_MASK_ARCHIVES": ",".join(host.url_of(p) for p in paths)}


A_PATH = "2018/ISIC2018_Task1_Training_GroundTruth.zip"
B_PATH = "2016/ISBI2016_ISIC_Part1_Training_GroundTruth.zip"


def two_archives():
    """Images 0-5: 0, 1, 2 in the 2018 archive; 1 (other bytes), 3, and 4 (wrong size) in 2016's; 5 in none."""
    in_a = {f"ISIC_000000{i}": mask(f"ISIC_000000{i}") for i in (0, 1, 2)}
    in_b = {"ISIC_0000001": mask("ISIC_0000011"), "ISIC_0000003": mask("ISIC_0000003"),
            "ISIC_0000004": mask("ISIC_0000004", (50, 50))}
    blobs = {A_PATH: ground_truth(LAYOUT_2018, in_a, 1000, long_extra="ISIC_0000002"),
             B_PATH: ground_truth(LAYOUT_2016, in_b, 2000)}
    return in_a, in_b, blobs


def mask_lines(run) -> dict[str, dict]:
    return {line["id"]: line for line in run.manifest() if line["kind"] == "mask"}


def test_masks_come_from_the_archives_by_range_and_a_rerun_uses_the_cached_directories(out):
    records = make_archive(6, size=SIZE)
    in_a, in_b, blobs = two_archives()
    with ImageHost(records) as host, IsicV2Server(records, host) as api, ChallengeArchives(blobs) as bucket:
        settings, base = archives_setting(bucket, A_PATH, B_PATH), bucket.url
        run = crawl("isic", out, f"api_url={api.url}/api/v2", "segmentation=true", settings=settings)
        assert run.code == 0, run.stderr
        masks, lines, images_kept = run.files("Segmentation"), mask_lines(run), run.files("Images")
        first_lines = len(run.manifest())
        sent, total = bucket.bytes_sent(), sum(map(len, blobs.values()))
        ranges = [h.get("range") for h in bucket.headers_for("/")]
        # a rerun, with one mask lost: only that member is fetched, the directories come from the cache
        (out / "Segmentation" / "ISIC_0000002_segmentation.png").unlink()
        bucket.clear_log()
        again = crawl("isic", out, f"api_url={api.url}/api/v2", "segmentation=true", settings=settings)
        assert not (bucket.errors or api.errors)
        rerun_ranges = [h.get("range") for h in bucket.headers_for("/")]
    assert len(images_kept) == 6
    assert masks == {  # byte for byte as the archives hold them; the first archive wins
        "ISIC_0000000_segmentation.png": in_a["ISIC_0000000"], "ISIC_0000001_segmentation.png": in_a["ISIC_0000001"],
        "ISIC_0000002_segmentation.png": in_a["ISIC_0000002"], "ISIC_0000003_segmentation.png": in_b["ISIC_0000003"],
    }
    assert {line["outcome"] for line in lines.values()} == {"kept", "wrong_size", "no_mask"}
    assert [lines[f"ISIC_000000{i}"]["outcome"] for i in range(6)] == ["kept"] * 4 + ["wrong_size", "no_mask"]
    assert "50x50, not its image's 40x30" in lines["ISIC_0000004"]["detail"]
    assert lines["ISIC_0000001"]["origin"] == (
        f"{base}/{A_PATH}!ISIC2018_Task1_Training_GroundTruth/ISIC_0000001_segmentation.png")
    assert lines["ISIC_0000003"]["origin"].endswith(f"{B_PATH}!ISBI2016_ISIC_Part1_Training_GroundTruth/"
                                                    "ISIC_0000003_Segmentation.png")
    assert lines["ISIC_0000000"]["path"] == "Segmentation/ISIC_0000000_segmentation.png"
    assert lines["ISIC_0000000"]["width"] == 40 and lines["ISIC_0000000"]["sha256"]
    # every request asked for a range: one tail per archive, then one range per mask member (two
    # for ISIC_0000002, whose local header's extra field is longer than the reader's guess)
    assert all(r and r.startswith("bytes=") for r in ranges), ranges
    assert sorted(r for r in ranges if r.startswith("bytes=-")) == ["bytes=-65557"] * 2
    assert len(ranges) == 2 + 5 + 1
    assert sent < total / 5, (sent, total)
    # the rerun: the lost member's ranges only; nothing else fetched again
    assert again.code == 0, again.stderr
    assert len(rerun_ranges) == 2 and not any(r.startswith("bytes=-") for r in rerun_ranges)
    assert again.files("Segmentation") == masks
    rerun_masks = sorted((line["id"], line["outcome"]) for line in again.manifest()[first_lines:]
                         if line["kind"] == "mask")
    assert rerun_masks == [("ISIC_0000002", "kept"), ("ISIC_0000005", "no_mask")]
    assert "305 image id(s) have a mask in 2 archive(s)" in run.stderr
    assert "305 image id(s) have a mask in 2 archive(s)" in again.stderr


def test_a_host_without_range_support_is_downloaded_once_into_the_cache(out):
    records = make_archive(3, size=SIZE)
    in_a, _, blobs = two_archives()
    with ImageHost(records) as host, IsicV2Server(records, host) as api, \
            ChallengeArchives({A_PATH: blobs[A_PATH]}, ranges=False) as bucket:
        settings = archives_setting(bucket, A_PATH)
        run = crawl("isic", out, f"api_url={api.url}/api/v2", "segmentation=true", settings=settings)
        first_hits, first_masks = bucket.hits(f"/{A_PATH}"), run.files("Segmentation")
        (out / "Segmentation" / "ISIC_0000001_segmentation.png").unlink()
        bucket.clear_log()
        again = crawl("isic", out, f"api_url={api.url}/api/v2", "segmentation=true", settings=settings)
        assert bucket.log == []  # read from the cached copy
    assert run.code == 0, run.stderr
    assert "does not answer Range requests: downloading the whole archive" in run.stderr
    assert first_hits == 1
    assert first_masks == {f"{i}_segmentation.png": data for i, data in in_a.items()}
    cached = list((out / ".cache" / "isic-masks").glob("*.zip"))
    assert [p.read_bytes() == blobs[A_PATH] for p in cached] == [True]
    assert again.code == 0, again.stderr
    assert again.files("Segmentation") == first_masks


def test_masks_required_keeps_pairs_searching_only_ids_with_masks(out):
    records = make_archive(12, size=SIZE)
    records[5].behaviour = "404"  # its image fails: the next record with a mask takes its place
    with_masks = {i: mask(i) for i in ("ISIC_0000002", "ISIC_0000005", "ISIC_0000007", "ISIC_0000008",
                                      "ISIC_0000011")}
    blobs = {A_PATH: ground_truth(LAYOUT_2018, with_masks, 100)}  # filler ids 100-249: not in the archive's API
    with ImageHost(records) as host, IsicV2Server(records, host) as api, ChallengeArchives(blobs) as bucket:
        run = crawl("isic", out, f"api_url={api.url}/api/v2", "segmentation=true", "masks_required=true",
                    "num_images=3", "filter=benign", settings=archives_setting(bucket, A_PATH))
        searches = api.requests_for("/api/v2/images/search/")
        api.clear_log()
        unfiltered = crawl("isic", out.parent / "All", f"api_url={api.url}/api/v2", "segmentation=true",
                           "masks_required=true", "num_images=3", settings=archives_setting(bucket, A_PATH))
        first_batch_only = api.requests_for("/api/v2/images/search/")
        assert not (bucket.errors or api.errors)
    assert run.code == 0, run.stderr
    # benign are the even ids: 2 and 8 have masks (5, 7, 11 are malignant); 3 asked, 2 exist
    assert sorted(run.files("Images")) == ["ISIC_0000002.jpg", "ISIC_0000008.jpg"]
    assert sorted(run.files("Segmentation")) == ["ISIC_0000002_segmentation.png", "ISIC_0000008_segmentation.png"]
    assert run.outcomes("mask") == {"kept": 2}
    # the 155 ids with a mask, 50 a search: every batch searched, since the selection ran short
    assert len(searches) == 4 and all("diagnosis_1%3ABenign" in s and "+OR+isic_id%3AISIC_" in s for s in searches)
    assert "isic_id%3AISIC_0000002+OR+isic_id%3AISIC_0000005" in searches[0]
    assert len(first_batch_only) == 1, first_batch_only  # lazily: the first batch had the 3 pairs
    assert unfiltered.code == 0, unfiltered.stderr
    assert sorted(unfiltered.files("Images")) == ["ISIC_0000002.jpg", "ISIC_0000007.jpg", "ISIC_0000008.jpg"]
    assert unfiltered.outcomes() == {"kept": 3, "http_404": 1}
    assert unfiltered.outcomes("mask") == {"kept": 3}


def test_an_archive_that_cannot_be_read_stops_the_run_with_one_line(out):
    records = make_archive(2, size=SIZE)
    with ImageHost(records) as host, IsicV2Server(records, host) as api, \
            ChallengeArchives({A_PATH: b"<html>not a zip</html>" * 10}) as bucket:
        v2 = f"api_url={api.url}/api/v2"
        missing = crawl("isic", out, v2, "segmentation=true", settings=archives_setting(bucket, "2019/nope.zip"))
        broken = crawl("isic", out, v2, "segmentation=true", settings=archives_setting(bucket, A_PATH))
        none = crawl("isic", out, v2, "segmentation=true", settings={"ISIC_MASK_ARCHIVES": ""})
    for run, said in ((missing, "answered HTTP 404"), (broken, "not a ZIP archive"), (none, "needs ISIC_MASK_")):
        assert run.code == 1, run.stderr
        errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and said in errors[0], run.stderr
        assert "Traceback" not in run.stderr
    assert not out.exists()  # nothing was downloaded: nothing is left


def test_the_cache_is_the_dataset_s_own_for_verify(out):
    records = make_archive(2, size=SIZE)
    in_a, _, blobs = two_archives()
    with ImageHost(records) as host, IsicV2Server(records, host) as api, ChallengeArchives(blobs) as bucket:
        run = crawl("isic", out, f"api_url={api.url}/api/v2", "segmentation=true", f"images_dir={out}",
                    settings=archives_setting(bucket, A_PATH))
    assert run.code == 0, run.stderr
    assert run.files("Segmentation") == {f"{i}_segmentation.png": in_a[i] for i in ("ISIC_0000000", "ISIC_0000001")}
    cached = json.loads(next((out / ".cache" / "isic-masks").glob("*.json")).read_text())
    assert len(cached["members"]) == 3 + FILLER  # the masks only, not the licence file
    report = verify(str(out), [])
    assert report.ok, report.problems


def test_a_planted_cache_is_never_followed(out, tmp_path):
    """A symlink where the mask cache goes is refused (one line, exit 1, its target untouched); a
    cached directory file replaced by a link is no cache: the archive's tail is read again."""
    records = make_archive(2, size=SIZE)
    in_a, _, blobs = two_archives()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with ImageHost(records) as host, IsicV2Server(records, host) as api, ChallengeArchives(blobs) as bucket:
        settings = archives_setting(bucket, A_PATH)
        out.mkdir()
        (out / ".cache").symlink_to(elsewhere, target_is_directory=True)
        refused = crawl("isic", out, f"api_url={api.url}/api/v2", "segmentation=true", settings=settings)
        (out / ".cache").unlink()
        first = crawl("isic", out, f"api_url={api.url}/api/v2", "segmentation=true", settings=settings)
        cached = next((out / ".cache" / "isic-masks").glob("*.json"))
        forged = tmp_path / "forged.json"
        forged.write_text(cached.read_text().replace('"total": ', '"total": 1'))
        cached.unlink()
        cached.symlink_to(forged)
        (out / "Segmentation" / "ISIC_0000001_segmentation.png").unlink()
        tails = sum(h.get("range", "").startswith("bytes=-") for h in bucket.headers_for("/"))
        again = crawl("isic", out, f"api_url={api.url}/api/v2", "segmentation=true", settings=settings)
        tails_again = sum(h.get("range", "").startswith("bytes=-") for h in bucket.headers_for("/"))
    assert refused.code == 1 and os.listdir(elsewhere) == []
    assert refused.stderr.strip().splitlines()[-1].startswith(f"error: {out / '.cache'} is a symlink")
    assert first.code == 0, first.stderr
    assert again.code == 0, again.stderr
    assert tails_again == tails + 1  # the forged directory was not used: the tail was read again
    assert (out / "Segmentation" / "ISIC_0000001_segmentation.png").read_bytes() == in_a["ISIC_0000001"]
