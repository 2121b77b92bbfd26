"""Input that must not steer or hang a run, as a user meets it (the installed command, from a folder
outside the checkout): special files where the dataset keeps its own, settings of the wrong type,
class files and URL lists of any depth or field size, an API's absurd size hint, strings that
would reorder the report, a ZIP whose end record points past its end. Each is one line (or one
warning) and an honest exit status, never a hang or a traceback, and leaves nothing behind."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from dataset_spiders.dataset.manifest import Record
from tests.conftest import user_run
from tests.emulators import ImageHost, IsicV2Server, make_archive
from tests.emulators.challenge_archives import LAYOUT_2018, ChallengeArchives, make_zip

QUICK = 30  # seconds: a command that waits longer than this is hanging, and the test fails


@pytest.fixture(scope="module")
def isic():
    records = make_archive(12, size=(40, 30))
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        yield api, records


def _run(installed: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return user_run(installed, *args, cwd=cwd, timeout=QUICK)


def _one_line(run: subprocess.CompletedProcess[str], code: int) -> str:
    """The run's last stderr line, which must be its one ``error:`` line; no traceback."""
    assert run.returncode == code, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), run.stderr
    return last


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- special files where the dataset keeps its own ------------------------------------------


def test_a_fifo_or_socket_where_the_dataset_keeps_a_file_is_refused_never_waited_on(isic, installed, tmp_path):
    """A FIFO named dataset.json used to block the crawl for good (deaf to SIGTERM) and hang
    verify and report; now each says what it found, at once, and the crawl makes nothing."""
    api, _ = isic
    where = _mkdir(tmp_path / "user")
    data = _mkdir(where / "ISIC")
    os.mkfifo(data / "dataset.json")
    crawl = _run(installed, "isic", "--num-images", "2", "--api-url", f"{api.url}/api/v2", cwd=where)
    said = f"error: {data / 'dataset.json'} is a FIFO, not a regular file"
    assert _one_line(crawl, 1).startswith(said)
    assert sorted(os.listdir(data)) == ["dataset.json"]  # nothing made: no lock note, no folder
    for command in ("verify", "report"):
        assert _one_line(_run(installed, command, "ISIC", cwd=where), 2).startswith(said)
    (data / "dataset.json").unlink()
    with socket.socket(socket.AF_UNIX) as sock:  # a socket in place of the manifest, appended to by a crawl
        sock.bind(str(data / "manifest.jsonl"))
        crawl = _run(installed, "isic", "--num-images", "2", "--api-url", f"{api.url}/api/v2", cwd=where)
    assert _one_line(crawl, 1).startswith(f"error: {data / 'manifest.jsonl'} is a socket, not a regular file")
    assert sorted(os.listdir(data)) == ["manifest.jsonl"]


# --- settings of the wrong type ---------------------------------------------------------------


BAD_SETTINGS = {
    "IMAGES_ENCODED_MAXSIZE=x": "error: setting IMAGES_ENCODED_MAXSIZE: expected a whole number >= 0, got 'x'",
    "RETRY_AFTER_MAX=x": "error: setting RETRY_AFTER_MAX: expected a number >= 0, got 'x'",
    "PLACEHOLDER_URL_PATTERNS=[": "error: setting PLACEHOLDER_URL_PATTERNS: expected a list of regular expressions",
    "CONCURRENT_REQUESTS={'a': 1}": "error: setting CONCURRENT_REQUESTS: expected a whole number, got '{'a': 1}'",
    "LOG_LEVEL=None": "error: setting LOG_LEVEL: expected one of CRITICAL, ERROR, WARNING, INFO, DEBUG or a number",
    "IMAGES_MEMORY_BUDGET=abc": "error: setting IMAGES_MEMORY_BUDGET: expected a whole number >= 0, got 'abc'",
    "NEAR_DUPLICATE_DISTANCE=99": "error: setting NEAR_DUPLICATE_DISTANCE: expected a whole number from 0 to 15, "
                                  "got '99'",
}


def test_a_setting_of_the_wrong_type_is_one_line_and_exit_2_leaving_nothing(isic, installed, tmp_path):
    """They used to give a traceback and leave Images/ and Descriptions/ behind, or say
    "Unsupported URL scheme", or (NEAR_DUPLICATE_DISTANCE=99) be taken silently."""
    api, _ = isic
    where = _mkdir(tmp_path / "user")
    for setting, said in BAD_SETTINGS.items():
        run = _run(installed, "isic", "--num-images", "2", "--api-url", f"{api.url}/api/v2", "-s", setting, cwd=where)
        assert _one_line(run, 2).startswith(said), setting
        assert os.listdir(where) == [], setting
    assert api.requests_for("/api/v2/images/search/") == []  # stopped before the first request
    run = _run(installed, "report", "ISIC", "-s", "REPORT_THUMBNAIL_SIZE=big", cwd=where)
    assert _one_line(run, 2).startswith("error: setting REPORT_THUMBNAIL_SIZE: expected a whole number")


# --- class files and URL lists ----------------------------------------------------------------


def test_class_files_and_url_lists_of_any_depth_or_field_size_are_one_line(installed, tmp_path):
    where = _mkdir(tmp_path / "user")
    deep = where / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)  # a JSON array nested 100,000 deep
    wide = where / "wide.csv"
    wide.write_text("synid,class_name\nn01440764,\"" + "x" * 200_000 + "\"\n")  # a field over csv's 128 KiB
    broken = where / "urls.txt.gz"
    good = gzip.compress(b"n01440764_1\thttp://farm1.static.flickr.com/1/a.jpg\n" * 50)
    broken.write_bytes(good[:20] + b"\xff" * 30 + good[50:])  # a gzip stream that does not inflate
    for option, path in (("--wnids-file", deep), ("--wnids-file", wide), ("--urls-file", broken)):
        extra = ["--wnids", "n01440764"] if option == "--urls-file" else []
        run = _run(installed, "imagenet", option, path.name, *extra, "--api-url", "http://127.0.0.1:9/x", cwd=where)
        assert path.name in _one_line(run, 2), run.stderr
    late = where / "late.txt.gz"  # sound for its first 64 KiB (what is checked at start), cut short further on
    lines = b"".join(b"n01440764_%d\thttp://farm1.static.flickr.com/1/%d.jpg\n" % (n, n) for n in range(3000))
    late.write_bytes(gzip.compress(lines, compresslevel=0)[:-1000])
    run = _run(installed, "imagenet", "--urls-file", late.name, "--wnids", "n01440764", cwd=where)
    assert "Compressed file ended" in _one_line(run, 1)
    assert sorted(os.listdir(where)) == ["deep.json", "late.txt.gz", "urls.txt.gz", "wide.csv"]  # no ISIC/


# --- the API's size hint ------------------------------------------------------------------------


def test_the_api_s_size_hint_is_checked_against_the_records_own_sizes(isic, installed, tmp_path):
    """9e13 bytes for 12 small records used to refuse the run for lack of 90 TB; NaN, a negative
    size, a string or a list silently skipped the disk check. Now the records' own sizes stand in."""
    api, records = isic
    where = _mkdir(tmp_path / "user")
    estimate = sum(len(r.body) for r in records)
    try:
        api.size_answer = 90_000_000_000_000
        run = _run(installed, "isic", "--num-images", "3", "--api-url", f"{api.url}/api/v2", cwd=where)
        assert run.returncode == 0, run.stderr
        assert "take 90000000000000 bytes (images/search/size/), more than 20 times off" in run.stderr
        assert len([p for p in (where / "ISIC" / "Images").iterdir() if p.suffix == ".jpg"]) == 3
        for answer in (float("nan"), "12 MB"):
            api.size_answer = answer
            dry = _run(installed, "isic", "--num-images", "3", "--api-url", f"{api.url}/api/v2", "--dry-run",
                       cwd=_mkdir(tmp_path / "dry"))
            assert dry.returncode == 0, dry.stderr
            assert "not a number of bytes" in dry.stderr
            assert f"({estimate / 1024:.0f} KB for all {len(records)})" in dry.stdout  # the disk check has a size
    finally:
        api.size_answer = None


# --- the report ---------------------------------------------------------------------------------


def test_the_report_shows_bidi_controls_escaped_and_wraps_long_strings(installed, tmp_path):
    where = _mkdir(tmp_path / "user")
    data = _mkdir(where / "ISIC")
    flip, isolate = "\u202e", "\u2066"
    lines = [Record("n01440764_1", "http_404", group=f"n01440764{flip}gpj.exe", url=f"http://h/{'a' * 3000}"),
             Record("n01440764_2", "not_image", group="n01440764", detail=f"served {isolate}text"),
             Record("n01440764_3", "http_404", group="n01440764", url=f"http://h/{isolate}x")]
    (data / "manifest.jsonl").write_bytes(b"".join(line.encode() for line in lines))
    runs = [{"spider": "imagenet", "command": ["dataset-spiders", f"x{flip}y"], "arguments": {"wnids": f"a{flip}b"},
             "exit_status": 1, "error": f"evil{flip}txt.exe"}]
    (data / "dataset.json").write_text(json.dumps({"runs": runs}))
    run = _run(installed, "report", "ISIC", cwd=where)
    assert run.returncode == 0, run.stderr
    page = (data / "report.html").read_text()
    assert not any(c in page for c in "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    assert "evil\\u202etxt.exe" in page and "n01440764\\u202egpj.exe" in page
    assert "td,th,code,pre{overflow-wrap:anywhere}" in page  # a 3,000-character URL wraps in its cell


# --- a ZIP whose end record points past its end --------------------------------------------------


def test_a_mask_archive_whose_end_record_points_past_its_end_stops_the_run(isic, installed, tmp_path):
    """It used to be read as an empty archive: every image ``no_mask``, exit 0."""
    api, _ = isic
    blob = bytearray(make_zip([(LAYOUT_2018.format(isic_id="ISIC_0000000"), b"\x89PNG not read", 0)]))
    end = blob.rfind(b"PK\x05\x06")
    blob[end + 16:end + 20] = (len(blob) + 1000).to_bytes(4, "little")  # the central directory's offset
    where = _mkdir(tmp_path / "user")
    with ChallengeArchives({"2018/x.zip": bytes(blob)}) as bucket:
        url = bucket.url_of("2018/x.zip")
        run = _run(installed, "isic", "--num-images", "2", "--api-url", f"{api.url}/api/v2", "--segmentation",
                   "-s", f"ISIC_MASK_ARCHIVES={url}", cwd=where)
    assert _one_line(run, 1).startswith(f"error: the mask archive {url}: not a valid ZIP: ")
    assert not list((where / "ISIC").rglob("*.jpg"))  # stopped at start, before any image
