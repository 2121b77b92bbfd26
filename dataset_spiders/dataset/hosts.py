"""Host health: a dead image host costs a few failed connections, not one timeout per URL.

Every image host (the URL's scheme, host and port; through a proxy too, as the proxy only
relays) has a state learned during the run. A connection-level failure counts against it: no
HTTP answer at all (DNS failure, refused, connect or first-byte timeout, TLS failure, a reset or
a timeout before the status line), or a 502/504 from the proxy a request went through (how a
proxy says it cannot reach the host). Any answer from the host itself, a 404 included, proves
it alive and clears its count. After ``HOSTS_DOWN_AFTER`` such failures in a row the host is
*down*: its candidates are recorded ``host_down`` without a request, until, ``HOSTS_DOWN_FOR``
seconds later, one probe request decides whether it is back (the wait doubles after each probe
that fails). A host that never answered yet gets at most ``HOSTS_UNPROVEN_CONCURRENCY``
requests at once: a probe, not a flood.

It is advisory: it decides what to try, never what is kept. With workers (``REDIS_URL``) the
down hosts are shared through Redis (``scaleout/decisions.py``), so a host one worker found down
is down for all.

It also keeps what the run is waiting on, for progress to say when nothing has come for a while:
each image download in the handler (its host, since when, whether the host has begun to answer)
and each host paused for its ``Retry-After`` (until when).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..outcomes import HostDown

logger = logging.getLogger(__name__)


def host_of(url: str | None) -> str:
    """``scheme://host:port`` of a URL (the port its scheme implies when none is given)."""
    try:
        parts = urlsplit(url or "")
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        host = (parts.hostname or "").lower()
    except ValueError:
        return ""
    if not host:
        return ""
    return f"{parts.scheme}://{host}:{port}" if port else f"{parts.scheme}://{host}"


@dataclass
class HostState:
    """What the run has learned of one host."""

    failures: int = 0  # connection-level failures in a row, since its last answer
    last_failure: str = ""  # the last of them, in words
    down_since: float | None = None  # monotonic time it went down (None: up)
    retry_at: float = 0.0  # monotonic time its next probe may go
    wait: float = 0.0  # the cool-down now in force (doubles after a failed probe)
    probing: bool = False  # its probe is in flight
    probe_failed_at: float = -1.0  # monotonic time its last probe failed
    proven: bool = False  # it has answered at least once in this run
    skipped: int = 0  # candidates recorded host_down because of it
    why_down: str = ""  # the failure that took it down, in words
    first_asked: float | None = None  # monotonic time of its first request while it had not answered yet


@dataclass
class Flight:
    """One image download in the handler (waiting for a slot, connecting, or receiving)."""

    host: str
    since: float  # monotonic time it reached the handler
    answered_at: float | None = None  # monotonic time its host began to answer (headers)


@dataclass
class Waiting:
    """The image downloads in flight on one host, as progress shows them."""

    host: str
    downloads: int
    silent: int  # of them, not answered yet
    silent_for: float  # seconds the longest-waiting silent one has waited (0: none is silent)
    receiving_for: float  # seconds the longest answered one has been receiving (0: none)


@dataclass
class HostHealth:
    """The hosts of one crawl (see the module docstring). ``down_after`` 0: health is off
    (nothing is ever down); ``unproven`` 0: no cap for hosts that have not answered yet."""

    down_after: int = 3
    down_for: float = 60.0
    unproven: int = 2
    hosts: dict[str, HostState] = field(default_factory=dict)
    cost: Counter[str] = field(default_factory=Counter)  # host -> candidates it cost (host_down)
    shared: Any = None  # with workers: publishes and reads down hosts (worker_mode.SharedHosts)
    flights: dict[int, Flight] = field(default_factory=dict)  # what the run waits on: downloads in the handler
    pauses: dict[str, tuple[float, str]] = field(default_factory=dict)  # download slot -> (until, why)

    @classmethod
    def from_settings(cls, settings: Any) -> HostHealth:
        return cls(settings.getint("HOSTS_DOWN_AFTER"), settings.getfloat("HOSTS_DOWN_FOR"),
                   settings.getint("HOSTS_UNPROVEN_CONCURRENCY"))

    @property
    def enabled(self) -> bool:
        return self.down_after > 0

    def state(self, host: str) -> HostState:
        found = self.hosts.get(host)
        if found is None:
            found = self.hosts[host] = HostState()
        return found

    def proven(self, host: str) -> bool:
        found = self.hosts.get(host)
        return found is not None and found.proven

    def is_down(self, host: str, now: float | None = None) -> bool:
        """Whether a request to ``host`` would not be made now (down, and no probe due)."""
        found = self.hosts.get(host)
        if found is None or found.down_since is None:
            return False
        return found.probing or (now if now is not None else time.monotonic()) < found.retry_at

    def probe_due(self, host: str, now: float | None = None) -> float | None:
        """For a down host: when its next probe may go (monotonic; None: it is up)."""
        found = self.hosts.get(host)
        if found is None or found.down_since is None:
            return None
        return found.retry_at

    def probe_now(self, host: str) -> None:
        """Let the next request to a down ``host`` go as its probe, before its cool-down is over
        (a class about to end short asks for it)."""
        found = self.hosts.get(host)
        if found is not None and found.down_since is not None and not found.probing:
            found.retry_at = min(found.retry_at, time.monotonic())

    def refuse_if_down(self, host: str) -> None:
        """A request to ``host`` arrives: raise HostDown if it would not be made now (see
        ``is_down``); else note when an unproven host was first asked (``silent_for``)."""
        if not host:
            return
        if self.enabled and self.is_down(host):
            raise HostDown(host, self.skip(host))
        found = self.state(host)
        if not found.proven and found.first_asked is None:
            found.first_asked = time.monotonic()

    def silent_for(self, host: str) -> float:
        """Seconds since an unproven host was first asked without answering (0: proven, or not asked)."""
        found = self.hosts.get(host)
        if found is None or found.proven or found.first_asked is None:
            return 0.0
        return time.monotonic() - found.first_asked

    def admit(self, host: str) -> None:
        """A request to ``host`` is about to go: raise HostDown unless it may (up, or its probe)."""
        if not self.enabled or not host:
            return
        found = self.hosts.get(host)
        if found is None or found.down_since is None:
            return
        if found.probing or time.monotonic() < found.retry_at:
            raise HostDown(host, self.skip(host))
        found.probing = True  # this request is the probe; the others wait for its answer
        logger.debug("Probing %s, down since %.0f s", host, time.monotonic() - found.down_since)

    def skip(self, host: str) -> str:
        """A candidate on a down host, not asked: count it; why the host is down."""
        found = self.state(host)
        found.skipped += 1
        self.cost[host] += 1
        return found.why_down

    def answered(self, host: str) -> None:
        """The host answered (any HTTP status of its own): it is alive."""
        if not host:
            return
        found = self.state(host)
        if found.down_since is not None:
            logger.info("%s answers again (it was down for %.0f s)", host, time.monotonic() - found.down_since)
            if self.shared is not None:
                self.shared.up(host)
        found.failures, found.down_since, found.probing, found.proven, found.wait = 0, None, False, True, 0.0

    def abandoned(self, host: str) -> None:
        """A request to the host ended with neither an answer nor a connection failure (cancelled:
        its class filled up, the run stops): if it was the probe, the next request probes."""
        found = self.hosts.get(host)
        if found is not None and found.probing:
            found.probing = False

    def failed(self, host: str, why: str) -> None:
        """A connection-level failure of the host (no answer of its own)."""
        if not host or not self.enabled:
            return
        found = self.state(host)
        found.failures += 1
        found.last_failure = why
        now = time.monotonic()
        if found.probing:  # the probe failed: down again, for twice as long
            found.probing, found.probe_failed_at = False, now
            found.wait = min(found.wait * 2 or self.down_for, self.down_for * 16)
            found.retry_at = now + found.wait
            logger.debug("%s is still down (%s); next probe in %.0f s", host, why, found.wait)
            return
        if found.down_since is None and found.failures >= self.down_after:
            self.mark_down(host, f"{found.failures} connection failures in a row, the last: {why}", now)

    def mark_down(self, host: str, why: str, now: float | None = None, publish: bool = True,
                  wait: float | None = None) -> None:
        """Take ``host`` down for ``wait`` seconds (its cool-down), unless it is down already."""
        found = self.state(host)
        if found.down_since is not None:
            return
        now = time.monotonic() if now is None else now
        found.down_since, found.why_down = now, why
        found.wait = wait if wait is not None else found.wait or self.down_for
        found.retry_at = now + found.wait
        logger.info("%s is down (%s): its candidates are skipped; a probe in %.0f s", host, why, found.wait)
        if publish and self.shared is not None:
            self.shared.down(host, why, found.wait)

    def down_hosts(self) -> list[str]:
        """The hosts down now."""
        return [h for h, s in self.hosts.items() if s.down_since is not None]

    def ever_down(self) -> list[tuple[str, int, str]]:
        """Every host that was down in this run: (host, candidates it cost, why), costliest first."""
        rows = [(h, self.cost[h], s.why_down) for h, s in self.hosts.items() if s.why_down]
        return sorted(rows, key=lambda row: (-row[1], row[0]))

    # --- what the run waits on (for progress) -----------------------------------------------

    def flight_started(self, key: int, host: str) -> None:
        """An image download reached the handler (``key``: the request's id while it is there)."""
        self.flights[key] = Flight(host, time.monotonic())

    def flight_answered(self, key: int) -> None:
        found = self.flights.get(key)
        if found is not None and found.answered_at is None:
            found.answered_at = time.monotonic()

    def flight_ended(self, key: int) -> None:
        self.flights.pop(key, None)

    def in_flight(self, now: float | None = None) -> list[Waiting]:
        """The downloads in flight by host, the longest silent first."""
        now = time.monotonic() if now is None else now
        by_host: dict[str, Waiting] = {}
        for flight in self.flights.values():
            found = by_host.get(flight.host)
            if found is None:
                found = by_host[flight.host] = Waiting(flight.host, 0, 0, 0.0, 0.0)
            found.downloads += 1
            if flight.answered_at is None:
                found.silent += 1
                found.silent_for = max(found.silent_for, now - flight.since)
            else:
                found.receiving_for = max(found.receiving_for, now - flight.answered_at)
        return sorted(by_host.values(), key=lambda w: (-w.silent_for, -w.downloads, w.host))

    def paused(self, name: str, until: float, why: str) -> None:
        """Requests to download slot ``name`` (a host name) wait until ``until`` (monotonic): ``why``."""
        self.pauses[name] = (until, why)

    def paused_now(self, now: float | None = None) -> list[tuple[str, float, str]]:
        """The hosts paused now: (name, seconds left, why), the longest first."""
        now = time.monotonic() if now is None else now
        for name in [n for n, (until, _) in self.pauses.items() if until <= now]:
            del self.pauses[name]
        return sorted(((n, until - now, why) for n, (until, why) in self.pauses.items()), key=lambda p: -p[1])
