"""The API's size of a selection is a hint (spiders/preflight.py): believed when it is a finite
number >= 0 within 20 times of the records' own sizes, else their estimate stands in, said once."""

from __future__ import annotations

import logging

import pytest

from dataset_spiders.spiders.preflight import record_sizes, sane_size

SIZES = [1000, 3000]  # the first page's records: 2,000 bytes each on average


@pytest.mark.parametrize("said", [80_000, 1_600_000, 4_000.0, 30_000])
def test_a_plausible_size_is_taken(said, caplog):
    assert sane_size(said, 40, SIZES) == int(said)
    assert not caplog.records


@pytest.mark.parametrize(("said", "why"), [
    (90_000_000_000_000, "more than 20 times off"), (3_000, "more than 20 times off"), (-1, "negative"),
    (-1e18, "negative"), (float("nan"), "not a number"), (float("inf"), "not a number"), ("80000", "not a number"),
    ([80_000], "not a number"), (True, "not a number"), ({"bytes": 1}, "not a number"),
])
def test_anything_else_gives_way_to_the_records_estimate_with_a_warning(said, why, caplog):
    with caplog.at_level(logging.WARNING):
        assert sane_size(said, 40, SIZES) == 80_000
    assert len(caplog.records) == 1 and why in caplog.text and repr(said)[:20] in caplog.text


def test_without_records_sizes_the_api_is_believed_and_nothing_is_made_up():
    assert sane_size(5_000_000, 40, []) == 5_000_000
    assert sane_size("x", 40, []) is None and sane_size(None, 40, []) is None
    assert sane_size(None, 40, SIZES) == 80_000  # a mirror without the size endpoint: the estimate


def test_record_sizes_are_files_full_size_of_well_formed_records():
    page = [{"isic_id": "ISIC_0000001", "files": {"full": {"url": "http://h/a.jpg", "size": 10}}},
            {"isic_id": "ISIC_0000002", "files": {"full": {"size": -5}}}, {"isic_id": "ISIC_0000003"}, "junk",
            {"isic_id": "ISIC_0000004", "files": {"full": {"size": True}}}]
    assert record_sizes(page) == [10] and record_sizes("not a list") == []
