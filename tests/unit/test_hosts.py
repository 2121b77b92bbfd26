"""Host health (dataset/hosts.py): when a host goes down, what its probe decides, what it cost."""

from __future__ import annotations

import pytest

from dataset_spiders.dataset import hosts as hosts_module
from dataset_spiders.dataset.hosts import HostHealth, host_of
from dataset_spiders.outcomes import HostDown, Outcome, classify, is_permanent, is_transient


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(hosts_module.time, "monotonic", clock)
    return clock


def test_a_host_is_its_scheme_host_and_port():
    assert host_of("http://Farm3.Static.Flickr.com/1/a.jpg") == "http://farm3.static.flickr.com:80"
    assert host_of("https://a.b/x") == "https://a.b:443"
    assert host_of("http://a.b:8080/x") == "http://a.b:8080"
    assert host_of("http://[::1]:81/x") == "http://::1:81"
    assert host_of("not a url") == "" and host_of(None) == "" and host_of("http://a[b/") == ""


def test_a_few_failures_in_a_row_take_a_host_down_and_an_answer_clears_them(clock):
    health = HostHealth(down_after=3, down_for=60)
    host = "http://dead:80"
    health.failed(host, "refused")
    health.failed(host, "refused")
    health.answered(host)  # any answer of its own, a 404 too: alive, the count starts again
    health.failed(host, "refused")
    health.failed(host, "refused")
    assert not health.is_down(host)
    health.failed(host, "refused")
    assert health.is_down(host) and health.down_hosts() == [host]
    with pytest.raises(HostDown, match=r"^http://dead:80 is down \(3 connection failures in a row, the last: "):
        health.admit(host)
    assert health.skip(host).startswith("3 connection failures in a row")
    assert health.ever_down() == [(host, 2, "3 connection failures in a row, the last: refused")]


def test_after_its_cool_down_one_probe_decides(clock):
    health = HostHealth(down_after=1, down_for=60)
    host = "http://flaky:80"
    health.failed(host, "timeout")
    clock.now += 59
    with pytest.raises(HostDown):
        health.admit(host)
    clock.now += 2
    health.admit(host)  # the probe goes
    with pytest.raises(HostDown):
        health.admit(host)  # the others wait for its answer
    health.failed(host, "timeout")  # the probe failed: down again, for twice as long
    clock.now += 119
    assert health.is_down(host)
    clock.now += 2
    health.admit(host)
    health.answered(host)  # back
    assert not health.is_down(host) and health.proven(host)
    health.admit(host)
    health.admit(host)


def test_a_probe_cancelled_by_its_class_filling_up_lets_the_next_request_probe(clock):
    health = HostHealth(down_after=1, down_for=5)
    health.failed("http://h:80", "refused")
    clock.now += 6
    health.admit("http://h:80")
    health.abandoned("http://h:80")
    health.admit("http://h:80")  # no HostDown: the probe did not happen, this one is it


def test_health_off_never_takes_a_host_down(clock):
    health = HostHealth(down_after=0)
    for _ in range(10):
        health.failed("http://h:80", "refused")
    health.admit("http://h:80")
    assert not health.is_down("http://h:80") and health.down_hosts() == []


def test_host_down_is_an_outcome_a_re_run_tries_again():
    outcome, detail = classify(HostDown("http://h:80", "3 connection failures in a row"))
    assert outcome == Outcome.HOST_DOWN and "http://h:80 is down" in detail
    assert is_transient(Outcome.HOST_DOWN) and not is_permanent(Outcome.HOST_DOWN)


def test_what_the_run_waits_on_is_each_hosts_downloads_and_pauses(clock):
    """Progress says what a stalled run waits on from this: downloads in flight by host (silent
    ones for how long, answered ones receiving for how long) and hosts paused until when."""
    health = HostHealth()
    health.flight_started(1, "http://slow:80")
    health.flight_started(2, "http://slow:80")
    clock.now += 4
    health.flight_started(3, "http://quick:80")
    health.flight_answered(3)
    health.flight_answered(3)  # headers once per attempt: the first answer counts
    health.paused("pausing.example", clock.now + 12, "Retry-After")
    clock.now += 2
    waits = health.in_flight()
    assert [(w.host, w.downloads, w.silent, w.silent_for, w.receiving_for) for w in waits] == [
        ("http://slow:80", 2, 2, 6.0, 0.0), ("http://quick:80", 1, 0, 0.0, 2.0)]
    assert health.paused_now() == [("pausing.example", 10.0, "Retry-After")]
    health.flight_ended(1)
    health.flight_ended(2)
    health.flight_ended(3)
    clock.now += 10
    assert health.in_flight() == [] and health.paused_now() == [] and health.pauses == {}
