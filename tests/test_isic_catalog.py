"""isic: ``metadata.csv`` and ``attribution.txt`` byte for byte as isic-cli writes them, labels
from ``benign_malignant`` on records from before its removal, and leak-free splits."""

from __future__ import annotations

import csv
import io
import json
import urllib.request
from collections import Counter, defaultdict

from isic_cli.cli.utils import _extract_metadata, get_attributions

from dataset_spiders.dataset.isic_files import build_catalog, recorded_split
from dataset_spiders.dataset.manifest import ManifestWriter, Record
from dataset_spiders.sources import splits
from dataset_spiders.sources.isic import record_from_description
from tests.conftest import crawl
from tests.emulators import FakeImage, ImageHost, IsicV2Server, images, make_archive


def api_args(api):
    return f"api_url={api.url}/api/v2"


def listed(api) -> list[dict]:
    """The records as the API lists them (what isic-cli iterates), first page."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{api.url}/api/v2/images/search/?limit=100", timeout=10) as response:
        return json.load(response)["results"]


def isic_cli_files(records: list[dict], folder) -> tuple[bytes, bytes]:
    """What ``isic image download`` writes (isic_cli/cli/image.py), with isic-cli's own functions."""
    folder.mkdir(parents=True, exist_ok=True)
    headers, rows = _extract_metadata(records)
    with (folder / "metadata.csv").open("w", newline="", encoding="utf8") as outfile:
        writer = csv.DictWriter(outfile, headers)
        writer.writeheader()
        writer.writerows(rows)
    with (folder / "attribution.txt").open("w", encoding="utf8") as outfile:
        outfile.write("\n\n".join(get_attributions(rows)))
    return (folder / "metadata.csv").read_bytes(), (folder / "attribution.txt").read_bytes()


def varied_archive() -> list[FakeImage]:
    """12 records in an archive order that is not their id order, with attributions of several
    counts (Anonymous the most), fields only some records have, text that needs quoting."""
    ids = [7, 3, 11, 0, 9, 5, 1, 10, 2, 8, 6, 4]
    attributions = ["Anonymous", "Hospital A", "Clínica B", "Anonymous", "Hospital A", "Clínica B",
                    "Anonymous", "Clínica B", "Zeta Derm", "Hospital A", "Clínica B", "Anonymous"]
    records = []
    for n, (i, attribution) in enumerate(zip(ids, attributions, strict=True)):
        record = FakeImage(f"ISIC_{i:07d}", diagnosis_1=["Benign", "Malignant", None][n % 3],
                           body=images.jpeg(40, 30, seed=100 + i), attribution=attribution,
                           license=["CC-BY", "CC-0", "CC-BY-NC"][n % 3])
        record.extra_clinical = {"age_approx": 30 + 5 * n, "sex": ["male", "female"][n % 2],
                                 "melanocytic": n % 2 == 0}
        if n % 4 == 1:
            record.extra_clinical["clin_size_long_diam_mm"] = 2.5 + n
        if n == 2:
            record.extra_clinical["anatom_site_special"] = 'posterior "torso", left\nside'
        if n == 6:
            record.extra_acquisition = {"dermoscopic_type": "contact polarized"}
        records.append(record)
    return records


def test_metadata_csv_and_attribution_txt_are_isic_clis_bytes_in_archive_order_across_offset_runs(tmp_path):
    records = varied_archive()
    out = tmp_path / "Data"
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        # the later records first: rows follow the archive's order, not the order runs kept them
        later = crawl("isic", out, api_args(api), "offset=5", "num_images=5")
        assert later.code == 0, later.stderr
        earlier = crawl("isic", out, api_args(api), "offset=0", "num_images=5")
        assert earlier.code == 0, earlier.stderr
        served = listed(api)
        assert not api.errors and not host.errors
    assert len(earlier.files("Images")) == 10
    metadata, attribution = isic_cli_files(served[:10], tmp_path / "isic-cli")
    assert (out / "metadata.csv").read_bytes() == metadata
    assert (out / "attribution.txt").read_bytes() == attribution
    # what the comparison covers: CRLF rows, archive order (not ids sorted), quoting, tie-breaks
    lines = metadata.split(b"\r\n")
    assert len(lines) > 11 and b'"posterior ""torso"", left\nside"' in metadata
    ids = [row["isic_id"] for row in csv.DictReader(io.StringIO(metadata.decode("utf-8"), newline=""))]
    assert ids == [r.isic_id for r in records[:10]] and ids != sorted(ids)
    assert attribution.decode("utf-8").split("\n\n") == ["Clínica B", "Hospital A", "Zeta Derm", "Anonymous"]
    positions = {line["id"]: line["position"] for line in earlier.manifest()}
    assert positions == {r.isic_id: n for n, r in enumerate(records[:10])}


def _description(isic_id: str, attribution: str, **clinical) -> dict:
    return {"isic_id": isic_id, "attribution": attribution, "copyright_license": "CC-BY",
            "files": {"full": {"url": f"https://x/{isic_id}.jpg", "size": 1}},
            "metadata": {"acquisition": {"pixels_x": 1, "pixels_y": 1}, "clinical": clinical}}


def test_rows_without_a_position_come_after_by_id(tmp_path):
    descs = tmp_path / "Descriptions"
    descs.mkdir()
    writer = ManifestWriter(str(tmp_path / "manifest.jsonl"))
    for isic_id, position in [("ISIC_0000009", None), ("ISIC_0000005", 1), ("ISIC_0000001", None),
                              ("ISIC_0000007", 0), ("ISIC_0000003", None)]:
        writer.write(Record(isic_id, "kept", path=f"Images/{isic_id}.jpg", position=position))
        (descs / f"{isic_id}.json").write_text(json.dumps(_description(isic_id, "A", sex="male")))
    writer.close()
    text, attribution, count = build_catalog(str(tmp_path / "manifest.jsonl"), str(descs))
    ids = [row["isic_id"] for row in csv.DictReader(io.StringIO(text, newline=""))]
    assert ids == ["ISIC_0000007", "ISIC_0000005", "ISIC_0000001", "ISIC_0000003", "ISIC_0000009"]
    assert (attribution, count) == ("A", 5)


# --- records from before benign_malignant was removed ----------------------------------------


def test_old_records_with_benign_malignant_only_are_labelled_from_it(out):
    records = make_archive(5, diagnoses=[None, None, None, "Benign", None])
    old = ["malignant", "indeterminate/benign", "benign", "malignant", None]
    for record, value in zip(records, old, strict=True):
        if value is not None:
            record.extra_clinical = {"benign_malignant": value}
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        run = crawl("isic", out, api_args(api), "layout=by_label")
    assert run.code == 0, run.stderr
    assert sorted(run.files("Images")) == [
        "benign/ISIC_0000002.jpg", "benign/ISIC_0000003.jpg",  # diagnosis_1 Benign wins over benign_malignant
        "indeterminate/ISIC_0000001.jpg", "malignant/ISIC_0000000.jpg", "unlabeled/ISIC_0000004.jpg",
    ]  # fmt: skip
    labels = {row["isic_id"]: row["label"] for row in map(json.loads, (out / "Images" / "metadata.jsonl").open())}
    assert labels == {"ISIC_0000000": "malignant", "ISIC_0000001": "indeterminate", "ISIC_0000002": "benign",
                      "ISIC_0000003": "benign", "ISIC_0000004": None}


def test_a_saved_old_description_reads_back_with_its_label():
    cached = _description("ISIC_0000001", "A", benign_malignant="indeterminate/malignant", diagnosis="melanoma")
    assert record_from_description(cached).label == "indeterminate"
    assert record_from_description(_description("ISIC_0000002", "A", benign_malignant="Benign")).label == "benign"
    assert record_from_description(_description("ISIC_0000003", "A", sex="male")).label is None


# --- splits --------------------------------------------------------------------------------------


def grouped_archive(n: int) -> list[FakeImage]:
    """Several images per lesion, several lesions per patient; the last images name a lesion
    but no patient, or neither."""
    records = make_archive(n, images_per_lesion=3, lesions_per_patient=2)
    for record in records[-8:-3]:
        record.patient_id = None
    for record in records[-3:]:
        record.patient_id = record.lesion_id = None
    return records


def split_archive() -> list[FakeImage]:
    """26 images in groups: 8 benign patients of 2 images, a patient with a benign then a
    malignant image, 4 malignant patients, 3 indeterminate lesions of no known patient, and an
    image with neither a label nor a group. Under the default seed (0), the plain hash of the
    groups gives val no malignant and no indeterminate image (checked below). One malignant
    record alone has ``mel_mitotic_index`` (tests/test_loading.py: a column in one split only)."""
    groups = [("Benign", f"IP_{p:07d}", None) for p in range(8) for _ in range(2)]
    groups += [("Benign", "IP_0000100", None), ("Malignant", "IP_0000100", None)]
    groups += [("Malignant", f"IP_{p:07d}", None) for p in range(10, 14)]
    groups += [("Indeterminate", None, f"IL_{i:07d}") for i in range(3)]
    groups += [(None, None, None)]
    records = []
    for n, (diagnosis, patient, lesion) in enumerate(groups):
        record = FakeImage(f"ISIC_{n:07d}", diagnosis_1=diagnosis, patient_id=patient, lesion_id=lesion)
        record.extra_clinical = {"age_approx": 20 + 2 * n, "anatom_site_general": ["head/neck", "palms/soles"][n % 2]}
        records.append(record)
    records[21].extra_clinical["mel_mitotic_index"] = "1/mm^2"  # in one split only
    return records


def group_of(record: FakeImage) -> str:
    return record.patient_id or record.lesion_id or record.isic_id


def split_folders(run) -> dict[str, str]:
    """id -> split, from the files of a by_split tree ({split}/{label}/{id}.jpg)."""
    found = {}
    for name in run.files("Images"):
        split, label, file = name.split("/")
        assert label in ("benign", "malignant") and file[:-4] not in found, name
        found[file[:-4]] = split
    return found


def split_columns(folder) -> tuple[dict[str, str], dict[str, str]]:
    """id -> split, from metadata.csv (whose last column it is) and from the metadata.jsonl files
    for Hugging Face (Images/metadata.jsonl, or with by_split Images/{split}/metadata.jsonl)."""
    with open(folder / "metadata.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames[-1] == "split"
        from_csv = {row["isic_id"]: row["split"] for row in reader}
    from_jsonl = {}
    for path in sorted((folder / "Images").glob("**/metadata.jsonl")):
        with open(path) as f:
            from_jsonl.update((row["isic_id"], row["split"]) for row in map(json.loads, f))
    return from_csv, from_jsonl


def assert_whole_groups(assigned: dict[str, str], by_id: dict[str, FakeImage]) -> None:
    groups = defaultdict(set)
    for isic_id, split in assigned.items():
        groups[group_of(by_id[isic_id])].add(split)
    assert all(len(s) == 1 for s in groups.values()), "a patient or lesion crosses splits"


def test_splits_keep_patients_and_lesions_whole_and_are_stable_and_reproducible(tmp_path):
    records = grouped_archive(36)
    by_id = {r.isic_id: r for r in records}
    assert max(Counter(map(group_of, records)).values()) == 6  # a patient: 2 lesions of 3 images
    weights = "splits=train:60,val:20,test:20"
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        first = crawl("isic", tmp_path / "a", api_args(api), weights, "seed=7", "layout=by_split", "num_images=20")
        assert first.code == 0, first.stderr
        before = split_folders(first)
        grown = crawl("isic", tmp_path / "a", api_args(api), weights, "seed=7", "layout=by_split")  # the rest
        assert grown.code == 0, grown.stderr
        after, in_a, grown_lines = split_folders(grown), split_columns(tmp_path / "a"), grown.manifest()
        flat = crawl("isic", tmp_path / "b", api_args(api), weights, "seed=7")  # another folder, flat
        assert flat.code == 0, flat.stderr
        refused = crawl("isic", tmp_path / "a", api_args(api), weights, "seed=8", "layout=by_split")
        reseeded = crawl("isic", tmp_path / "a", api_args(api), weights, "seed=8", "layout=by_split", "reselect=true")
        assert reseeded.code == 0, reseeded.stderr
    assert refused.code == 1 and "seed is 7 there, 8 now" in refused.stderr  # another seed: another dataset
    assert len(before) == 20 and len(after) == 36
    assert {i: after[i] for i in before} == before, "a re-run that added images moved some"
    assert "moved from" not in json.dumps(grown_lines)
    assert_whole_groups(after, by_id)
    assert set(after.values()) == {"train", "val", "test"}
    assert in_a == (after, after)
    assert split_columns(tmp_path / "b") == (after, after), "the same seed gave another assignment"
    moved = split_folders(reseeded)  # each image once, in its new split's folder
    assert len(moved) == 36 and moved != after
    aside = [line for line in reseeded.manifest()[len(grown_lines):] if line["outcome"] == "set_aside"]
    assert len(aside) == 36  # the earlier assignment, set aside to .quarantine, never mixed in
    assert_whole_groups(moved, by_id)
    assert split_columns(tmp_path / "a") == (moved, moved)


def test_a_groups_split_depends_on_the_seed_and_its_key_alone():
    scheme = splits.scheme([["train", 80], ["val", 10], ["test", 10]], 3)
    assert scheme is not None
    assert splits.group_key("ISIC_0000001", {"patient_id": "IP_0000001", "lesion_id": "IL_0000009"}) == (
        "patient:IP_0000001")
    assert splits.group_key("ISIC_0000001", {"patient_id": None, "lesion_id": "IL_0000009"}) == "lesion:IL_0000009"
    assert splits.group_key("ISIC_0000001", {"lesion_id": " "}) == "image:ISIC_0000001"
    same = [scheme.split_of(f"ISIC_{i:07d}", {"lesion_id": "IL_0000042"}) for i in range(20)]
    assert len(set(same)) == 1
    shares = Counter(scheme.split_of(f"ISIC_{i:07d}", {}) for i in range(20_000))
    assert abs(shares["train"] / 20_000 - 0.8) < 0.015 and abs(shares["test"] / 20_000 - 0.1) < 0.015
    assert splits.pick((("a", 1), ("b", 3)), 0) == "a"
    assert splits.pick((("a", 1), ("b", 3)), (1 << 62) - 1) == "a"
    assert splits.pick((("a", 1), ("b", 3)), 1 << 62) == "b"
    assert splits.pick((("a", 1), ("b", 3)), (1 << 64) - 1) == "b"
    assert splits.scheme([["train", 80]], 0) is None and splits.scheme([["a", 1], ["a", 2]], 0) is None


def _label(record: FakeImage) -> str | None:
    return record.diagnosis_1.lower() if record.diagnosis_1 else None


def test_the_ledger_gives_each_split_every_label_its_groups_allow_and_never_moves_a_group():
    """The archive of the loading tests, under the default seed: the plain rule alone gives val
    no malignant and no indeterminate image; the ledger gives every split each label that has a
    group for it, whole groups still, and a group once placed stays where it is."""
    records = split_archive()
    scheme = splits.scheme([["train", 60], ["val", 20], ["test", 20]], 0)
    assert scheme is not None
    plain = defaultdict(set)
    for record in records:
        plain[scheme.split_of(record.isic_id, record.clinical())].add(_label(record))
    assert not {"malignant", "indeterminate"} & plain["val"]
    ledger = splits.Ledger(scheme)
    given = {r.isic_id: ledger.split_of(r.isic_id, r.clinical(), _label(r)) for r in records}
    held = defaultdict(set)
    for record in records:
        held[given[record.isic_id]].add(_label(record))
    assert all({"benign", "malignant", "indeterminate"} <= held[name] for name in scheme.names())
    assert_whole_groups(given, {r.isic_id: r for r in records})
    assert given["ISIC_0000016"] == given["ISIC_0000017"]  # benign then malignant, one patient: one split
    assert given["ISIC_0000017"] in ledger.holds["malignant"]  # which holds both labels from then on
    newcomer = {"patient_id": "IP_0009999"}  # every split holds benign: the plain rule
    assert ledger.split_of("ISIC_0009999", newcomer, "benign") == scheme.split_of("ISIC_0009999", newcomer)
    # a later run starts from the groups the dataset holds: none moves, whatever comes first now
    later = splits.Ledger(scheme)
    for record in records[::2]:
        later.known(splits.group_key(record.isic_id, record.clinical()), given[record.isic_id], _label(record))
    again = {r.isic_id: later.split_of(r.isic_id, r.clinical(), _label(r)) for r in reversed(records)}
    assert all(again[r.isic_id] == given[r.isic_id] for r in records[::2])
    assert_whole_groups(again, {r.isic_id: r for r in records})
    # workers meet new groups apart: the plain rule, which needs no one else's
    apart = splits.Ledger(scheme, stratify=False)
    assert all(apart.split_of(r.isic_id, r.clinical(), _label(r)) == scheme.split_of(r.isic_id, r.clinical())
               for r in records)


def test_a_line_without_its_split_has_the_plain_rules():
    scheme = splits.scheme([["train", 80], ["val", 10], ["test", 10]], 3)
    assert scheme is not None
    clinical = {"lesion_id": "IL_0000042"}
    assert recorded_split(Record("ISIC_0000001", "kept", split="test"), clinical, scheme) == "test"
    assert recorded_split(Record("ISIC_0000001", "kept"), clinical, scheme) == scheme.split_of("ISIC_0000001", clinical)
    other = Record("ISIC_0000001", "kept", split="holdout")  # no split of this scheme: as if unsaid
    assert recorded_split(other, clinical, scheme) == scheme.split_of("ISIC_0000001", clinical)
