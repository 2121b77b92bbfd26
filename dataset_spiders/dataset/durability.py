"""Group commit: checked images reach their final names in batches, made durable once per batch.

An ``fsync`` per file cost more CPU than the rest of the crawl. Here each batch (up to
``DATASET_COMMIT_BATCH`` images, or what ``DATASET_COMMIT_DELAY`` seconds gathered) goes:

1. an intent line per image (``committing``, with its path, size and sha256) is appended to
   the journal, ``.staging/committing.jsonl``, and made durable (one ``fdatasync``, which also
   makes durable the manifest lines written so far);
2. the staged files are renamed into place;
3. their file systems are synced (one ``syncfs`` each): bytes and names are on disk;
4. only now may their ``kept`` lines be written (the record stage does it).

So a ``kept`` line exists only for bytes known to be on disk, and a file under a final name
always has at least its intent line: ``verify --fix`` never takes it for junk. The journal is
deleted when a run ends cleanly (its manifest is then durable); after a crash it stays until
the next clean end. A power cut can cost the batch in flight: the next run finds its files
(by name), decodes each in full, and keeps or replaces it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass

from .files import move_into_place, sync_filesystem
from .manifest import ManifestWriter, Record


@dataclass
class _Pending:
    staged: str
    final: str
    intent: Record
    done: asyncio.Future[None]


class GroupCommit:
    """Renames staged files into place in durable batches; ``commit`` returns once its file is."""

    def __init__(
        self, writer: ManifestWriter, journal: ManifestWriter, staging_of: Callable[[str], str], batch: int,
        delay: float,
    ):
        self.writer = writer  # the manifest
        self.journal = journal  # the intent lines
        self.staging_of = staging_of  # final path -> the staging folder on its file system
        self.batch = max(1, batch)
        self.delay = max(0.0, delay)
        self._queue: list[_Pending] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: asyncio.Task[None] | None = None

    async def commit(self, staged: str, final: str, intent: Record) -> None:
        """Rename ``staged`` to ``final`` as part of a batch; raises OSError if that batch failed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(staged, final, intent, done))
        if len(self._queue) >= self.batch:
            self._start()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._start)
        await done

    async def drain(self) -> None:
        """Commit whatever is queued now (the run is ending)."""
        while self._queue or self._running:
            if self._running:
                await asyncio.shield(self._running)
            else:
                self._start()

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._running is not None or not self._queue:
            return  # the running batch starts the next one when it ends
        batch, self._queue = self._queue[: self.batch], self._queue[self.batch :]
        self._running = asyncio.ensure_future(self._run(batch))

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            errors: list[Exception | None] = list(await asyncio.to_thread(self._commit_batch, batch))
        except Exception as exc:  # the journal could not be written (or a bug): the whole batch fails
            errors = [exc] * len(batch)
        for pending, error in zip(batch, errors, strict=True):
            if not pending.done.done():
                if error is None:
                    pending.done.set_result(None)
                else:
                    pending.done.set_exception(error)
        self._running = None
        if len(self._queue) >= self.batch:
            self._start()
        elif self._queue and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._start)

    def _commit_batch(self, batch: list[_Pending]) -> list[Exception | None]:
        """Steps 1-3 above. Blocking (a worker thread)."""
        for pending in batch:
            self.journal.write(pending.intent)
        self.writer.sync()
        self.journal.sync()
        errors: list[Exception | None] = []
        for pending in batch:
            try:
                move_into_place(pending.staged, pending.final)
                errors.append(None)
            except (OSError, ValueError) as exc:
                errors.append(exc)
        for staging in {self.staging_of(p.final) for p, e in zip(batch, errors, strict=True) if e is None}:
            sync_filesystem(staging if os.path.isdir(staging) else os.path.dirname(staging))
        return errors
