"""Progress on stderr while a crawl runs, never on stdout (so piping works), shown one of three ways:

- on a terminal, a live bar (tqdm), redrawn four times a second; while it is shown, log records are
  printed above it (the bar is cleared, the record written, the bar drawn again), never glued onto it;
- elsewhere (CI, a log file), a ``Progress: …`` line every ``PROGRESS_INTERVAL`` seconds, and a last
  one with the final numbers when any was printed;
- with ``DATASET_SPIDERS_PROGRESS=json`` in the environment (the Python API's parent sets it to draw a
  notebook bar with ``tqdm.auto``), a ``progress-json: {…}`` line about every 0.5 s and one with
  ``"done": true`` and the final numbers at the end: nothing else of progress.

It reads what the dataset core and Scrapy's stats already count: images in the dataset against the
plan (those already there included), failures so far, bytes received, (imagenet) classes full and
hosts down. Rates count this run's downloads only, over the last ``WINDOW`` seconds, and are shown
once there is a second of them behind (before, ``?``): images already on disk, counted at once,
never make a rate of thousands a second. When no image has been recorded for
``PROGRESS_STALL_AFTER`` seconds it says what the run waits on instead of a rate and an ETA:
downloads on hosts that have not answered, and for how long, hosts paused for their
``Retry-After``, the source's listing. At the end the bar (or a last line) shows the final count
against the plan, without an ETA: a run whose classes ended short stays short, and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any, TextIO

from scrapy import signals
from scrapy.exceptions import NotConfigured

from ..dataset import DatasetCore
from ..dataset.hosts import Waiting
from ..downloader.encoded_images import IMAGE_META
from ..outcomes import KEPT_OUTCOMES, Outcome

logger = logging.getLogger(__name__)

NOT_FAILURES = frozenset({*KEPT_OUTCOMES, Outcome.SURPLUS})
MB = 1 << 20
ENV = "DATASET_SPIDERS_PROGRESS"  # "json": progress-json lines for the Python API's parent
JSON_PREFIX = "progress-json: "
JSON_EVERY = 0.5  # seconds between progress-json lines
BAR_EVERY = 0.25  # seconds between redraws of the bar
WINDOW = 10.0  # seconds of recent downloads a rate is measured over
MIN_SPAN = 1.0  # seconds of downloads a rate needs behind it before it is shown
HOSTS_NAMED = 3  # hosts named in what a stall waits on; the rest are counted
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
BAR_FORMAT_NO_TOTAL = "{desc}: {n_fmt} [{elapsed}{postfix}]"  # isic "every image", before the count is known
BAR_FORMAT_STALLED = "{desc}: {n_fmt}/{total_fmt} [{elapsed}{postfix}]"  # no bar: room to say what it waits on


class Progress:
    """See the module docstring. ``stream`` and ``environ`` stand in for stderr and the environment."""

    def __init__(self, crawler: Any, stream: TextIO | None = None, environ: Mapping[str, str] | None = None):
        s = crawler.settings
        mode = str(s.get("PROGRESS", "auto")).lower()
        if mode in ("off", "false", "0", "none"):
            raise NotConfigured("PROGRESS is off")
        environ = os.environ if environ is None else environ
        self.stream = stream or sys.stderr
        self.json = str(environ.get(ENV, "")).lower() == "json"
        self.bar_wanted = not self.json and (mode == "bar" or (mode == "auto" and _isatty(self.stream)))
        self.interval = max(0.2, s.getfloat("PROGRESS_INTERVAL"))
        self.stall_after = s.getfloat("PROGRESS_STALL_AFTER", 5.0)
        self.crawler = crawler
        self.core: DatasetCore | None = None
        self.task: asyncio.Task[None] | None = None
        self.bar: Any = None
        self.redirected: list[tuple[logging.StreamHandler[Any], Any]] = []  # log handlers writing above the bar
        self.started = time.monotonic()
        self.samples: deque[tuple[float, int, int]] = deque()  # (time, images downloaded now, bytes received)
        self.last_record = self.started  # when an image was last recorded (kept or not)
        self.lines = 0  # Progress: lines written
        self.finished = False
        self.stopped = False  # interrupted or failed, not finished
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)
        for signal in (signals.item_scraped, signals.item_dropped, signals.item_error):
            crawler.signals.connect(self.recorded, signal=signal)

    @classmethod
    def from_crawler(cls, crawler: Any) -> Progress:
        return cls(crawler)

    def spider_opened(self, spider: Any) -> None:
        core = self.crawler.get_extension(DatasetCore)
        if core is None or core.dry_run:  # a dry run downloads nothing: nothing to show
            return
        self.core = core
        self.started = self.last_record = time.monotonic()
        self.samples.clear()
        self.samples.append((self.started, 0, 0))
        self.task = asyncio.get_running_loop().create_task(self._run())

    def recorded(self, *args: Any, **kwargs: Any) -> None:
        self.last_record = time.monotonic()

    def spider_closed(self, spider: Any, reason: str = "finished") -> None:
        """The final numbers, once: the bar drawn at the final count (no ETA) and closed, a last
        line if lines were printed, the last progress-json line with ``done``."""
        if self.task is not None:
            self.task.cancel()
        if self.core is None or self.finished:
            return
        self.finished = True
        self.stopped = reason != "finished" or self.core.fatal_error is not None
        try:
            n = self.numbers(done=True)
            if self.bar_wanted:
                self.draw(n)
            elif self.json:
                self.emit_json(n)
            elif self.lines:
                self.write(self.line(n))
        except Exception:  # progress is a view: never a reason to fail the run
            logger.warning("Progress display failed", exc_info=True)
        finally:
            self.close_bar()

    async def _run(self) -> None:
        tick = BAR_EVERY if self.bar_wanted else JSON_EVERY if self.json else min(self.interval, 1.0)
        next_line = self.started + self.interval
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(tick)
                try:
                    n = self.numbers()
                    if self.bar_wanted:
                        self.draw(n)
                    elif self.json:
                        self.emit_json(n)
                    elif time.monotonic() >= next_line - 0.01:
                        self.write(self.line(n))
                        next_line = max(next_line + self.interval, time.monotonic())
                except Exception:  # progress is a view: never a reason to stop the run, but say why it went
                    logger.warning("Progress display stopped", exc_info=True)
                    self.close_bar()
                    return

    # --- the numbers ----------------------------------------------------------------------------

    def numbers(self, done: bool = False) -> dict[str, Any]:
        """Images in the dataset, the plan, failures, bytes, classes full of classes planned, hosts
        down, seconds since the spider opened, whether the run is over: what progress-json says.
        Each call is also a sample for the rates."""
        core, stats = self.core, self.crawler.stats
        assert core is not None
        counts = {k[len("outcome/"):]: v for k, v in stats.get_stats().items() if k.startswith("outcome/")}
        kept = sum(core.quota.kept.values()) if core.quota.target is not None else sum(
            counts.get(o, 0) for o in KEPT_OUTCOMES)
        target = core.plan.images
        now = time.monotonic()
        received = stats.get_value("downloader/response_bytes", 0) or 0
        self.sample(now, counts.get(Outcome.KEPT, 0), received)
        return {
            "kept": min(kept, target) if target is not None else kept,
            "target": target,
            "failed": sum(v for k, v in counts.items() if k not in NOT_FAILURES),
            "bytes": received,
            "groups_done": sum(1 for n in core.quota.kept.values() if core.quota.target and n >= core.quota.target),
            "groups": core.plan.groups,
            "hosts_down": len(core.hosts.down_hosts()),
            "elapsed": round(now - self.started, 3),
            "done": done,
        }

    def sample(self, now: float, downloaded: int, received: int) -> None:
        self.samples.append((now, downloaded, received))
        while len(self.samples) > 2 and now - self.samples[1][0] >= WINDOW:
            self.samples.popleft()

    def rates(self) -> tuple[float | None, float | None]:
        """Images downloaded now per second and bytes per second, over the last ``WINDOW`` seconds;
        None until ``MIN_SPAN`` seconds of the run are behind (lines: or one ``PROGRESS_INTERVAL``)."""
        (then, downloaded, received), (now, downloaded_now, received_now) = self.samples[0], self.samples[-1]
        span = now - then
        if span < (MIN_SPAN if self.bar_wanted or self.json else min(MIN_SPAN, self.interval)):
            return None, None
        return max(0.0, (downloaded_now - downloaded) / span), max(0.0, (received_now - received) / span)

    def stalled_for(self, n: dict[str, Any]) -> float | None:
        """Seconds since an image was last recorded, when that is ``PROGRESS_STALL_AFTER`` or more
        and the run is still going (else None)."""
        quiet = time.monotonic() - self.last_record
        if n["done"] or self.stall_after <= 0 or quiet < self.stall_after:
            return None
        return quiet

    def waiting(self, quiet: float) -> str:
        """What a stalled run waits on, in words."""
        core = self.core
        assert core is not None
        now = time.monotonic()
        flights = core.hosts.in_flight(now)
        queued, listing = self._requests_outside_the_handler(core)
        parts = []
        if flights:
            total = sum(w.downloads for w in flights)
            if len(flights) == 1:
                parts.append(f"{_count(total, 'download')} on {_host(flights[0].host)} ({_state(flights[0])})")
            else:
                named = ", ".join(f"{_host(w.host)} ({w.downloads}, {_state(w)})" for w in flights[:HOSTS_NAMED])
                more = f" and {len(flights) - HOSTS_NAMED} more" if len(flights) > HOSTS_NAMED else ""
                parts.append(f"{_count(total, 'download')} on {len(flights)} hosts: {named}{more}")
        for name, left, why in core.hosts.paused_now(now)[:HOSTS_NAMED]:
            held = f", {_count(queued[name], 'request')} held" if queued.get(name) else ""
            pause = "its Retry-After" if why == "Retry-After" else "backing off"
            parts.append(f"{name} paused {format_seconds(math.ceil(left))} more ({pause}{held})")
        if listing:
            parts.append(f"{_count(listing, 'request')} to the source")
        if not parts:
            down = [core.hosts.probe_due(h) for h in core.hosts.down_hosts()]
            due = [t - now for t in down if t is not None]
            if due:
                probe = format_seconds(math.ceil(max(0, min(due))))
                parts.append(f"{_count(len(down), 'host')} down, the next probe in {probe}")
            else:
                parts.append("nothing in flight")
        return f"waiting {format_seconds(quiet)}: " + "; ".join(parts)

    def _requests_outside_the_handler(self, core: DatasetCore) -> tuple[Counter[str], int]:
        """Image requests held in a download slot (by slot: a paused host's), and requests to the
        source (API pages, URL lists) in flight."""
        queued: Counter[str] = Counter()
        listing = 0
        try:
            downloader = self.crawler.engine.downloader
        except (AttributeError, RuntimeError):  # no engine (yet): nothing in flight
            return queued, listing
        for request in list(downloader.active):
            if not request.meta.get(IMAGE_META):
                listing += 1
            elif id(request) not in core.hosts.flights:
                queued[downloader.get_slot_key(request)] += 1
        return queued, listing

    # --- the ways to show them --------------------------------------------------------------------

    def line(self, n: dict[str, Any]) -> str:
        of = f"/{n['target']}" if n["target"] is not None else ""
        head = f"Progress: {n['kept']}{of} images"
        per_s, bytes_s = self.rates()
        quiet = None if n["done"] else self.stalled_for(n)
        size = f"{n['bytes'] / MB:.1f} MB"
        if n["done"]:
            average = self.average(n)
            size += f" in {format_seconds(n['elapsed'])}" + (f" ({average:.1f} img/s)" if average is not None else "")
        elif quiet is None:
            head += f" at {per_s:.1f}/s" if per_s is not None else ""
            size += f" at {bytes_s / MB:.2f} MB/s" if bytes_s is not None else ""
        parts = [head, f"{n['failed']} failed", size, *self._classes_and_hosts(n)]
        if n["done"]:
            parts.append(self._ending(n))
        elif quiet is not None:
            parts.append(self.waiting(quiet))
        elif (eta := self.eta(n, per_s)) is not None:
            parts.append(f"ETA {format_seconds(eta)}")
        return ", ".join(parts)

    def write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
        self.lines += 1

    def emit_json(self, n: dict[str, Any]) -> None:
        self.stream.write(JSON_PREFIX + json.dumps(n, separators=(", ", ": ")) + "\n")
        self.stream.flush()

    def draw(self, n: dict[str, Any]) -> None:
        total = n["target"]
        bar_format = BAR_FORMAT if total else BAR_FORMAT_NO_TOTAL
        per_s, bytes_s = self.rates()
        quiet = None if n["done"] else self.stalled_for(n)
        if n["done"]:
            average = self.average(n)
            parts = [f"{average:.1f} img/s" if average is not None else None, f"{n['failed']} failed",
                     f"{n['bytes'] / MB:.1f} MB", *self._classes_and_hosts(n), self._ending(n)]
        elif quiet is not None:  # what it waits on first, where a narrow terminal still shows it
            bar_format = BAR_FORMAT_STALLED if total else BAR_FORMAT_NO_TOTAL
            parts = [self.waiting(quiet), f"{n['failed']} failed", f"{n['bytes'] / MB:.1f} MB",
                     *self._classes_and_hosts(n)]
        else:
            eta = self.eta(n, per_s)
            speed = f" at {bytes_s / MB:.2f} MB/s" if bytes_s is not None else ""
            parts = [f"{per_s:.1f} img/s" if per_s is not None else "? img/s",
                     f"ETA {format_seconds(eta)}" if eta is not None else None,
                     f"{n['failed']} failed", f"{n['bytes'] / MB:.1f} MB{speed}", *self._classes_and_hosts(n)]
        postfix = ", ".join(p for p in parts if p)
        if self.bar is None:
            self.open_bar(n["kept"], total, bar_format, postfix)
            return
        bar = self.bar
        bar.bar_format, bar.total, bar.n = bar_format, total, n["kept"]
        bar.set_postfix_str(postfix, refresh=False)
        bar.refresh()

    def open_bar(self, kept: int, total: int | None, bar_format: str, postfix: str) -> None:
        """The bar, drawn at once as it is, and the console log handlers writing above it from now on."""
        from tqdm import tqdm  # only on a terminal

        # a terminal that says it is 0 by 0 (a new pseudo-terminal) would show nothing: 100 by 24
        width, height = terminal_size(self.stream)
        self.bar = tqdm(total=total, initial=kept, unit="img", file=self.stream, dynamic_ncols=bool(width),
                        ncols=None if width else 100, nrows=None if height else 24, leave=True, desc="images",
                        bar_format=bar_format, postfix=postfix, mininterval=0, delay=1e-9)  # not drawn yet
        # the clock of the run, not of the bar: [elapsed] counts from the spider's start
        self.bar.start_t = self.bar.last_print_t = self.bar._time() - (time.monotonic() - self.started)
        self.bar.delay = 0  # drawn from now on (and closed with its last state left on the screen)
        self.bar.refresh()
        for handler in logging.getLogger().handlers:
            if (isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
                    and _same_stream(handler.stream, self.stream)):
                self.redirected.append((handler, handler.setStream(AboveTheBar(self.stream, tqdm))))

    def close_bar(self) -> None:
        for handler, stream in self.redirected:
            if stream is not None:
                handler.setStream(stream)
        self.redirected = []
        if self.bar is not None:
            with contextlib.suppress(Exception):
                self.bar.close()
            self.bar = None

    # --- the words ------------------------------------------------------------------------------

    def eta(self, n: dict[str, Any], per_s: float | None) -> float | None:
        if n["target"] is None or not per_s or n["kept"] >= n["target"]:
            return None
        left: int = n["target"] - n["kept"]
        return left / per_s

    def average(self, n: dict[str, Any]) -> float | None:
        """Images downloaded by this run per second of it (None for a run under a second)."""
        downloaded = self.samples[-1][1]
        return downloaded / n["elapsed"] if n["elapsed"] >= MIN_SPAN else None

    def _classes_and_hosts(self, n: dict[str, Any]) -> list[str]:
        parts = [f"classes {n['groups_done']}/{n['groups']}"] if n["groups"] else []
        if n["hosts_down"]:
            parts.append(f"{n['hosts_down']} host(s) down")
        return parts

    def _ending(self, n: dict[str, Any]) -> str:
        if self.stopped:
            return "stopped: see below"  # interrupted, or failed: the summary and the error line say why
        if n["target"] is None or n["kept"] >= n["target"]:
            return "done"
        if n["groups"]:
            return f"ended short ({n['groups'] - n['groups_done']} of {n['groups']} classes): see the summary"
        return f"ended {n['target'] - n['kept']} short: see the summary"


class AboveTheBar:
    """A console log handler's stream while the bar is shown: each record clears the bar, is
    written, and the bar is drawn again below it (tqdm's lock keeps threads from interleaving)."""

    def __init__(self, stream: TextIO, bar_class: Any):
        self.stream = stream
        self.bar_class = bar_class

    def write(self, text: str) -> int:
        with self.bar_class.external_write_mode(file=self.stream):
            written = self.stream.write(text)
            self.stream.flush()
        return written

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def terminal_size(stream: TextIO) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return 0, 0
    return size.columns, size.lines


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _same_stream(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a.fileno() == b.fileno())
    except (AttributeError, OSError, ValueError):
        return False


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _host(origin: str) -> str:
    """``http://a.example:80`` as ``a.example``, ``http://127.0.0.1:8080`` as ``127.0.0.1:8080``."""
    for scheme, port in (("http://", ":80"), ("https://", ":443")):
        if origin.startswith(scheme):
            rest = origin[len(scheme):]
            return rest[: -len(port)] if rest.endswith(port) else rest
    return origin or "(no host)"


def _state(w: Waiting) -> str:
    """How the downloads on one host are doing: none answered, all receiving, or some of each."""
    if w.silent == w.downloads:
        return f"no answer for {format_seconds(w.silent_for)}"
    if not w.silent:
        return f"receiving for {format_seconds(w.receiving_for)}"
    return f"{w.silent} with no answer for {format_seconds(w.silent_for)}"
