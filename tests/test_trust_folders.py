"""A dataset folder that travels and is never mixed (issue 18, points 1 to 3), as a user meets it:
the installed ``dataset-spiders`` command, run from folders outside the checkout.

- A copy (``cp -a``) is a dataset of its own: every command works on the copy and never reads or
  writes the original; ``verify --fix`` fixes unlisted images (it holds the lock itself).
- One dataset per folder: the two spiders' defaults are two folders; a run whose selection
  differs from the folder's stops with one line, changing nothing, unless ``--reselect``, which
  sets the earlier images aside (recorded) and leaves exactly the new selection described.
- ``dataset.json`` is data, not an instruction: ``verify --fix`` and ``report`` never read, move
  or embed anything outside the folder they were given unless their own command line names it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import user_run
from tests.emulators import ImageHost, IsicV2Server, make_archive
from tests.emulators.images import jpeg


@pytest.fixture(scope="module")
def archive():
    return make_archive(12)


@pytest.fixture(scope="module")
def isic(archive):
    with ImageHost(archive) as host, IsicV2Server(archive, host) as api:
        yield f"{api.url}/api/v2"


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (links as their target), by relative path: its sha256; not the
    ``.lock`` note (who holds the dataset: it says nothing of the data)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.name == ".lock":
            continue
        if path.is_symlink():
            out[str(path.relative_to(root))] = "-> " + os.readlink(path)
        elif path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def manifest(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]


def test_a_copied_dataset_is_a_dataset_of_its_own(installed, isic, tmp_path):
    a = tmp_path / "A"
    a.mkdir()
    run = user_run(installed, "isic", "--num-images", "6", "--api-url", isic, cwd=a)
    assert run.returncode == 0, run.stderr
    subprocess.run(["cp", "-a", str(a), str(tmp_path / "B")], check=True)
    b = tmp_path / "B"
    original = tree(a)
    checked = user_run(installed, "verify", "ISIC", cwd=b)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip().endswith("checked 6 image(s) in 1 folder(s): all good")
    # a damaged image and a stray one in the copy: --fix deals with the copy's, never the original's
    victim = next((b / "ISIC" / "Images").glob("*.jpg"))
    victim.write_bytes(victim.read_bytes()[:100])
    (b / "ISIC" / "Images" / "ISIC_9999999.jpg").write_bytes(jpeg(40, 30, seed=99))  # valid, not listed
    fixed = user_run(installed, "verify", "--fix", "ISIC", cwd=b)
    assert fixed.returncode == 1, fixed.stdout + fixed.stderr
    assert "unlisted: " in fixed.stdout and "changed: " in fixed.stdout
    assert "a crawl is running" not in fixed.stdout and "pending" not in fixed.stdout
    assert "fixed: 2 moved aside" in fixed.stdout
    assert (b / "ISIC" / ".quarantine" / "Images" / "ISIC_9999999.jpg").exists()
    assert (b / "ISIC" / ".quarantine" / "Images" / victim.name).exists()
    assert user_run(installed, "verify", "ISIC", cwd=b).returncode == 0
    report = user_run(installed, "report", "ISIC", cwd=b)
    assert report.returncode == 0 and report.stdout.strip() == str(b / "ISIC" / "report.html")
    again = user_run(installed, "isic", "--num-images", "6", "--api-url", isic, cwd=b)
    assert again.returncode == 0, again.stderr
    assert len(list((b / "ISIC" / "Images").glob("*.jpg"))) == 6
    assert tree(a) == original  # the original was never read for writing, moved or rewritten


def test_a_copy_of_a_dataset_recorded_with_absolute_folders_resolves_to_the_copy(installed, isic, tmp_path):
    """Datasets written before folders were recorded relative to out_dir: the same holds."""
    a = tmp_path / "A"
    a.mkdir()
    assert user_run(installed, "isic", "--num-images", "4", "--api-url", isic, cwd=a).returncode == 0
    record = json.loads((a / "ISIC" / "dataset.json").read_text())
    for run in record["runs"]:  # as an earlier version wrote them
        run["folders"] = {k: str(a / "ISIC") if v == "." else str(a / "ISIC" / v) for k, v in run["folders"].items()}
    (a / "ISIC" / "dataset.json").write_text(json.dumps(record))
    shutil.copytree(a, tmp_path / "B", symlinks=True)
    original = tree(a)
    first = next((tmp_path / "B" / "ISIC" / "Images").glob("*.jpg"))
    first.unlink()
    fixed = user_run(installed, "verify", "--fix", str(tmp_path / "B" / "ISIC"), cwd=tmp_path)
    assert fixed.returncode == 1 and "missing: " in fixed.stdout and "unlisted" not in fixed.stdout
    assert str(a) not in fixed.stdout
    assert tree(a) == original  # A's metadata.jsonl and images untouched
    rows = (tmp_path / "B" / "ISIC" / "Images" / "metadata.jsonl").read_text().splitlines()
    assert len(rows) == 3 and first.name not in "".join(rows)  # the copy's, rewritten without the lost image


def test_the_two_spiders_defaults_make_two_datasets_and_a_new_selection_is_never_mixed_in(
        installed, isic, archive, tmp_path):
    from tests.emulators.imagenet import GeturlsServer, PhotoHosts, make_classes

    where = tmp_path / "work"
    where.mkdir()
    first = user_run(installed, "isic", "--num-images", "4", "--filter", "benign", "--api-url", isic, cwd=where)
    assert first.returncode == 0, first.stderr
    classes = make_classes(2, 4, seed=8, failure_rate=0.0)
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        net = user_run(installed, "imagenet", "--wnids", ",".join(classes), "--per-class", "2", "--api-url",
                       api.geturls_url("x").split("?")[0], cwd=where, env=hosts.proxy_env())
        assert net.returncode == 0, net.stderr
        into_isic = user_run(installed, "imagenet", "--wnids", ",".join(classes), "--per-class", "2", "--out-dir",
                             "ISIC", "--api-url", api.geturls_url("x").split("?")[0], cwd=where,
                             env=hosts.proxy_env())
    assert sorted(p.name for p in where.iterdir()) == ["ISIC", "ImageNet"]
    assert len(list((where / "ISIC" / "Images").glob("*.jpg"))) == 4
    assert all(len(list((where / "ImageNet" / "Images" / w).iterdir())) == 2 for w in classes)
    for name in ("ISIC", "ImageNet"):
        assert user_run(installed, "verify", name, cwd=where).returncode == 0
    assert into_isic.returncode == 1
    assert last_line(into_isic.stderr).startswith(f"error: {where / 'ISIC'} holds another dataset (it holds an "
                                                  "isic dataset and this is an imagenet run)")
    before = tree(where / "ISIC")
    other = user_run(installed, "isic", "--num-images", "3", "--filter", "malignant", "--api-url", isic, cwd=where)
    assert other.returncode == 1 and "Traceback" not in other.stderr
    line = last_line(other.stderr)
    assert "filter is benign there, malignant now" in line and "--out-dir" in line and "--reselect" in line
    assert tree(where / "ISIC") == before  # nothing changed, nothing downloaded
    more = user_run(installed, "isic", "--num-images", "5", "--filter", "benign", "--api-url", isic, cwd=where)
    assert more.returncode == 0, more.stderr  # a count is no selection: the same dataset, one more image
    assert len(list((where / "ISIC" / "Images").glob("*.jpg"))) == 5
    switched = user_run(installed, "isic", "--num-images", "3", "--filter", "malignant", "--reselect",
                        "--api-url", isic, cwd=where)
    assert switched.returncode == 0, switched.stderr
    malignant = {r.isic_id for r in archive if r.diagnosis_1 == "Malignant"}
    kept = {p.stem for p in (where / "ISIC" / "Images").glob("*.jpg")}
    assert len(kept) == 3 and kept <= malignant
    aside = {p.stem for p in (where / "ISIC" / ".quarantine" / "Images").glob("*.jpg")}
    assert len(aside) == 5 and not aside & malignant
    assert {p.stem for p in (where / "ISIC" / ".quarantine" / "Descriptions").glob("*.json")} == aside
    rows = [json.loads(line) for line in (where / "ISIC" / "Images" / "metadata.jsonl").read_text().splitlines()]
    assert sorted(row["isic_id"] for row in rows) == sorted(kept) and {row["label"] for row in rows} == {"malignant"}
    csv_ids = [line.split(",")[0] for line in (where / "ISIC" / "metadata.csv").read_text().splitlines()[1:]]
    assert sorted(csv_ids) == sorted(kept)
    last = {line["id"]: line for line in manifest(where / "ISIC")}
    assert sum(line["outcome"] == "set_aside" for line in last.values()) == 5
    assert user_run(installed, "verify", "ISIC", cwd=where).returncode == 0
    numbers = json.loads(subprocess.run(
        [str(installed.parent / "python"), "-c",
         "import json, sys; from dataset_spiders.report import summarize; print(json.dumps(summarize(sys.argv[1])))",
         str(where / "ISIC")], capture_output=True, text=True, check=True).stdout)
    assert numbers["totals"]["in_dataset"] == 3 and "set_aside" not in numbers["outcomes"]
    assert [g["name"] for g in numbers["groups"]] == ["malignant"]


def test_fewer_imagenet_classes_leave_the_others_as_they_are_and_say_so(installed, tmp_path):
    from tests.emulators.imagenet import GeturlsServer, PhotoHosts, make_classes

    classes = make_classes(3, 3, seed=9, failure_rate=0.0)
    wnids = list(classes)
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        args = ("--per-class", "2", "--api-url", api.geturls_url("x").split("?")[0])
        assert user_run(installed, "imagenet", "--wnids", ",".join(wnids), *args, cwd=tmp_path,
                        env=hosts.proxy_env()).returncode == 0
        fewer = user_run(installed, "imagenet", "--wnids", wnids[0], *args, cwd=tmp_path, env=hosts.proxy_env())
    assert fewer.returncode == 0, fewer.stderr
    assert (f"Note: 2 class folder(s) of earlier runs not asked this time are left as they are: "
            f"{', '.join(sorted(wnids[1:]))}") in fewer.stderr
    assert all(len(list((tmp_path / "ImageNet" / "Images" / w).iterdir())) == 2 for w in wnids)


@pytest.fixture
def victim(tmp_path) -> Path:
    """Someone's home folder, which no dataset command may touch."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".bashrc").write_text("export PATH=$PATH\n")
    (home / ".ssh" / "id_rsa").write_text("-----BEGIN PRIVATE KEY-----\nsecret\n")
    (home / "thesis.pdf").write_bytes(b"%PDF-1.4 my thesis")
    (home / "holiday.jpg").write_bytes(jpeg(64, 48, seed=7))
    return home


@pytest.mark.parametrize("how", ["absolute", "relative", "symlink"])
def test_verify_fix_and_report_never_act_outside_the_folder_they_were_given(installed, isic, victim, tmp_path, how):
    where = tmp_path / "work"
    where.mkdir()
    assert user_run(installed, "isic", "--num-images", "3", "--api-url", isic, cwd=where).returncode == 0
    root = where / "ISIC"
    record = json.loads((root / "dataset.json").read_text())
    photo = victim / "holiday.jpg"
    if how == "symlink":  # a folder of the dataset that leads out of it
        shutil.rmtree(root / "Images")
        (root / "Images").symlink_to(victim)
    else:
        named = str(victim) if how == "absolute" else os.path.relpath(victim, root)
        for run in record["runs"]:
            run["folders"]["images_dir"] = named
        (root / "dataset.json").write_text(json.dumps(record))
    with (root / "manifest.jsonl").open("a") as f:  # a line vouching for the victim's photo
        f.write(json.dumps({"id": "ISIC_0000100", "outcome": "kept", "kind": "image", "label": "benign",
                            "path": os.path.relpath(photo, root), "bytes": photo.stat().st_size,
                            "sha256": hashlib.sha256(photo.read_bytes()).hexdigest()}) + "\n")
    before = tree(victim)
    fixed = user_run(installed, "verify", "--fix", "ISIC", cwd=where)
    assert "not looked at:" in fixed.stdout or "not read:" in fixed.stdout, fixed.stdout
    assert tree(victim) == before  # nothing moved, nothing written
    assert not (root / ".quarantine").exists() or not any(
        p.name in (".bashrc", "id_rsa", "thesis.pdf", "holiday.jpg") for p in (root / ".quarantine").rglob("*"))
    report = user_run(installed, "report", "ISIC", cwd=where)
    assert report.returncode == 0, report.stderr
    page = (root / "report.html").read_text()
    assert 'alt="ISIC_0000100"' not in page  # no thumbnail made from the victim's photo
    assert tree(victim) == before
    named = user_run(installed, "verify", "ISIC", "--images-dir", str(root / "Images") if how == "symlink"
                     else str(victim), cwd=where)
    assert "not looked at:" not in named.stdout  # named on the command line: looked at, as asked


def test_verify_fix_with_a_symlinked_quarantine_moves_nothing_and_says_so(installed, isic, victim, tmp_path):
    assert user_run(installed, "isic", "--num-images", "3", "--api-url", isic, cwd=tmp_path).returncode == 0
    root = tmp_path / "ISIC"
    (root / "Images" / "stray.part").write_bytes(b"x")
    (root / ".quarantine").symlink_to(victim)
    before = tree(victim)
    fixed = user_run(installed, "verify", "--fix", "ISIC", cwd=tmp_path)
    assert fixed.returncode == 1
    assert last_line(fixed.stderr).startswith(f"error: {root / '.quarantine'} is a symlink")
    assert "fixed:" not in fixed.stdout and (root / "Images" / "stray.part").exists()
    assert tree(victim) == before
