"""`scrapy verify DIR [--fix]`: a damaged dataset is reported, set aside, and refilled by the next crawl."""

from __future__ import annotations

import sys

from tests.conftest import crawl, run_scrapy
from tests.emulators import ImageHost, IsicV2Server, make_archive


def verify(out, *flags):
    proc = run_scrapy([sys.executable, "-m", "scrapy", "verify", *flags, str(out)], timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def test_verify_finds_truncated_swapped_and_missing_files_and_fix_lets_a_crawl_refill(out):
    records = make_archive(12)
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        args = (f"api_url={api.url}/api/v2", "num_images=10")
        assert crawl("isic", out, *args).code == 0
        assert verify(out)[0] == 0
        images = out / "Images"
        a, b, c, d = (images / f"ISIC_000000{i}.jpg" for i in range(4))
        original = {p.name: p.read_bytes() for p in images.iterdir()}
        a.write_bytes(original[a.name][:300])  # truncated
        b.write_bytes(original[c.name])  # swapped
        c.write_bytes(original[b.name])
        d.unlink()  # missing

        code, stdout, _ = verify(out)
        assert code == 1
        assert "checked 10 image(s) in 1 folder(s): 4 problem(s): changed 3, missing 1" in stdout
        assert f"missing: {d}" in stdout

        code, stdout, _ = verify(out, "--fix")
        assert code == 1 and "fixed: 4 moved aside" in stdout
        assert sorted(p.name for p in (out / ".quarantine" / "Images").iterdir()) == sorted([a.name, b.name, c.name])
        assert len([p for p in images.iterdir() if p.name != "metadata.jsonl"]) == 6
        assert len((images / "metadata.jsonl").read_text().splitlines()) == 6  # --fix rewrote it

        host.clear_log()
        again = crawl("isic", out, *args)
        assert again.code == 0, again.stderr
        assert sorted(path for _, path in host.log) == sorted(f"/images/{p.name}" for p in (a, b, c, d))
    assert {p.name: p.read_bytes() for p in images.iterdir()} == original
    code, stdout, _ = verify(out)
    assert (code, stdout.strip()) == (0, "checked 10 image(s) in 1 folder(s): all good")


def test_verify_without_a_manifest_is_a_one_line_error(tmp_path):
    code, _, stderr = verify(tmp_path)
    assert code == 2
    assert stderr.strip() == f"error: no manifest.jsonl in {tmp_path}"
