"""A full disk or a read-only folder: a clear line, exit 1, and nothing already kept damaged.

Tests run as root, where chmod cannot make a folder read-only; a small tmpfs can be full or
read-only for real (mounting needs root: the tests skip, saying why, where it is refused)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import crawl, tmpfs
from tests.emulators import FakeImage, ImageHost, IsicV2Server, images


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "disk", "600k") as mount:
        yield mount


def whole_images(folder: Path) -> dict[str, bytes]:
    found = {}
    for path in sorted(folder.glob("*.jpg")):
        with Image.open(path) as im:
            im.load()
        found[path.name] = path.read_bytes()
    return found


def archive(n: int) -> list[FakeImage]:
    return [FakeImage(f"ISIC_{i:07d}", body=images.jpeg(256, 192, seed=i)) for i in range(n)]  # ~80 KB each


def test_a_full_disk_stops_the_run_and_keeps_what_was_whole(small_disk):
    records = archive(20)
    out = small_disk / "Data"
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        # the check at start would refuse the run; what is tested is a disk that fills up during it
        run = crawl("isic", out, f"api_url={api.url}/api/v2",
                    settings={"CONCURRENT_REQUESTS": "2", "DISK_SPACE_CHECK": "false"})
    assert run.code == 1
    assert "Traceback" not in run.stderr
    assert "No space left on device" in run.stderr.strip().splitlines()[-1]
    kept = whole_images(out / "Images")
    assert 0 < len(kept) < 20
    served = {f"{r.isic_id}.jpg": r.body for r in records}
    assert all(served[name] == data for name, data in kept.items())


def test_a_read_only_dataset_is_one_line_and_left_as_it_was(small_disk):
    records = archive(6)
    out = small_disk / "Data"
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        assert crawl("isic", out, f"api_url={api.url}/api/v2", "num_images=3").code == 0
        before = whole_images(out / "Images")
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        run = crawl("isic", out, f"api_url={api.url}/api/v2", "num_images=6")
    assert run.code == 1
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot write to ") and last.endswith("Read-only file system")
    assert whole_images(out / "Images") == before
