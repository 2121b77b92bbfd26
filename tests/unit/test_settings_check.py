"""Settings checked before a run (dataset_spiders/settings_check.py): the project's own values
pass, what users commonly give passes, and a wrong value is one line naming the setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from scrapy.settings import Settings

import dataset_spiders.settings as settings_module
from dataset_spiders.settings_check import OURS, SettingError, check_settings


def project(**given: object) -> Settings:
    settings = Settings()
    settings.setmodule("dataset_spiders.settings", priority="project")
    settings.setdict(given, priority="cmdline")
    return settings


def test_the_project_s_settings_pass_and_every_one_of_ours_is_checked():
    check_settings(project())
    marked, pending = set(), False  # "# ours" on the line, or on the comment lines just above it
    for line in Path(settings_module.__file__).read_text().splitlines():
        if line.startswith("# ours"):
            pending = True
        elif m := re.match(r"([A-Z][A-Z_0-9]*) = ", line):
            if pending or "# ours" in line:
                marked.add(m[1])
            pending = False
    assert {"IMAGES_MEMORY_BUDGET", "ISIC_MASK_ARCHIVES", "NEAR_DUPLICATE_DISTANCE"} <= marked <= set(OURS)


@pytest.mark.parametrize("given", [
    {"DOWNLOAD_TIMEOUT": "0.5"}, {"DOWNLOAD_DELAY": "0.25"}, {"CONCURRENT_REQUESTS": "4"},
    {"ISIC_MASK_ARCHIVES": ""}, {"ISIC_MASK_ARCHIVES": "http://a/x.zip,https://b/y.zip,"},
    {"REDIS_URL": "redis://127.0.0.1:6379/0"}, {"REDIS_URL": ""}, {"IMAGES_RETRY_TIMES": "2"},
    {"PROGRESS": "OFF"}, {"PLACEHOLDER_DIGESTS": "size:2051,sha1:" + "a" * 40}, {"DEDUPLICATE_IMAGES": "True"},
    {"ITEM_PIPELINES": '{"scrapy.pipelines.files.FilesPipeline": 1}'}, {"NEAR_DUPLICATE_DISTANCE": "15"},
])
def test_what_users_give_passes(given):
    check_settings(project(**given))


@pytest.mark.parametrize(("level", "becomes"), [("debug", "DEBUG"), ("Warning", "WARNING"), ("10", 10), (20, 20)])
def test_a_log_level_in_any_case_or_a_number_is_taken_as_logging_takes_it(level, becomes):
    settings = project(LOG_LEVEL=level)
    check_settings(settings)
    assert settings.get("LOG_LEVEL") == becomes


@pytest.mark.parametrize(("given", "said"), [
    ({"DATASET_LEASE": "0"}, "setting DATASET_LEASE: expected a number > 0, got '0'"),
    ({"RETRY_BACKOFF_MAX": "inf"}, "setting RETRY_BACKOFF_MAX: expected a number >= 0, got 'inf'"),
    ({"IMAGES_RETRY_TIMES": "-1"}, "setting IMAGES_RETRY_TIMES: expected empty, or a whole number >= 0, got '-1'"),
    ({"ISIC_API_URL": "ftp://x"}, "setting ISIC_API_URL: expected an http(s):// URL, got 'ftp://x'"),
    ({"DOWNLOAD_MAXSIZE": "1.5"}, "setting DOWNLOAD_MAXSIZE: expected a whole number, got '1.5'"),
    ({"RETRY_ENABLED": "maybe"}, "setting RETRY_ENABLED: expected true or false, got 'maybe'"),
    ({"DATASET_CONTACT": "me\r\nX-Evil: 1"}, "setting DATASET_CONTACT: expected a URL or an e-mail address"),
])
def test_a_wrong_value_is_one_line_naming_the_setting(given, said):
    with pytest.raises(SettingError) as refused:
        check_settings(project(**given))
    assert str(refused.value).startswith(said) and "\n" not in str(refused.value)


def test_only_the_named_settings_are_checked_for_verify_and_report():
    check_settings(project(CONCURRENT_REQUESTS="x"), ["PLACEHOLDER_DIGESTS"])
    with pytest.raises(SettingError, match="PLACEHOLDER_DIGESTS"):
        check_settings(project(PLACEHOLDER_DIGESTS="sha1:xyz"), ["PLACEHOLDER_DIGESTS"])
