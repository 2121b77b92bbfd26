"""The datasets load as they are: Hugging Face's ``imagefolder`` (the real ``datasets`` library,
offline, in one subprocess for the whole file) and torchvision's ``ImageFolder`` rule.

ISIC: ``images_dir/metadata.jsonl`` lists exactly the image files there, with the manifest's
label and the metadata as typed features, across re-runs that relabel (move), lose and keep
images, and after ``scrapy verify --fix``. ImageNet: ``classes.txt`` has the indices the loaders
assign (sorted folder names), ``classes_given.txt`` the order given.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.json as paj
import pytest
from PIL import Image, ImageOps

from dataset_spiders.imagefolder import ClassIndex, metadata_jsonl
from tests.conftest import ROOT, clean_env, crawl
from tests.emulators import FakeSegmentation, ImageHost, IsicV1Server, IsicV2Server, make_archive
from tests.emulators.imagenet import GeturlsServer, PhotoHosts, make_classes
from tests.test_imagenet_crawl import imagenet

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}

#: Loads each folder given with datasets' imagefolder and prints, per folder, the features, the
#: class names of a ClassLabel ``label``, and every row: its file, its decoded pixels, its columns.
LOADER = r"""
import hashlib, json, sys
import datasets

out = []
for data_dir in sys.argv[1:]:
    ds = datasets.load_dataset("imagefolder", data_dir=data_dir, split="train")
    label = ds.features.get("label")
    paths = ds.cast_column("image", datasets.Image(decode=False))
    rows = []
    for decoded, raw in zip(ds, paths):
        image = decoded.pop("image")
        row = {k: v for k, v in raw.items() if k != "image"}
        row.update(path=raw["image"]["path"], mode=image.mode, size=list(image.size),
                   pixels=hashlib.sha256(image.tobytes()).hexdigest())
        rows.append(row)
    out.append({"features": {k: [type(v).__name__, getattr(v, "dtype", None)] for k, v in ds.features.items()},
                "names": list(label.names) if isinstance(label, datasets.ClassLabel) else None, "rows": rows})
print("RESULT " + json.dumps(out))
"""


def load_with_datasets(tmp: Path, *folders: Path) -> list[dict]:
    """The real ``datasets.load_dataset("imagefolder", data_dir=...)`` of each folder, offline."""
    env = clean_env({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp / "hf"),
                     "HF_HUB_DISABLE_TELEMETRY": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"})
    proc = subprocess.run([sys.executable, "-c", LOADER, *map(str, folders)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def pixels(path: Path) -> tuple[str, list[int], str]:
    """What a loader decodes from the file: Pillow, EXIF orientation applied as datasets does."""
    with Image.open(path) as im:
        im.load()
        if im.getexif().get(0x0112) is not None:
            im = ImageOps.exif_transpose(im)
        return im.mode, list(im.size), hashlib.sha256(im.tobytes()).hexdigest()


def last_lines(out: Path) -> dict[str, dict]:
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return {line["id"]: line for line in lines if line["kind"] == "image"}


def torchvision_classes(folder: Path) -> list[str]:
    """torchvision's ``find_classes`` (datasets/folder.py), as documented: the sorted names of the folders in root."""
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())


def read_tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


def metadata_lines(images: Path) -> list[dict]:
    return [json.loads(line) for line in (images / "metadata.jsonl").read_text().splitlines()]


def assert_metadata_true_to_files(out: Path) -> list[dict]:
    """metadata.jsonl lists each image file under Images once, with the manifest's label."""
    images = out / "Images"
    rows = metadata_lines(images)
    names = [row["file_name"] for row in rows]
    assert sorted(names) == sorted(p.relative_to(images).as_posix() for p in image_files(images))
    kept = last_lines(out)
    for row in rows:
        line = kept[row["isic_id"]]
        assert line["outcome"] in ("kept", "present") and line["path"] == f"Images/{row['file_name']}"
        assert row["label"] == line["label"]
        assert set(row) == set(rows[0])  # every line every column: one schema
    return rows


# --- building the datasets (once for the file: one load with datasets) ----------------------


def verify(out: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scrapy", "verify", *flags, str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def isic_archive() -> list:
    records = make_archive(9, diagnoses=["Benign", "Malignant", "Indeterminate", None])
    extras = [
        {"age_approx": 55, "anatom_site_general": "head/neck", "melanocytic": True, "mel_thick_mm": 1},
        {"age_approx": 30},
        {"mel_thick_mm": 0.5, "melanocytic": False},
        {},
        {"age_approx": 70, "anatom_site_general": "lower extremity"},
        {},
        {"age_approx": "unknown", "label": "not ours", "x_file_name": "elsewhere.png"},
        {"dermoscopic_notes": {"globules": True}},  # a nested value, on one record only
        {},
    ]
    for record, extra in zip(records, extras, strict=True):
        record.extra_clinical = extra
    return records


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """An ISIC by_label dataset re-run after a relabel, a loss and a withdrawal from the archive,
    then fixed by ``scrapy verify --fix``; a v1 one with masks; an ImageNet name_wnid one; all
    loaded with datasets."""
    base = tmp_path_factory.mktemp("loading")
    isic, v1, net = base / "isic", base / "v1", base / "imagenet"
    result: dict = {"isic": isic, "v1": v1, "imagenet": net}

    records = isic_archive()
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        args = (f"api_url={api.url}/api/v2", "layout=by_label")
        first = crawl("isic", isic, *args)
        assert first.code == 0, first.stderr[-3000:]
        result["first_rows"] = assert_metadata_true_to_files(isic)
        records[0].diagnosis_1 = "Malignant"  # relabelled: moves from benign/ to malignant/
        (isic / "Images" / "malignant" / "ISIC_0000001.jpg").unlink()
        records[1].behaviour = "404"  # lost, and gone from the server
        del records[8], records[5]  # no longer listed: #5's file stays in the dataset; #8's is
        (isic / "Images" / "benign" / "ISIC_0000008.jpg").unlink()  # deleted by hand: the manifest still keeps it
        second = crawl("isic", isic, *args)
        assert second.code == 0, second.stderr[-3000:]
    result["second_rows"] = assert_metadata_true_to_files(isic)
    result["kept_by_manifest"] = {i for i, line in last_lines(isic).items() if line["outcome"] in ("kept", "present")}
    result["verify"] = verify(isic)
    damaged = isic / "Images" / "benign" / "ISIC_0000004.jpg"
    damaged.write_bytes(damaged.read_bytes()[:100])
    result["fix"] = verify(isic, "--fix")

    masked = make_archive(3)
    for record in masked:
        record.segmentations = [FakeSegmentation(skill="expert")]
    with IsicV1Server(masked) as api:
        run = crawl("isic", v1, "api_version=1", f"api_url={api.url}/api/v1", "segmentation=true",
                    f"seg_dir={v1 / 'Images' / 'masks'}")  # masks inside the tree imagefolder reads
        assert run.code == 0, run.stderr[-3000:]
    result["masks"] = sorted((v1 / "Images" / "masks").iterdir())
    result["verify_v1"] = verify(v1)

    wnids = ["n01440764", "n01443537", "n01629819", "n02102040"]
    classes = make_classes(4, 4, seed=31, failure_rate=0.0, wnids=wnids)
    for photo in classes["n01629819"]:  # no image: no folder, so no class for the loaders
        photo.behaviour = "404"
    given = "tench,n01440764\ngoldfish,n01443537\naxolotl,n01629819\nEnglish springer,n02102040\n"
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        run = imagenet(net, hosts, api, "wnids_file=-", "per_class=2", "layout=name_wnid", stdin=given)
        assert run.code == 0, run.stderr[-3000:]
    result["verify_imagenet"] = verify(net)

    result["loaded"] = dict(zip(("isic", "v1", "imagenet"),
                                load_with_datasets(base, isic / "Images", v1 / "Images", net / "Images"),
                                strict=True))
    return result


# --- ISIC -----------------------------------------------------------------------------------


def test_isic_loads_with_every_file_its_pixels_its_label_and_typed_metadata(built):
    images = built["isic"] / "Images"
    loaded = built["loaded"]["isic"]
    files = image_files(images)
    assert len(loaded["rows"]) == len(files) == 6  # 9, less the one lost, the one deleted, the one --fix set aside
    kept = last_lines(built["isic"])
    by_path = {Path(os.path.realpath(row["path"])): row for row in loaded["rows"]}
    assert set(by_path) == {Path(os.path.realpath(p)) for p in files}
    for path, row in by_path.items():
        assert [row["mode"], row["size"], row["pixels"]] == list(pixels(path))
        line = kept[row["isic_id"]]
        assert row["label"] == line["label"]
        assert path == Path(os.path.realpath(built["isic"] / line["path"]))
    features = loaded["features"]
    assert features["image"][0] == "Image"
    assert features["label"] == ["Value", "string"]  # one label a row, the manifest's: not the folders'
    expected = {"isic_id": "string", "attribution": "string", "copyright_license": "string", "diagnosis_1": "string",
                "pixels_x": "int64", "pixels_y": "int64", "age_approx": "string", "mel_thick_mm": "float64",
                "melanocytic": "bool", "dermoscopic_notes": "string"}
    for name, dtype in expected.items():
        assert features[name] == ["Value", dtype], (name, features[name])
    assert "x_file_name" not in features and "x" not in features  # would have become a second image column
    rows = {row["isic_id"]: row for row in loaded["rows"]}
    assert rows["ISIC_0000000"]["label"] == "malignant" and rows["ISIC_0000000"]["mel_thick_mm"] == 1.0
    assert rows["ISIC_0000003"]["label"] is None and rows["ISIC_0000003"]["age_approx"] is None
    assert rows["ISIC_0000002"]["mel_thick_mm"] == 0.5 and rows["ISIC_0000000"]["age_approx"] == "55"
    assert rows["ISIC_0000006"]["label"] == "indeterminate" and rows["ISIC_0000006"]["age_approx"] == "unknown"
    assert rows["ISIC_0000007"]["dermoscopic_notes"] == '{"globules": true}'



def test_isic_metadata_follows_reruns_and_verify_fix(built):
    first = {row["isic_id"]: row["file_name"] for row in built["first_rows"]}
    assert first["ISIC_0000000"] == "benign/ISIC_0000000.jpg" and len(first) == 9
    second = {row["isic_id"]: row["file_name"] for row in built["second_rows"]}
    assert second["ISIC_0000000"] == "malignant/ISIC_0000000.jpg"  # relabelled: moved, listed where it is
    assert "ISIC_0000001" not in second  # lost: its file is gone, so is its line
    assert second["ISIC_0000005"] == "malignant/ISIC_0000005.jpg"  # withdrawn from the archive, still here
    assert "ISIC_0000008" in built["kept_by_manifest"]  # what the manifest says...
    assert "ISIC_0000008" not in second  # ...but its file is not there
    assert built["verify"].stdout.splitlines()[-1].endswith("1 problem(s): missing 1")  # metadata.jsonl: ours
    assert "undecodable" in built["fix"].stdout or "changed" in built["fix"].stdout
    after = assert_metadata_true_to_files(built["isic"])
    assert sorted(row["isic_id"] for row in after) == sorted(set(second) - {"ISIC_0000004"})
    assert (built["isic"] / "metadata.csv").exists() and not (built["isic"] / "Images" / "metadata.csv").exists()


def test_verify_takes_the_loader_files_for_ours(built):
    assert built["verify_v1"].returncode == 0, built["verify_v1"].stdout  # metadata.jsonl, masks inside Images
    assert built["verify_imagenet"].returncode == 0, built["verify_imagenet"].stdout  # classes*.txt


def test_masks_inside_the_image_tree_are_not_rows_of_the_dataset(built):
    masks = built["masks"]
    assert [p.name for p in masks] == [f"ISIC_000000{i}_expert.png" for i in range(3)]
    rows = built["loaded"]["v1"]["rows"]
    assert sorted(row["isic_id"] for row in rows) == ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"]
    assert all("/masks/" not in row["path"] for row in rows)
    assert [line["file_name"] for line in metadata_lines(built["v1"] / "Images")] == [
        "ISIC_0000000.jpg", "ISIC_0000001.jpg", "ISIC_0000002.jpg"]


# --- ImageNet -------------------------------------------------------------------------------


def test_imagenet_classes_txt_has_the_loaders_indices_and_classes_given_the_order_given(built):
    root = built["imagenet"] / "Images"
    index = read_tsv(root / "classes.txt")
    assert index == [
        ["0", "English_springer_n02102040", "n02102040", "English springer"],
        ["1", "goldfish_n01443537", "n01443537", "goldfish"],
        ["2", "tench_n01440764", "n01440764", "tench"],
    ]  # axolotl got no image: it has no folder, and no index
    assert read_tsv(root / "classes_given.txt") == [
        ["0", "n01440764", "tench"], ["1", "n01443537", "goldfish"], ["2", "n01629819", "axolotl"],
        ["3", "n02102040", "English springer"],
    ]  # fmt: skip
    folders = [folder for _, folder, _, _ in index]
    assert folders == torchvision_classes(root)
    loaded = built["loaded"]["imagenet"]
    assert loaded["names"] == folders  # datasets' ClassLabel: index i is classes.txt's line i
    files = image_files(root)
    assert len(loaded["rows"]) == len(files) == 6
    for row in loaded["rows"]:
        path = Path(row["path"])
        assert loaded["names"][row["label"]] == path.parent.name
        assert [row["mode"], row["size"], row["pixels"]] == list(pixels(path))


def test_ilsvrc1000_in_wnid_folders_keeps_the_class_index_order():
    """ILSVRC indices are in wnid order, so layout=wnid makes classes.txt equal classes_given.txt."""
    tsv = ROOT / "dataset_spiders" / "data" / "ilsvrc1000.tsv"
    rows = [line.split("\t") for line in tsv.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    wnids = [wnid for wnid, _ in rows]
    assert len(wnids) == len(set(wnids)) == 1000
    written: dict[str, bytes] = {}
    classes = [(i, wnid, label, wnid) for i, (wnid, label) in enumerate(rows)]
    ClassIndex("/nonexistent", classes, lambda path, data: written.update({os.path.basename(path): data})).write(True)
    index = [line.split("\t") for line in written["classes.txt"].decode().splitlines()]
    given = [line.split("\t") for line in written["classes_given.txt"].decode().splitlines()]
    assert [(i, w, label) for i, _, w, label in index] == [tuple(line) for line in given]
    named = [(i, w, label, f"{label.split(',')[0].replace(' ', '_')}_{w}") for i, w, label, _ in classes]
    ClassIndex("/nonexistent", named, lambda path, data: written.update({os.path.basename(path): data})).write(True)
    assert [line.split("\t")[2] for line in written["classes.txt"].decode().splitlines()] != wnids  # name_wnid differs


# --- metadata.jsonl types -------------------------------------------------------------------


def test_metadata_columns_get_one_type_each_and_no_column_is_null_through_the_head():
    rows = [{"file_name": f"{i}.jpg", "label": None, "n": i, "x": None} for i in range(5000)]
    rows[10]["n"] = "unknown"  # int and str: str
    rows[20]["x"] = 1  # int and float: float
    rows[4999]["x"] = 2.5
    rows[4999]["late"] = True  # a column met on the last row only
    rows[3]["label"] = "benign"
    data = metadata_jsonl(rows)
    lines = [json.loads(line) for line in data.decode().splitlines()]
    assert len(lines) == 5000 and all(list(line) == list(lines[0]) for line in lines)
    assert list(lines[0])[:2] == ["file_name", "label"]
    assert {type(line["n"]) for line in lines} == {str} and {type(line["x"]) for line in lines} == {float, type(None)}
    assert [line["file_name"] for line in lines[:5]] == ["0.jpg", "3.jpg", "20.jpg", "4999.jpg", "1.jpg"]
    table = paj.read_json(io.BytesIO(data), read_options=paj.ReadOptions(block_size=4096))  # many blocks
    assert [str(table.schema.field(name).type) for name in ("label", "n", "x", "late")] == [
        "string", "string", "double", "bool"]
    assert sorted(line["file_name"] for line in lines) == sorted(row["file_name"] for row in rows)
