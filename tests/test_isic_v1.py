"""`scrapy crawl isic -a api_version=1` against the legacy Girder emulator: labels, masks, re-runs."""

from __future__ import annotations

from tests.conftest import crawl
from tests.emulators import FakeImage, FakeSegmentation, IsicV1Server, images, make_archive


def v1_args(api):
    return ["api_version=1", f"api_url={api.url}/api/v1"]


def test_compound_labels_count_as_indeterminate_in_filter_and_folders(out):
    records = make_archive(5)
    labels = ["indeterminate/benign", "benign", "indeterminate", "malignant", "indeterminate/malignant"]
    for record, label in zip(records, labels, strict=True):
        record.v1_label = label
    with IsicV1Server(records) as api:
        run = crawl("isic", out, *v1_args(api), "layout=by_label", "filter=indeterminate")
        assert not api.errors
    assert run.code == 0, run.stderr
    assert sorted(run.files("Images")) == [
        "indeterminate/ISIC_0000000.jpg", "indeterminate/ISIC_0000002.jpg", "indeterminate/ISIC_0000004.jpg",
    ]  # fmt: skip


def test_extension_comes_from_the_content_and_a_rerun_finds_the_file(out):
    records = [
        FakeImage("ISIC_0000001", body=images.png_gray(40, 30, seed=1), ext="png"),
        FakeImage("ISIC_0000002", body=images.jpeg(40, 30, seed=2)),
    ]
    with IsicV1Server(records) as api:
        first = crawl("isic", out, *v1_args(api))
        assert first.code == 0, first.stderr
        assert first.files("Images") == {"ISIC_0000001.png": records[0].body, "ISIC_0000002.jpg": records[1].body}
        description = (out / "Descriptions" / "ISIC_0000001.json").read_text()
        assert '"_id": "' in description and '"benign_malignant": "benign"' in description
        (out / "manifest.jsonl").unlink()  # even without the manifest, the files on disk are found
        api.clear_log()
        second = crawl("isic", out, *v1_args(api))
        assert [p for _, p in api.log if "/download" in p] == []
    assert second.code == 0, second.stderr
    assert second.outcomes() == {"present": 2}


def test_masks_skip_failed_segmentations_prefer_the_skill_and_fall_through_a_410(out):
    a, b, c = make_archive(3, size=(40, 30))
    a.segmentations = [  # listed by the server newest first: the failed one comes first
        FakeSegmentation(skill="expert"),
        FakeSegmentation(skill="novice"),
        FakeSegmentation(skill="novice", failed=True),
    ]
    b.segmentations = [FakeSegmentation(skill="novice"), FakeSegmentation(skill="expert", behaviour="410")]
    c.segmentations = [FakeSegmentation(skill="expert", failed=True)]
    with IsicV1Server([a, b, c]) as api:
        run = crawl("isic", out, *v1_args(api), "segmentation=true", "seg_level=expert")
        assert not api.errors
        newest = crawl("isic", out.parent / "Newest", *v1_args(api), "segmentation=true", "no_images=true")
    assert run.code == 0, run.stderr
    masks = run.files("Segmentation")
    assert sorted(masks) == ["ISIC_0000000_expert.png", "ISIC_0000001_novice.png"]
    assert masks["ISIC_0000000_expert.png"] == a.segmentations[0].mask
    assert masks["ISIC_0000001_novice.png"] == b.segmentations[0].mask
    assert run.outcomes("mask") == {"kept": 2}
    assert len(run.files("Images")) == 3
    # without a preferred skill, the newest segmentation that did not fail
    assert newest.code == 0, newest.stderr
    assert sorted(newest.files("Segmentation")) == ["ISIC_0000000_novice.png", "ISIC_0000001_novice.png"]
    assert newest.outcomes() == {"described": 3}
