"""Listings are bounded by progress, not only by cursor identity (issue 7).

A server can keep minting fresh v2 cursors, or answer ever-growing v1 offsets, over records it
already served: no URL repeats, so only progress tells. ``ISIC_MAX_IDLE_PAGES`` pages in a row
without a record not already listed end the listing with one line and exit 1, and what was
listed is still downloaded. A page that repeats some records but brings new ones is progress.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import Run, crawl
from tests.emulators import ImageHost, IsicV2Server, make_archive
from tests.emulators.isic_v1 import IsicV1Server

TIMEOUT = 60  # today's code never ends these listings: fail instead of hanging the suite
V2_PAGES = "/api/v2/images/search/"
V1_PAGES = "/api/v1/image?"  # the list; descriptions and downloads are /api/v1/image/<id>...


def run_to_the_end(out: Path, *args: str, settings: dict[str, str] | None = None) -> Run:
    """``crawl`` that fails the test, rather than raising, when the crawl does not end by itself."""
    try:
        return crawl("isic", out, *args, settings=settings, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the crawl did not end by itself within {TIMEOUT} s: the listing never stops")


def assert_stopped_after_idle_pages(run: Run, what: str, idle: int, wanted: list[str]) -> None:
    """Exit 1, one last ``error:`` line naming the problem, no traceback, every listed image kept."""
    assert run.code == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    pages = "a page" if idle == 1 else f"{idle} pages in a row"
    assert last.startswith(f"error: the {what} gave {pages} with no record not already listed (last: http://"), last
    assert last.endswith("); the listing ends here"), last
    assert [line for line in run.stderr.splitlines() if line.startswith("error:")] == [last]
    assert sorted(run.files("Images")) == sorted(f"{i}.jpg" for i in wanted)
    assert run.outcomes() == {"kept": len(wanted)}


@pytest.mark.parametrize("idle", [3, 1])
def test_fresh_cursors_over_old_records_stop_after_the_idle_pages(idle, out):
    records = make_archive(120)  # two real pages of 100
    settings = {} if idle == 3 else {"ISIC_MAX_IDLE_PAGES": str(idle)}  # 3 is the default
    with ImageHost(records) as host, IsicV2Server(records, host, page_mode="stale_cursors") as api:
        run = run_to_the_end(out, f"api_url={api.url}/api/v2", settings=settings)
        pages, base = api.requests_for(V2_PAGES), api.url
    assert len(pages) <= 2 + idle + 1, f"{len(pages)} page requests"
    assert_stopped_after_idle_pages(run, "search", idle, [r.isic_id for r in records])
    assert f"(last: {base}{pages[-1]})" in run.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("idle", [3, 1])
def test_v1_offsets_that_recycle_old_records_stop_after_the_idle_pages(idle, out):
    records = make_archive(130)  # two real pages: 100 and 30
    settings = {} if idle == 3 else {"ISIC_MAX_IDLE_PAGES": str(idle)}
    with IsicV1Server(records, page_mode="recycle") as api:
        run = run_to_the_end(out, "api_version=1", f"api_url={api.url}/api/v1", settings=settings)
        pages = api.requests_for(V1_PAGES)
    assert len(pages) <= 2 + idle + 1, f"{len(pages)} page requests"
    assert_stopped_after_idle_pages(run, "image list", idle, [r.isic_id for r in records])


@pytest.mark.parametrize(
    ("api_version", "mode", "count", "idle"),
    [
        (2, "overlap", 130, 1),  # each page repeats 90 of the page before and brings 10 new
        (1, "shift", 130, 1),  # the second page starts 90 records early: 90 repeated, 10 new
        (2, "stale_detours", 201, 2),  # an idle page between real ones, twice: never 2 in a row
    ],
)
def test_pages_that_repeat_some_records_but_bring_new_ones_keep_going(api_version, mode, count, idle, out):
    records = make_archive(count)
    settings = {"ISIC_MAX_IDLE_PAGES": str(idle)}
    if api_version == 2:
        with ImageHost(records) as host, IsicV2Server(records, host, page_mode=mode) as api:
            run = run_to_the_end(out, f"api_url={api.url}/api/v2", settings=settings)
            assert not api.errors
    else:
        with IsicV1Server(records, page_mode=mode) as api:
            run = run_to_the_end(out, "api_version=1", f"api_url={api.url}/api/v1", settings=settings)
            assert not api.errors
    assert run.code == 0, run.stderr[-3000:]
    assert "error:" not in run.stderr
    assert sorted(run.files("Images")) == sorted(f"{r.isic_id}.jpg" for r in records)
    assert run.outcomes() == {"kept": count}
    idle_pages = run.stderr.count("brought no record not already listed")
    assert idle_pages == (2 if mode == "stale_detours" else 0)


def test_records_skipped_by_offset_are_progress(out):
    records = make_archive(250)  # pages of 100, 100 and 50: the first two are all skipped
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        run = run_to_the_end(out, f"api_url={api.url}/api/v2", "offset=200", settings={"ISIC_MAX_IDLE_PAGES": "1"})
    assert run.code == 0, run.stderr[-3000:]
    assert sorted(run.files("Images")) == sorted(f"{r.isic_id}.jpg" for r in records[200:])
