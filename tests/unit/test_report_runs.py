"""How long a run took and what it downloaded, as the report reads them from dataset.json: the
recorded seconds, else the start and end (to the second); nothing from a value that is not one."""

from __future__ import annotations

import pytest

from dataset_spiders.report.gather import run_downloaded, run_seconds

STARTED, ENDED = "2026-11-30T14:32:29+0000", "2026-11-30T14:35:00+0100"


@pytest.mark.parametrize(("run", "seconds"), [
    ({"seconds": 12.345, "started": STARTED, "ended": ENDED}, 12.345),  # recorded: exact
    ({"seconds": 0, "started": STARTED, "ended": STARTED}, 0.0),
    ({"started": STARTED, "ended": "2026-11-30T14:35:00+0000"}, 151.0),  # older entries: to the second
    ({"seconds": True, "started": STARTED, "ended": "2026-11-30T14:32:30+0000"}, 1.0),  # not a number: the times
    ({"seconds": float("nan")}, None), ({"seconds": -1}, None), ({"seconds": "12"}, None),
    ({"started": STARTED, "ended": None}, None),  # killed, or still running
    ({"started": STARTED, "ended": ENDED}, None),  # an end before the start (another zone): not a duration
    ({"started": "yesterday", "ended": ENDED}, None), ({}, None),
])
def test_a_runs_seconds_are_recorded_or_from_its_start_and_end(run, seconds):
    assert run_seconds(run) == seconds


def test_a_run_downloaded_what_its_outcomes_say_it_kept():
    assert run_downloaded({"outcomes": {"kept": 20, "present": 5, "http_404": 2}}) == 20
    assert run_downloaded({"outcomes": {"present": 5}}) == 0
    for hostile in ({}, {"outcomes": None}, {"outcomes": {"kept": "20"}}, {"outcomes": {"kept": -1}},
                    {"outcomes": {"kept": True}}):
        assert run_downloaded(hostile) is None
