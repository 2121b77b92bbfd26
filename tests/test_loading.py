"""The datasets load as they are: Hugging Face's ``imagefolder`` (the real ``datasets`` library,
offline, in a subprocess) and torchvision's ``ImageFolder`` (its ``datasets/folder.py`` logic,
torchvision itself not being installed here).

ISIC: ``images_dir/metadata.jsonl`` lists exactly the image files there, with the manifest's
label and the metadata as typed features, across re-runs that relabel (move), lose and keep
images, and after ``scrapy verify --fix``. ImageNet: ``classes.txt`` has the indices the loaders
assign (sorted folder names), ``classes_given.txt`` the order given. ISIC with splits, as a user
runs it (the installed command, from a folder of theirs) and loads it: every split holds every
label the data allow, the same class folders in the same order (``classes.txt``) for torchvision,
and ``by_split`` loads in Hugging Face with its metadata, label for label the same.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.json as paj
import pytest
from PIL import Image, ImageOps

from dataset_spiders.dataset.loaders import ClassIndex, metadata_jsonl, split_metadata, unread_splits
from tests.conftest import ROOT, clean_env, crawl, run_scrapy, user_run
from tests.emulators import FakeImage, FakeSegmentation, ImageHost, IsicV1Server, IsicV2Server, make_archive
from tests.emulators.imagenet import GeturlsServer, PhotoHosts, make_classes
from tests.test_imagenet_crawl import imagenet
from tests.test_isic_catalog import split_archive

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


#: What a user's script does with a dataset in split folders: ``load_dataset("imagefolder",
#: data_dir=...)`` gives one split per folder; ``label`` (from the metadata) is cast to a
#: ClassLabel named by ``classes.txt``. Prints, per split, the features and every row.
SPLIT_LOADER = r"""
import json, os, sys
import datasets

out = {}
for data_dir in sys.argv[1:]:
    found = datasets.load_dataset("imagefolder", data_dir=data_dir)
    index = os.path.join(data_dir, "classes.txt")
    names = [line.split("\t")[1] for line in open(index).read().splitlines()] if os.path.exists(index) else None
    indexed = found.cast_column("label", datasets.ClassLabel(names=names)) if names else found
    out[data_dir] = {}
    for split, ds in found.items():
        paths = ds.cast_column("image", datasets.Image(decode=False))
        rows = []
        for raw, index in zip(paths, indexed[split]["label"]):
            row = {k: v for k, v in raw.items() if k != "image"}
            row.update(path=raw["image"]["path"], index=index)
            rows.append(row)
        out[data_dir][split] = {"features": {k: getattr(v, "dtype", type(v).__name__) for k, v in ds.features.items()},
                                "rows": rows}
print("RESULT " + json.dumps(out))
"""


def load_with_datasets(tmp: Path, *folders: Path, script: str = LOADER, python: str = sys.executable,
                       cwd: Path = ROOT) -> list[dict]:
    """The real ``datasets.load_dataset("imagefolder", data_dir=...)`` of each folder, offline."""
    env = clean_env({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp / "hf"),
                     "HF_HUB_DISABLE_TELEMETRY": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"})
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([python, "-c", script, *map(str, folders)], cwd=cwd, env=env,
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


TORCHVISION_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def image_folder(root: Path, allow_empty: bool = False) -> tuple[list[str], list[tuple[str, int]]]:
    """torchvision's ``ImageFolder(root, allow_empty=...)``: its classes and its samples (path,
    class index), as ``datasets/folder.py`` makes them (``find_classes``, then ``make_dataset``):
    every folder in root is a class, sorted; a class folder with no image raises unless
    ``allow_empty``."""
    classes = torchvision_classes(root)
    if not classes:
        raise FileNotFoundError(f"Couldn't find any class folder in {root}.")
    class_to_idx = {name: i for i, name in enumerate(classes)}
    samples, available = [], set()
    for target in sorted(class_to_idx):
        for folder, _, names in sorted(os.walk(root / target, followlinks=True)):
            for name in sorted(names):
                if name.lower().endswith(TORCHVISION_EXTENSIONS):
                    samples.append((os.path.join(folder, name), class_to_idx[target]))
                    available.add(target)
    empty = set(class_to_idx) - available
    if empty and not allow_empty:
        raise FileNotFoundError(f"Found no valid file for the classes {', '.join(sorted(empty))}. ")
    return classes, samples


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
    return run_scrapy([sys.executable, "-m", "scrapy", "verify", *flags, str(out)], timeout=60)


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


def test_split_metadata_files_share_one_schema():
    """Hugging Face's imagefolder refuses splits whose metadata files differ in features."""
    rows = {"train": [{"file_name": "a.jpg", "label": "benign", "x": 1, "only_train": "t", "never": None},
                      {"file_name": "b.jpg", "label": None, "x": 2}],
            "val": [{"file_name": "c.jpg", "label": "malignant", "x": 2.5, "never": None}]}
    files, dropped = split_metadata(rows)
    assert dropped == ["only_train"]  # a value in one split, none in the other: in no file
    schemas = {split: paj.read_json(io.BytesIO(data)).schema for split, data in files.items()}
    assert schemas["train"] == schemas["val"]
    assert [(f.name, str(f.type)) for f in schemas["val"]] == [
        ("file_name", "string"), ("label", "string"), ("never", "null"), ("x", "double")]  # ints with a float: floats

def test_split_folders_imagefolder_would_leave_out_are_named():
    """datasets 5.2 with data_dir: folders named for its splits are its splits, the others are
    not read; with none so named, every folder is read as one split (tried by hand on copies of a
    by_split tree: train+holdout gave train alone; alpha, beta, gamma one train split of all)."""
    assert unread_splits(["train", "val", "test"]) == [] == unread_splits(["alpha", "beta", "gamma"])
    assert unread_splits(["train", "holdout", "x-test", "dev2", "devil"]) == ["holdout", "devil"]
# --- ISIC splits, as a user runs them and loads them ----------------------------------------

SPLITS = "train:60,val:20,test:20"
SPLIT_DIRS = {"train": "train", "val": "validation", "test": "test"}  # folder -> Hugging Face's split
LABELLED = ["benign", "indeterminate", "malignant"]


@pytest.fixture(scope="module")
def user_splits(installed, tmp_path_factory) -> dict:
    """The installed command run by a user from a folder of theirs, with splits, in each layout
    (``--out-dir`` BySplit, ByLabel, Flat); the three loaded with Hugging Face's imagefolder, by
    the installed environment's Python, from that folder."""
    where = tmp_path_factory.mktemp("user")
    records = split_archive()
    result: dict = {"where": where, "records": {r.isic_id: r for r in records}}
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        for layout, folder in (("by_split", "BySplit"), ("by_label", "ByLabel"), ("flat", "Flat")):
            run = user_run(installed, "isic", "--all", "--api-url", f"{api.url}/api/v2", "--splits", SPLITS,
                           "--layout", layout, "--out-dir", folder, cwd=where)
            assert run.returncode == 0, run.stderr[-3000:]
            result[layout] = run
    result["verify"] = user_run(installed, "verify", "BySplit", cwd=where)
    shutil.copytree(where / "BySplit", where / "Fixed")  # a folder that travels: verify --fix on the copy
    damaged = where / "Fixed" / "Images" / "train" / "unlabeled" / "ISIC_0000025.jpg"
    damaged.write_bytes(damaged.read_bytes()[:50])
    result["fix"] = user_run(installed, "verify", "--fix", "Fixed", cwd=where)
    python = str(installed.parent / "python")
    result["hf"] = load_with_datasets(where, *(where / f / "Images" for f in ("BySplit", "ByLabel")),
                                      script=SPLIT_LOADER, python=python, cwd=where)
    result["hf_flat"] = load_with_datasets(where, where / "Flat" / "Images", python=python, cwd=where)[0]
    return result


def group_of(record: FakeImage) -> str:
    return record.patient_id or record.lesion_id or record.isic_id


def test_every_split_holds_every_label_and_the_same_class_folders_in_classes_txt_order(user_splits):
    images = user_splits["where"] / "BySplit" / "Images"
    records = user_splits["records"]
    assert read_tsv(images / "classes.txt") == [["0", "benign"], ["1", "indeterminate"], ["2", "malignant"],
                                                ["3", "unlabeled"]]
    classes = [folder for _, folder in read_tsv(images / "classes.txt")]
    split_of: dict[str, str] = {}
    for split in SPLIT_DIRS:
        found, samples = image_folder(images / split, allow_empty=True)
        assert found == classes  # the same classes, in the same order, in every split
        held = {classes[index] for _, index in samples}
        assert set(LABELLED) <= held, f"{split} lacks a label the data allow it"  # stratified
        for path, index in samples:
            assert Path(path).parent.name == classes[index]
            record = records[Path(path).stem]
            assert classes[index] == (record.diagnosis_1 or "unlabeled").lower()
            split_of[record.isic_id] = split
    assert len(split_of) == len(records)
    by_group: dict[str, set[str]] = {}
    for isic_id, split in split_of.items():
        by_group.setdefault(group_of(records[isic_id]), set()).add(split)
    assert all(len(splits) == 1 for splits in by_group.values()), "a patient or lesion crosses splits"
    assert split_of["ISIC_0000016"] == split_of["ISIC_0000017"]  # one patient, benign then malignant: one split
    # the one unlabeled image is in one split (train, under seed 0): the others keep its folder, empty
    assert [s for s in SPLIT_DIRS if list((images / s / "unlabeled").iterdir())] == ["train"]
    assert image_folder(images / "train")[0] == classes  # torchvision's defaults load a split with every class
    for split in ("val", "test"):
        with pytest.raises(FileNotFoundError, match="unlabeled"):  # and refuse, loudly, one with an empty class
            image_folder(images / split)
        note = (f"Note: split {split} holds no unlabeled image: {split}/unlabeled/ is left empty, so that every split "
                "has the same classes in the same order (classes.txt); torchvision's ImageFolder needs "
                f"allow_empty=True for {split}")
        assert note in user_splits["by_split"].stderr.splitlines()
    assert not (images / "metadata.jsonl").exists()  # a metadata file per split folder instead


def test_split_folders_load_in_hugging_face_with_their_metadata_and_torchvisions_indices(user_splits):
    images = user_splits["where"] / "BySplit" / "Images"
    loaded = user_splits["hf"][str(images)]
    assert sorted(loaded) == sorted(SPLIT_DIRS.values())
    classes = [folder for _, folder in read_tsv(images / "classes.txt")]
    for folder, split in SPLIT_DIRS.items():
        features, rows = loaded[split]["features"], loaded[split]["rows"]
        for column, dtype in {"label": "string", "split": "string", "isic_id": "string", "age_approx": "int64",
                              "anatom_site_general": "string", "patient_id": "string", "lesion_id": "string",
                              "diagnosis_1": "string", "attribution": "string"}.items():
            assert features[column] == dtype, (split, column, features)
        assert "mel_mitotic_index" not in features  # a value in one split only: no schema all splits share
        files = {os.path.realpath(p) for p in image_files(images / folder)}
        assert {os.path.realpath(row["path"]) for row in rows} == files  # every image of the split, once
        _, samples = image_folder(images / folder, allow_empty=True)
        torchvision = {os.path.realpath(path): index for path, index in samples}
        for row in rows:
            path = Path(row["path"])
            assert row["split"] == folder and row["isic_id"] == path.stem
            assert row["label"] == (None if path.parent.name == "unlabeled" else path.parent.name)
            if row["label"] is not None:  # cast by classes.txt: torchvision's index, in every split
                assert row["index"] == torchvision[os.path.realpath(path)] == classes.index(row["label"])
    assert "mel_mitotic_index" in (user_splits["where"] / "BySplit" / "metadata.csv").read_text().splitlines()[0]
    assert ("Note: the splits' metadata.jsonl leave out 1 column(s) that have a value in some split but none in "
            "another (mel_mitotic_index): Hugging Face's imagefolder loads splits of one schema only; metadata.csv "
            "has them") in user_splits["by_split"].stderr.splitlines()


def test_label_folders_and_flat_load_with_both_loaders(user_splits):
    where = user_splits["where"]
    images = where / "ByLabel" / "Images"
    classes = [folder for _, folder in read_tsv(images / "classes.txt")]
    found, samples = image_folder(images)  # torchvision's defaults: no empty folder in one tree
    assert found == classes == [*LABELLED, "unlabeled"]
    assert len(samples) == len(user_splits["records"])
    rows = user_splits["hf"][str(images)]["train"]["rows"]  # one tree: one split, the split a column
    assert {row["isic_id"]: row["split"] for row in rows} == {
        Path(line["file_name"]).stem: line["split"] for line in metadata_lines(where / "BySplit" / "Images" / "train")
    } | {Path(line["file_name"]).stem: line["split"] for folder in ("val", "test")
         for line in metadata_lines(where / "BySplit" / "Images" / folder)}  # the same splits in every layout
    for row in rows:
        assert row["index"] == (None if row["label"] is None else classes.index(row["label"]))
        assert Path(row["path"]).parent.name == (row["label"] or "unlabeled")
    flat = user_splits["hf_flat"]
    assert len(flat["rows"]) == len(user_splits["records"]) and flat["names"] is None
    assert {row["isic_id"]: row["split"] for row in flat["rows"]} == {row["isic_id"]: row["split"] for row in rows}
    assert not (where / "Flat" / "Images" / "classes.txt").exists()  # no class folders: nothing to index
    for layout in ("by_label", "flat"):  # the split column lacks a label: said so
        assert "Note: split val holds no unlabeled image" in user_splits[layout].stderr.splitlines()


def test_verify_takes_the_split_files_for_ours_and_fix_keeps_every_split_alike(user_splits):
    assert user_splits["verify"].returncode == 0, user_splits["verify"].stdout  # split metadata, empty folders
    assert "fixed: 1 moved aside" in user_splits["fix"].stdout, user_splits["fix"].stdout + user_splits["fix"].stderr
    images = user_splits["where"] / "Fixed" / "Images"  # its one unlabeled image damaged, then set aside
    assert read_tsv(images / "classes.txt") == [["0", "benign"], ["1", "indeterminate"], ["2", "malignant"]]
    for split in SPLIT_DIRS:
        assert image_folder(images / split)[0] == LABELLED  # no label folder left that no split holds
        names = {line["isic_id"] for line in metadata_lines(images / split)}
        assert names == {p.stem for p in image_files(images / split)}
    assert "ISIC_0000025" not in {line["isic_id"] for line in metadata_lines(images / "train")}
