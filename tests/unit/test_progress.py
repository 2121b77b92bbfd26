"""The words and numbers of progress (extensions/progress.py), from a crawl's state made by hand:
what a stalled run says it waits on, the progress-json line, the last line of a run."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
from scrapy import Request
from scrapy.settings import Settings
from scrapy.signalmanager import SignalManager
from scrapy.statscollectors import MemoryStatsCollector

from dataset_spiders import settings as project_settings
from dataset_spiders.dataset.hosts import HostHealth
from dataset_spiders.dataset.quota import Plan, Quota
from dataset_spiders.downloader.encoded_images import IMAGE_META
from dataset_spiders.extensions import progress as progress_module
from dataset_spiders.extensions.progress import Progress
from tests.unit.test_hosts import Clock


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)  # the same time module as dataset/hosts.py's
    return clock


class Downloader:
    def __init__(self, active: list[Request]):
        self.active = set(active)

    def get_slot_key(self, request: Request) -> str:
        return request.url.split("/")[2]


def made(environ: dict[str, str] | None = None, active: tuple[Request, ...] = (),
         **settings: object) -> tuple[Progress, io.StringIO]:
    s = Settings()
    s.setmodule(project_settings)
    s.setdict({"PROGRESS": "lines", **settings}, priority="cmdline")
    engine = SimpleNamespace(downloader=Downloader(list(active)))
    crawler = SimpleNamespace(settings=s, signals=SignalManager(), engine=engine)
    crawler.stats = MemoryStatsCollector(crawler)
    stream = io.StringIO()
    progress = Progress(crawler, stream=stream, environ=environ or {})
    quota = Quota(4, 8)
    progress.core = SimpleNamespace(quota=quota, plan=Plan(8, 2), hosts=HostHealth(), fatal_error=None, dry_run=False)
    progress.started = progress.last_record = progress_module.time.monotonic()
    progress.samples.append((progress.started, 0, 0))
    return progress, stream


def test_a_stalled_run_names_the_silent_hosts_the_paused_ones_and_the_source(clock):
    held = Request("http://paused.example/1.jpg", meta={IMAGE_META: True})  # in its slot, not in the handler
    listing = Request("http://api.example/search")
    progress, _ = made(active=(held, listing), PROGRESS_STALL_AFTER=5)
    hosts = progress.core.hosts
    hosts.flight_started(1, "http://silent.example:80")
    hosts.flight_started(2, "http://silent.example:80")
    hosts.flight_started(3, "https://slow.example:443")
    hosts.flight_answered(3)
    hosts.paused("paused.example", clock.now + 20, "Retry-After")
    clock.now += 4
    progress.crawler.stats.set_value("outcome/kept", 3)
    assert "waiting" not in progress.line(progress.numbers())  # 4 s: not yet
    clock.now += 2
    line = progress.line(progress.numbers())
    assert line == ("Progress: 0/8 images, 0 failed, 0.0 MB, classes 0/2, waiting 6s: 3 downloads on 2 hosts: "
                    "silent.example (2, no answer for 6s), slow.example (1, receiving for 6s); paused.example "
                    "paused 14s more (its Retry-After, 1 request held); 1 request to the source")


def test_nothing_in_flight_but_hosts_down_says_when_the_next_probe_goes(clock):
    progress, _ = made(PROGRESS_STALL_AFTER=1)
    progress.core.hosts.mark_down("http://gone.example:80", "refused", wait=30)
    clock.now += 10
    assert progress.line(progress.numbers()).endswith(
        "1 host(s) down, waiting 10s: 1 host down, the next probe in 20s")


def test_a_progress_json_line_has_the_numbers_the_parent_draws_and_the_last_says_done(clock):
    progress, stream = made(environ={"DATASET_SPIDERS_PROGRESS": "json"})
    assert progress.json and not progress.bar_wanted
    progress.core.quota.kept.update({"a": 4, "b": 2})
    progress.crawler.stats.set_value("outcome/kept", 6)
    progress.crawler.stats.set_value("outcome/http_404", 2)
    progress.crawler.stats.set_value("downloader/response_bytes", 12345)
    clock.now += 1.5
    progress.emit_json(progress.numbers())
    progress.spider_closed(None)
    lines = stream.getvalue().splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == ["progress-json"] * 2
    first, last = (json.loads(line.split(": ", 1)[1]) for line in lines)
    assert first == {"kept": 6, "target": 8, "failed": 2, "bytes": 12345, "groups_done": 1, "groups": 2,
                     "hosts_down": 0, "elapsed": 1.5, "done": False}
    assert last == {**first, "done": True}


def test_the_last_line_of_a_short_run_says_so_and_a_stopped_one_says_stopped(clock):
    progress, stream = made()
    progress.core.quota.kept.update({"a": 4, "b": 2})
    progress.crawler.stats.set_value("outcome/kept", 6)
    progress.lines = 1  # it printed lines: it prints the last one
    clock.now += 3
    progress.spider_closed(None)
    assert stream.getvalue() == ("Progress: 6/8 images, 0 failed, 0.0 MB in 3s (2.0 img/s), classes 1/2, "
                                 "ended short (1 of 2 classes): see the summary\n")
    stopped, stream = made()
    stopped.lines = 1
    stopped.spider_closed(None, "shutdown")
    assert stream.getvalue().endswith(", classes 0/2, stopped: see below\n")
