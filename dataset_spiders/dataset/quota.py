"""How many images each group may still take: the one place that counts keep or reject.

The spider asks ``has_room`` before it yields an image; the commit pipeline calls ``admit``
right before the rename, so concurrency cannot race past the target; the manifest pipeline
calls ``release`` when the image's outcome is recorded. Everything that must later be shared
between processes (scrapy-redis) is behind these few methods.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass


class Quota:
    """Exact counts per group against a target, with a bounded number of images in flight.

    ``slack`` lets a few more candidates than still needed be in flight, to hedge failures
    (their late successes are surplus, never kept); ``window`` caps what is in flight.
    """

    def __init__(self, target: int | None, window: int, slack: int = 0):
        self.target = target  # None: no limit
        self.window = max(1, window)
        self.slack = max(0, slack)
        self.kept: Counter[str] = Counter()
        self.pending: Counter[str] = Counter()
        self.stalled: Counter[str] = Counter()  # in flight, but waiting for a silent host's first byte
        self.stopped = False
        self._changed = asyncio.Event()
        self._stopped = asyncio.Event()
        self._full: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def full(self, group: str = "") -> bool:
        return self.target is not None and self.kept[group] >= self.target

    def has_room(self, group: str = "") -> bool:
        """Whether one more image of ``group`` may be put in flight now. Downloads stalled on a
        silent host do not hold their class back (the window still bounds what is in flight; a
        late arrival once the class is full is surplus, never kept)."""
        if self.stopped or self.pending[group] >= self.window or self.full(group):
            return False
        moving = self.pending[group] - self.stalled[group]
        return self.target is None or self.kept[group] + moving < self.target + self.slack

    def stall(self, group: str, change: int) -> None:
        """A download of ``group`` began (+1) or stopped (-1) waiting long for a first byte."""
        self.stalled[group] = max(0, self.stalled[group] + change)
        self._changed.set()

    def poke(self) -> None:
        """Wake whoever waits for a change (a probe of a down host is due)."""
        self._changed.set()

    def reserve(self, group: str = "") -> None:
        self.pending[group] += 1

    def admit(self, group: str = "") -> bool:
        """Count one image in if the group still has room; False means surplus."""
        if self.full(group):
            return False
        self.kept[group] += 1
        if self.full(group):
            self._full[group].set()
        self._changed.set()
        return True

    def revoke(self, group: str = "") -> None:
        """Take back an admitted image (its file could not be written, or was withdrawn)."""
        if self.kept[group] > 0:
            self.kept[group] -= 1
        if not self.full(group) and group in self._full:
            self._full[group].clear()
        self._changed.set()

    def add_existing(self, group: str = "") -> None:
        """Count an image that is already in the dataset (found on disk)."""
        self.kept[group] += 1
        if self.full(group):
            self._full[group].set()
        self._changed.set()

    def observe(self, group: str, kept: int) -> None:
        """The group's count as the shared state (workers, Redis) has it now."""
        self.kept[group] = kept
        if self.full(group):
            self._full[group].set()
        elif group in self._full:
            self._full[group].clear()
        self._changed.set()

    def release(self, group: str = "") -> None:
        """An image in flight has its outcome; wake whoever waits for room."""
        if self.pending[group] > 0:
            self.pending[group] -= 1
        self._changed.set()

    def stop(self) -> None:
        """No more images may be put in flight (the run is stopping); wake whoever waits."""
        self.stopped = True
        self._stopped.set()
        self._changed.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def in_flight(self) -> int:
        return sum(self.pending.values())

    async def wait_full(self, group: str) -> None:
        """Return once ``group`` is full (used to cancel downloads it no longer needs)."""
        await self._full[group].wait()

    async def changed(self) -> None:
        """Wait for the next admit, revoke or release."""
        self._changed.clear()
        await self._changed.wait()

    async def wait_until_settled(self) -> None:
        """Wait until no image is in flight (every one yielded has its outcome recorded)."""
        while self.in_flight():
            await self.changed()

    async def wait_for_room(self, group: str = "") -> bool:
        """Wait until ``group`` has room (True), or return False once it is full."""
        while not self.has_room(group):
            if self.full(group) or self.stopped:
                return False
            await self.changed()
        return True


@dataclass
class Plan:
    """What the run means to end with, as far as it is known (progress and the summary say it)."""

    images: int | None = None  # images in the dataset for what was asked (None: not known yet)
    groups: int | None = None  # classes asked for (imagenet); None: one count for the selection
