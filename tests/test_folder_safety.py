"""The dataset folder is ours alone: one run at a time, nothing outside it touched, never more than N."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import clean_env, crawl, crawl_command, run_scrapy, start_scrapy, tmpfs
from tests.emulators import ImageHost, IsicV2Server, images, make_archive
from tests.emulators.imagenet import FakePhoto, GeturlsServer, PhotoHosts, make_classes


def popen(spider: str, out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return start_scrapy(crawl_command(spider, out, *args), env=clean_env(env), stderr=subprocess.PIPE)


def verify(out: Path, *flags: str) -> subprocess.CompletedProcess:
    return run_scrapy([sys.executable, "-m", "scrapy", "verify", *flags, str(out)], timeout=60)


def url_file(path: Path, rows: list[tuple[str, FakePhoto]]) -> Path:
    path.write_text("".join(f"{image_id}\t{photo.url}\n" for image_id, photo in rows))
    return path


def sentinels(folder: Path) -> dict[str, bytes]:
    """A folder of someone's own files, one named like our temporary files, one a real photo."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("my own work")
    (folder / ("0" * 32 + ".part")).write_bytes(b"mine, though named like a temporary file")
    (folder / "holiday.jpg").write_bytes(images.jpeg(64, 48, seed=99))
    return snapshot(folder)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def last_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    return stderr.strip().splitlines()[-1]


def test_two_crawls_of_one_dataset_at_once_one_is_refused_and_the_counts_stay_exact(tmp_path, out):
    classes = make_classes(2, 8, seed=3, failure_rate=0.0, latency=(2.5, 3.0))
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        args = (f"api_url={api.geturls_url('x').split('?')[0]}", f"wnids={','.join(classes)}", "per_class=3")
        procs = [popen("imagenet", out, *args, env=hosts.proxy_env()) for _ in range(2)]
        results = [(p.wait(timeout=120), p.stderr.read(), p.pid) for p in procs]
        # a third run while a verify --fix holds the folder is refused too; read-only verify is not
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], [r[1][-2000:] for r in results]
    (_, refused, _), (_, _, winner) = sorted(results, key=lambda r: -r[0])
    assert last_line(refused) == (f"error: {out} is in use by process {winner}: one run per dataset at a time; "
                                  "wait for it to finish, or choose another out_dir")
    for wnid in classes:
        assert len(os.listdir(out / "Images" / wnid)) == 3
    assert verify(out).returncode == 0


def test_a_crawl_or_a_fix_started_during_a_crawl_is_refused_and_the_first_finishes(out):
    classes = make_classes(1, 8, seed=4, failure_rate=0.0, latency=(4.0, 4.2))
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        args = (f"api_url={api.geturls_url('x').split('?')[0]}", "wnids=n00000000")
        first = popen("imagenet", out, *args, "per_class=6", env=hosts.proxy_env())
        deadline = time.monotonic() + 60
        while not (out / "dataset.json").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        second = crawl("imagenet", out, *args, "per_class=2", env=hosts.proxy_env())
        fixing = verify(out, "--fix")
        code, stderr = first.wait(timeout=120), first.stderr.read()
    assert code == 0, stderr[-2000:]
    assert second.code == 1 and last_line(second.stderr).startswith(f"error: {out} is in use by process {first.pid}")
    assert fixing.returncode == 1 and fixing.stderr.startswith(f"error: {out} is in use by process {first.pid}")
    assert len(os.listdir(out / "Images" / "n00000000")) == 6
    assert verify(out).returncode == 0


def test_verify_beside_a_running_crawl_calls_unrecorded_images_pending_not_junk(out):
    from dataset_spiders.dataset.lock import DatasetLock

    records = make_archive(3)
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        assert crawl("isic", out, f"api_url={api.url}/api/v2").code == 0
    (out / "Images" / "ISIC_0000009.jpg").write_bytes(images.jpeg(32, 32, seed=3))  # renamed, no line yet
    lock = DatasetLock(str(out), [])
    lock.acquire()  # as a crawl would hold it
    try:
        looking = verify(out)
    finally:
        lock.release()
    assert looking.returncode == 0, looking.stdout
    assert "pending: 1 valid image(s) not yet in the manifest (a crawl is running)" in looking.stdout
    assert verify(out).returncode == 1  # with no crawl running, it is an unlisted image


@pytest.mark.parametrize("where", [".staging", ".quarantine", "Images/n00000000"])
def test_a_symlink_where_we_make_a_folder_is_refused_and_its_target_untouched(where, tmp_path, out):
    theirs = tmp_path / "theirs"
    before = sentinels(theirs)
    link = out / where
    link.parent.mkdir(parents=True)
    link.symlink_to(theirs, target_is_directory=True)
    classes = make_classes(1, 4, seed=5, failure_rate=0.0)
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        run = crawl("imagenet", out, f"api_url={api.geturls_url('x').split('?')[0]}", "wnids=n00000000",
                    "per_class=2", env=hosts.proxy_env())
    assert run.code == 1
    assert last_line(run.stderr).startswith(f"error: {link} is a symlink; the spiders make this folder themselves")
    assert snapshot(theirs) == before


def test_a_symlinked_file_under_an_image_name_is_set_aside_never_followed(tmp_path, out):
    theirs = tmp_path / "theirs"
    before = sentinels(theirs)
    classes = make_classes(1, 4, seed=6, failure_rate=0.0)
    urls = url_file(tmp_path / "urls.txt", [(f"n00000000_{i}", p) for i, p in enumerate(classes["n00000000"])])
    folder = out / "Images" / "n00000000"
    folder.mkdir(parents=True)
    (folder / "n00000000_0.jpg").symlink_to(theirs / "holiday.jpg")
    with PhotoHosts(classes) as hosts:
        run = crawl("imagenet", out, f"urls_file={urls}", "wnids=n00000000", "per_class=2", env=hosts.proxy_env(),
                    settings={"DATASET_EXTRA_IN_FLIGHT": "0"})
    assert run.code == 0, run.stderr[-2000:]
    assert snapshot(theirs) == before
    assert sorted(p.name for p in folder.iterdir()) == ["n00000000_0.jpg", "n00000000_1.jpg"]
    assert not any(p.is_symlink() for p in folder.iterdir())
    assert (out / ".quarantine" / "Images" / "n00000000" / "n00000000_0.jpg").is_symlink()


def test_hostile_manifest_lines_are_skipped_and_never_acted_on(tmp_path, out):
    outside = tmp_path / "outside"
    outside.mkdir()
    same = images.jpeg(40, 40, seed=1)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (outside / name).write_bytes(same)
    before = snapshot(outside)
    classes = make_classes(1, 4, seed=8, failure_rate=0.0)
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        args = (f"api_url={api.geturls_url('x').split('?')[0]}", "wnids=n00000000", "per_class=2")
        assert crawl("imagenet", out, *args, env=hosts.proxy_env()).code == 0
        sha = hashlib.sha256(same).hexdigest()
        hostile = [  # three "kept" copies of one image on one site: a learned placeholder if believed
            json.dumps({"id": f"n00000000_9{i}", "kind": "image", "group": "n00000000", "outcome": "kept",
                        "url": f"http://farm1.static.flickr.com/1/x{i}.jpg", "path": f"../outside/{n}",
                        "bytes": len(same), "sha256": sha})
            for i, n in enumerate(("a.jpg", "b.jpg", "c.jpg"))
        ] + [
            json.dumps({"id": "x1", "outcome": "kept", "path": f"{outside}/a.jpg", "bytes": len(same), "sha256": sha}),
            json.dumps({"id": 5, "outcome": "kept", "path": ["x"]}),
            json.dumps({"id": "x2", "outcome": "kept", "path": 123}),
            json.dumps({"id": "x3", "outcome": "kept", "bytes": "12"}),
            json.dumps([1, 2]),
            "[" * 100_000,
            "\x00\xff binary {{{",
            json.dumps({"id": "x4", "outcome": "kept", "detail": "y" * (2 << 20)}),
        ]
        with open(out / "manifest.jsonl", "a", encoding="utf-8", errors="surrogateescape") as f:
            f.write("\n".join(hostile) + "\n")
        again = crawl("imagenet", out, *args, env=hosts.proxy_env())
    assert again.code == 0, again.stderr[-3000:]
    assert "Traceback" not in again.stderr
    assert "is outside the dataset" in again.stderr and "skipping a line" in again.stderr
    for flags in ((), ("--fix",)):
        checked = verify(out, *flags)
        assert "Traceback" not in checked.stderr and checked.returncode == 0, checked.stdout + checked.stderr
    assert snapshot(outside) == before
    assert len(os.listdir(out / "Images" / "n00000000")) == 2


def test_extra_images_in_a_class_are_brought_back_to_n_and_verify_reports_them(tmp_path, out):
    photos = make_classes(1, 6, seed=9, failure_rate=0.0)["n00000000"]
    order = [5, 1, 3, 0, 2, 4]  # the list order is not the ids' order
    urls = url_file(tmp_path / "urls.txt", [(f"n00000000_{i}", photos[i]) for i in order])
    folder = out / "Images" / "n00000000"
    with PhotoHosts({"n00000000": photos}) as hosts:
        def run(n: int, *extra: str):
            return crawl("imagenet", out, f"urls_file={urls}", "wnids=n00000000", f"per_class={n}", *extra,
                         env=hosts.proxy_env(), settings={"DATASET_EXTRA_IN_FLIGHT": "0"})

        assert run(5).code == 0
        assert sorted(p.name for p in folder.iterdir()) == [f"n00000000_{i}.jpg" for i in (0, 1, 2, 3, 5)]
        for name, seed in (("mine_a.jpg", 1), ("mine_b.jpg", 2)):
            (folder / name).write_bytes(images.jpeg(64, 64, seed=seed))
        checked = verify(out)
        assert checked.returncode == 1 and "2 problem(s): unlisted 2" in checked.stdout

        smaller = run(3, "strict=true")
    assert smaller.code == 0, smaller.stderr[-2000:]
    assert sorted(p.name for p in folder.iterdir()) == [f"n00000000_{i}.jpg" for i in (1, 3, 5)]
    aside = out / ".quarantine" / "Images" / "n00000000"
    assert sorted(p.name for p in aside.iterdir()) == ["mine_a.jpg", "mine_b.jpg", "n00000000_0.jpg", "n00000000_2.jpg"]
    assert f"n00000000 held 7 images, over per_class=3: moved 4 to {aside}" in smaller.stderr
    assert verify(out).returncode == 0

    runs = json.loads((out / "dataset.json").read_text())["runs"]
    runs[-1]["target"]["images"] = 2  # as if a run with a smaller N had been killed before its trim
    (out / "dataset.json").write_text(json.dumps({"runs": runs}))
    checked = verify(out)
    assert checked.returncode == 1 and "1 problem(s): over_target 1" in checked.stdout
    assert verify(out, "--fix").returncode == 1
    left = {p.name for p in folder.iterdir()}
    assert len(left) == 2 and left < {f"n00000000_{i}.jpg" for i in (1, 3, 5)}
    assert verify(out).returncode == 0


def test_a_relabelled_isic_image_moves_and_leaves_no_old_copy(out):
    records = make_archive(4)
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        args = (f"api_url={api.url}/api/v2", "layout=by_label")
        assert crawl("isic", out, *args).code == 0
        assert (out / "Images" / "benign" / "ISIC_0000000.jpg").exists()
        records[0].diagnosis_1 = "Malignant"
        again = crawl("isic", out, *args)
    assert again.code == 0, again.stderr[-2000:]
    assert not (out / "Images" / "benign" / "ISIC_0000000.jpg").exists()
    assert (out / "Images" / "malignant" / "ISIC_0000000.jpg").read_bytes() == records[0].body
    last = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()][-4:]
    moved = next(line for line in last if line["id"] == "ISIC_0000000")
    assert moved["path"] == "Images/malignant/ISIC_0000000.jpg"
    assert "moved from Images/benign/ISIC_0000000.jpg" in moved["detail"]
    assert verify(out).returncode == 0


def test_start_up_clean_up_deletes_only_our_own_temporary_files(out):
    staging = out / ".staging"
    staging.mkdir(parents=True)
    ours = staging / (hashlib.md5(b"x").hexdigest() + ".part")
    ours.write_bytes(b"left by a killed run")
    for name in ("notes.txt", "keep.part", "ABCDEF.part"):
        (staging / name).write_text("not ours")
    (staging / "folder").mkdir()
    records = make_archive(3)
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        assert crawl("isic", out, f"api_url={api.url}/api/v2").code == 0
    assert sorted(p.name for p in staging.iterdir()) == ["ABCDEF.part", "folder", "keep.part", "notes.txt"]


def test_dataset_json_records_each_run(out):
    records = make_archive(3)
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        assert crawl("isic", out, f"api_url={api.url}/api/v2", "num_images=2", settings={"RETRY_TIMES": "1"}).code == 0
        api_url = f"{api.url}/api/v2"
    failed = crawl("isic", out, "api_url=http://127.0.0.1:9/api/v2", settings={"RETRY_TIMES": "0"})
    assert failed.code == 1
    first, second = json.loads((out / "dataset.json").read_text())["runs"]
    assert first["spider"] == "isic" and first["exit_status"] == 0 and first["error"] is None
    assert first["arguments"]["num_images"] == 2 and first["target"] == {"images": 2, "per": "selection"}
    assert first["settings"] == {"RETRY_TIMES": "1"}
    assert first["folders"] == {"out_dir": ".", "images_dir": "Images", "descs_dir": "Descriptions"}  # travels
    assert first["command"][:4] == ["scrapy", "crawl", "isic", "-a"]
    assert first["sources"] == {"api_url": api_url}
    assert {"dataset_spiders", "scrapy", "pillow", "python"} <= set(first["versions"])
    assert first["started"] <= first["ended"]
    assert second["exit_status"] == 1 and "cannot fetch the search page http://127.0.0.1:9/" in second["error"]


@pytest.fixture
def other_disk(tmp_path):
    with tmpfs(tmp_path / "disk", "64m") as mount:
        yield mount


def test_an_image_folder_on_another_file_system_stages_beside_it_never_inside(other_disk, out):
    from tests.test_imagenet_crawl import FolderWatcher
    from tests.test_resume import kill_after_lines

    images_dir = other_disk / "Images"
    records = make_archive(40)
    strays: set[str] = set()

    class StrayWatcher(FolderWatcher):
        def run(self) -> None:
            while not self.stop.is_set():
                for folder, _, files in os.walk(images_dir):
                    strays.update(os.path.join(folder, f) for f in files
                                  if not f.endswith(".jpg") and f != "metadata.jsonl")  # the loader's file
                time.sleep(0.002)

    watcher = StrayWatcher(images_dir)
    watcher.start()
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        args = (f"api_url={api.url}/api/v2", f"images_dir={images_dir}")
        first = popen("isic", out, *args)
        kill_after_lines(first, out / "manifest.jsonl", 8)
        left = [p for p in images_dir.rglob("*") if p.suffix != ".jpg" and p.name != "metadata.jsonl"]
        again = crawl("isic", out, *args)
    watcher.stop.set()
    watcher.join()
    assert left == [] and strays == set()
    assert again.code == 0, again.stderr[-2000:]
    kept = {p.name: p.read_bytes() for p in images_dir.iterdir() if p.name != "metadata.jsonl"}
    assert kept == {f"{r.isic_id}.jpg": r.body for r in records}
    assert (other_disk / ".Images.staging").is_dir() and not list((other_disk / ".Images.staging").iterdir())
    named = f"--images-dir={images_dir}"  # outside out_dir: looked at only when named
    assert verify(out, named).returncode == 0
    (images_dir / "ISIC_0000001.jpg.1a2b3c4d.part").write_bytes(b"left by an older version")
    checked = verify(out, named)
    assert checked.returncode == 1 and "1 problem(s): stray 1" in checked.stdout
    assert verify(out, "--fix", named).returncode == 1
    assert (out / ".quarantine" / "_outside" / "Images" / "ISIC_0000001.jpg.1a2b3c4d.part").exists()
    assert verify(out, named).returncode == 0


def test_planted_links_a_folder_named_as_an_image_and_a_broken_dataset_json_cost_nothing(tmp_path, out):
    theirs = tmp_path / "theirs"
    before = sentinels(theirs)
    records = make_archive(3)
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        args = (f"api_url={api.url}/api/v2",)
        assert crawl("isic", out, *args).code == 0
        (out / ".lock").unlink(missing_ok=True)  # (a run removes its note when it ends)
        (out / ".lock").symlink_to(theirs / "notes.txt")  # the holder's note must not write through it
        (out / "dataset.json").write_text("{not json")
        with open(out / "manifest.jsonl", "a") as f:  # a "kept image" that is the whole image folder
            f.write(json.dumps({"id": "ISIC_0000001", "outcome": "kept", "path": "Images", "bytes": 1}) + "\n")
        again = crawl("isic", out, *args)
        assert again.code == 0, again.stderr[-2000:]
        assert snapshot(theirs) == before
        assert [p.name for p in (out / ".quarantine").iterdir()] == ["dataset.json"]
        assert json.loads((out / "dataset.json").read_text())["runs"][-1]["exit_status"] == 0
        assert verify(out, "--fix").returncode == 0
        assert len([p for p in (out / "Images").iterdir() if p.name != "metadata.jsonl"]) == 3
        (out / "manifest.jsonl").rename(theirs / "manifest.jsonl")
        (out / "manifest.jsonl").symlink_to(theirs / "manifest.jsonl")
        before = snapshot(theirs)
        linked = crawl("isic", out, *args, "retry_failed=true")
    assert linked.code == 1 and last_line(linked.stderr) == (
        f"error: {out / 'manifest.jsonl'} is a symlink; the manifest must be a real file of the dataset")
    assert snapshot(theirs) == before


def test_images_in_out_dir_itself_verify_and_rerun_cleanly(out):
    records = make_archive(3)
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        args = (f"api_url={api.url}/api/v2", f"images_dir={out}")
        assert crawl("isic", out, *args).code == 0
        checked = verify(out)
        assert checked.returncode == 0, checked.stdout  # manifest, dataset.json, .staging: ours, not strays
        assert crawl("isic", out, *args).code == 0
    assert sorted(p.name for p in out.glob("*.jpg")) == [f"{r.isic_id}.jpg" for r in records]


def test_a_run_whose_image_folder_another_run_holds_is_refused_and_leaves_nothing(tmp_path):
    shared = tmp_path / "SharedImages"  # one images_dir, two out_dirs: the lock covers it too
    classes = make_classes(1, 8, seed=4, failure_rate=0.0, latency=(3.0, 3.2))
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        args = (f"api_url={api.geturls_url('x').split('?')[0]}", "wnids=n00000000", f"images_dir={shared}")
        first = popen("imagenet", tmp_path / "A", *args, "per_class=3", env=hosts.proxy_env())
        deadline = time.monotonic() + 60
        while not (tmp_path / "A" / "dataset.json").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        second = crawl("imagenet", tmp_path / "B", *args, "per_class=3", env=hosts.proxy_env())
        code = first.wait(timeout=120)
    assert code == 0
    assert second.code == 1 and last_line(second.stderr).startswith(f"error: {shared} is in use by process {first.pid}")
    assert not (tmp_path / "B").exists()
    assert len(os.listdir(shared / "n00000000")) == 3
