"""ISIC runs for real studies: private images through a token (sent to the API only, recorded
nowhere), balanced datasets (``per_label``), the archive's thumbnails, and ``files.full.size``
as a hint."""

from __future__ import annotations

import json

from tests.conftest import crawl
from tests.emulators import ImageHost, IsicV2Server, make_archive

TOKEN = "s3cr3t-token-0123456789"


def api_arg(api: IsicV2Server) -> str:
    return f"api_url={api.url}/api/v2"


def everything_written(out) -> str:
    """Every text file of the dataset folder, for a secret to hide in."""
    texts = []
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".csv", ".txt", ".html"):
            texts.append(path.read_text(errors="replace"))
    return "\n".join(texts)


def test_a_token_sees_private_images_and_goes_to_the_api_only(tmp_path):
    archive = make_archive(10)
    for img in archive[::3]:  # 0, 3, 6, 9 private
        img.public = False
    public = [img for img in archive if img.public]
    with ImageHost(archive) as host, IsicV2Server(archive, host, tokens={TOKEN}) as api:
        anonymous = crawl("isic", tmp_path / "anon", api_arg(api))
        with_token = crawl("isic", tmp_path / "private", api_arg(api), env={"ISIC_TOKEN": TOKEN})
        as_argument = crawl("isic", tmp_path / "arg", api_arg(api), f"token={TOKEN}", "num_images=2")
        refused = crawl("isic", tmp_path / "bad", api_arg(api), env={"ISIC_TOKEN": "expired"})
        api_auth = {h.get("authorization") for h in api.headers_for("/api/v2/")}
        image_auth = [h for h in host.headers_for("/") if "authorization" in h]
    assert anonymous.code == 0, anonymous.stderr
    assert sorted(anonymous.files("Images")) == sorted(f"{img.isic_id}.jpg" for img in public)
    assert with_token.code == 0, with_token.stderr
    assert sorted(with_token.files("Images")) == sorted(f"{img.isic_id}.jpg" for img in archive)
    assert f"Bearer {TOKEN}" in api_auth and image_auth == []  # never to the image host
    for run in (with_token, as_argument):
        assert run.code == 0, run.stderr
        assert TOKEN not in run.stderr and TOKEN not in everything_written(run.out)
    runs = json.loads((tmp_path / "arg" / "dataset.json").read_text())["runs"]
    assert runs[-1]["arguments"]["token"] == "(given; not recorded)"
    assert refused.code == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: the ISIC API refused the token for the search (HTTP 401): it has expired or lacks access; "
        "get a new one (docs/isic.md: Private images) or unset ISIC_TOKEN")


def test_per_label_keeps_n_of_each_label_topped_up_after_failures(tmp_path):
    archive = make_archive(18, diagnoses=["Benign", "Malignant", "Indeterminate"])
    malignant = [img for img in archive if img.diagnosis_1 == "Malignant"]
    for img in malignant[:2]:
        img.behaviour = "404"
    indeterminate = [img for img in archive if img.diagnosis_1 == "Indeterminate"]
    for img in indeterminate[:4]:
        img.behaviour = "html"  # 2 good ones left: short of 3
    with ImageHost(archive) as host, IsicV2Server(archive, host) as api:
        run = crawl("isic", tmp_path / "Data", api_arg(api), "per_label=3", "layout=by_label")
        strict = crawl("isic", tmp_path / "strict", api_arg(api), "per_label=3", "strict=true")
        searches = [p for p in api.requests_for("/api/v2/images/search/") if "/size/" not in p]
    assert run.code == 0, run.stderr
    files = run.files("Images")
    by_label = {label: sorted(n.split("/")[1] for n in files if n.startswith(f"{label}/"))
                for label in ("benign", "malignant", "indeterminate")}
    assert len(by_label["benign"]) == 3 and len(by_label["malignant"]) == 3
    assert by_label["indeterminate"] == sorted(f"{img.isic_id}.jpg" for img in indeterminate[4:])
    assert {f"{img.isic_id}.jpg" for img in malignant[:2]}.isdisjoint(by_label["malignant"])
    assert "Short: indeterminate: 2/3: the selection has no more good images of this label (not_image 4)" in run.stderr
    assert all("diagnosis_1" in p for p in searches)  # one search per label, never the whole archive
    assert strict.code == 1
    assert strict.stderr.strip().splitlines()[-1] == "error: strict: 1 label(s) have fewer than 3 images: indeterminate"


def test_per_label_with_num_images_is_one_line_and_exit_2(tmp_path):
    run = crawl("isic", tmp_path / "Data", "per_label=3", "num_images=5")
    assert run.code == 2
    assert run.stderr.strip().splitlines()[-1] == (
        "error: isic: per_label: not with num_images or offset (it asks for N of each label)")


def test_thumbnails_never_mix_with_full_images_in_one_folder(tmp_path):
    archive = make_archive(6, size=(600, 450))
    with ImageHost(archive) as host, IsicV2Server(archive, host) as api:
        small = crawl("isic", tmp_path / "Data", api_arg(api), "num_images=4", "image_size=thumbnail_256")
        variants = {line["variant"] for line in small.manifest()}
        thumbs = {f"{img.isic_id}.jpg": host.thumbnail(img) for img in archive[:4]}
        mixed = crawl("isic", tmp_path / "Data", api_arg(api), "num_images=4")
        elsewhere = crawl("isic", tmp_path / "Full", api_arg(api), "num_images=4")  # a dataset of its own
    assert small.code == 0, small.stderr
    assert small.files("Images") == thumbs
    assert variants == {"thumbnail_256"}
    assert mixed.code == 1
    assert mixed.stderr.strip().splitlines()[-1].startswith(
        f"error: {tmp_path / 'Data'} holds another dataset (image_size is thumbnail_256 there, full now)")
    assert small.files("Images") == thumbs  # untouched
    assert elsewhere.code == 0, elsewhere.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "Full" / "Images").iterdir() if p.suffix == ".jpg"} == {
        f"{img.isic_id}.jpg": img.body for img in archive[:4]}


def test_a_size_that_differs_from_the_record_is_kept_and_noted(tmp_path):
    archive = make_archive(3)
    archive[1].size = len(archive[1].body) + 2048  # the archive wrote IPTC metadata after sizing it
    with ImageHost(archive) as host, IsicV2Server(archive, host) as api:
        run = crawl("isic", tmp_path / "Data", api_arg(api))
    assert run.code == 0, run.stderr
    lines = {line["id"]: line for line in run.manifest()}
    assert lines[archive[1].isic_id]["outcome"] == "kept"
    assert lines[archive[1].isic_id]["detail"].startswith(
        f"{len(archive[1].body)} bytes, the record said {len(archive[1].body) + 2048} (a hint, not a checksum")
    assert lines[archive[0].isic_id]["detail"] is None
