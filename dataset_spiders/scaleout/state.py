"""The shared state of many workers on one dataset, in Redis (``REDIS_URL``).

What one process keeps in memory (the counts per group, the candidates handed out, the digests
of kept images, the learned placeholders) lives here in Redis, changed only by the Lua scripts
of ``scaleout/scripts.py``, so that admitting an image is one atomic step whatever the other
workers do. The disk stays the truth: this state can always be rebuilt from it (``rebuild``),
and it is, when a first worker starts, and when Redis comes back empty (its ``epoch`` is gone).

A worker holds a lease (``DATASET_LEASE`` seconds, renewed a few times per lease); a worker
whose lease ran out and whose staging folder is no longer locked is dead, and its share is
given back by whoever notices (``reap``). Redis out of reach: every call waits and retries,
with one warning, for up to ``REDIS_RETRY_FOR`` seconds, then the run stops (``SharedGone``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from ..dataset.decisions import FENCED, SharedGone
from . import scripts as lua
from .rebuild import BATCH_DELAY, Hooks, Rebuilt, reference, safe_url, text, write_state

__all__ = ["Hooks", "Rebuilt", "SharedGone", "SharedState", "reference", "text"]

logger = logging.getLogger(__name__)




class SharedState:
    """One worker's handle on the shared state; see the module docstring."""

    def __init__(self, url: str, prefix: str, worker: str, staging: str, lease: float, retry_for: float):
        import redis.asyncio  # only with REDIS_URL: a single process needs no Redis at all

        self.url, self.prefix, self.worker, self.staging = url, prefix, worker, staging
        self.lease, self.retry_for = max(0.2, lease), max(0.0, retry_for)
        self.redis = redis.asyncio.Redis.from_url(url, socket_timeout=max(2.0, self.lease), socket_connect_timeout=2.0)
        self._errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
        self._refused = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError,
                         redis.exceptions.NoPermissionError, redis.exceptions.ReadOnlyError)
        self.scripts = {name: self.redis.register_script(lua.once_per_call(getattr(lua, name))) for name in
                        ("TAKE", "ADMIT", "SETTLE", "REVOKE", "PRESENT", "REAP", "ENQUEUE", "DEQUEUE")}
        self._calls = itertools.count()
        self.valid_until = 0.0  # monotonic time until which this worker's lease is known to hold
        self.fenced = False
        self.on_fenced: Callable[[], None] | None = None  # told once, when this worker learns it
        self._silent: dict[str, float] = {}  # workers seen with their lease out but their folder held: since
        # a call's answer is kept while it may be sent again: as long as a retry may go on
        self.answer_ms = int(1000 * max(60.0, 2 * self.retry_for))
        self.epoch = ""
        self.hooks: Hooks | None = None
        self.rebuilds = 0  # epochs this worker joined after the first (Redis came back empty)
        self._rejoin: asyncio.Task[None] | None = None
        self._down_since: float | None = None  # when Redis stopped answering (None: it answers)
        self.gone: str | None = None  # why this worker gave up on Redis
        self._tasks: list[asyncio.Task[None]] = []
        self._batches: dict[str, list[tuple[tuple[Any, ...], asyncio.Future[list[Any]]]]] = {}

    # --- calls ---------------------------------------------------------------------------------

    async def _retrying(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """``call()``, retried with a bounded back-off while Redis is out of reach. The outage is
        timed once for all calls: past ``REDIS_RETRY_FOR`` every call fails at once, the same way."""
        loop = asyncio.get_running_loop()
        delay = 0.1
        while True:
            if self.gone:
                raise SharedGone(self.gone)
            try:
                result = await call()
            except self._refused as exc:  # waiting would not help: say so now
                self.gone = f"Redis at {safe_url(self.url)} refused this worker: {exc}"
                raise SharedGone(self.gone) from None
            except self._errors as exc:
                now = loop.time()
                if self._down_since is None:
                    self._down_since = now
                    logger.warning("Redis at %s is out of reach (%s); pausing, and retrying for up to %.0f s",
                                   safe_url(self.url), exc, self.retry_for)
                if now - self._down_since >= self.retry_for:
                    self.gone = (f"Redis at {safe_url(self.url)} was out of reach for {self.retry_for:.0f} s "
                                 f"({type(exc).__name__}); stopping (nothing on disk is lost)")
                    raise SharedGone(self.gone) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if self._down_since is not None:
                down = loop.time() - self._down_since
                logger.warning("Redis at %s answers again after %.1f s", safe_url(self.url), down)
                self._down_since = None  # one line for the outage, however many calls waited it out
            return result

    async def run(self, name: str, *args: Any) -> list[Any]:
        """Run a script with this epoch; when Redis lost it, rejoin (drain, rebuild) and run it again."""
        while True:
            call = self.new_call()
            answer = await self._retrying(partial(self.scripts[name], args=[self.prefix, self.epoch, *args, *call]))
            answer = [a.decode() if isinstance(a, bytes) else a for a in answer]
            if answer[0] == "fenced":
                raise self._fenced()
            if answer[0] != "epoch":
                return answer
            await self.rejoin()

    async def run_many(self, name: str, calls: list[tuple[Any, ...]]) -> list[list[Any]]:
        """Run a script once per argument tuple, in one round trip (a pipeline, not a transaction:
        each call is atomic on its own); a call that met a lost epoch runs again after the rejoin."""
        script = self.scripts[name]
        ids = [self.new_call() for _ in calls]  # the same for each call however often it is sent

        async def send() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for args, call in zip(calls, ids, strict=True):
                    await script(args=[self.prefix, self.epoch, *args, *call], client=pipe)
                return await pipe.execute()

        answers = [[a.decode() if isinstance(a, bytes) else a for a in answer] for answer in await self._retrying(send)]
        if any(answer[0] == "fenced" for answer in answers):
            raise self._fenced()
        for i, answer in enumerate(answers):
            if answer[0] == "epoch":
                answers[i] = await self.run(name, *calls[i])
        return answers

    async def batched(self, name: str, *args: Any) -> list[Any]:
        """``run``, sent together with the calls made within ``BATCH_DELAY`` (one round trip for
        many; each script still runs atomically on its own, in the order called)."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        queue = self._batches.setdefault(name, [])
        queue.append((args, future))
        if len(queue) == 1:
            asyncio.get_running_loop().call_later(BATCH_DELAY, self._send_batch, name)
        return await future

    def _send_batch(self, name: str) -> None:
        queue = self._batches.pop(name, [])

        async def send() -> None:
            try:
                answers = await self.run_many(name, [args for args, _ in queue])
            except BaseException as exc:  # SharedGone, or the run is ending
                for _, future in queue:
                    if not future.done():
                        future.set_exception(exc)
                return
            for (_, future), answer in zip(queue, answers, strict=True):
                if not future.done():
                    future.set_result(answer)

        task = asyncio.get_running_loop().create_task(send())
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    def key(self, name: str) -> str:
        return self.prefix + name

    def new_call(self) -> tuple[str, int]:
        """A state-changing call's id and how long its answer is kept (``scripts.once_per_call``)."""
        return f"{self.worker}:{next(self._calls)}", self.answer_ms

    # --- joining -------------------------------------------------------------------------------

    async def agree(self, terms: str) -> str | None:
        """Make ``terms`` the run's, unless a live worker runs on others: then theirs (``AGREE``)."""
        answer = await self._retrying(lambda: self.redis.eval(lua.AGREE, 0, self.prefix, self.worker, terms))
        return answer.decode() if isinstance(answer, bytes) else None

    async def others_alive(self) -> bool:
        """Whether another worker of these keys holds a lease now."""
        for raw in await self._retrying(lambda: self.redis.hkeys(self.key("workers"))):
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            if name != self.worker and await self._retrying(partial(self.redis.exists, self.key(f"alive:{name}"))):
                return True
        return False

    async def forget_epoch(self) -> None:
        """The first worker of a folder does not trust what Redis holds: it is rebuilt from disk."""
        await self._retrying(lambda: self.redis.delete(self.key("epoch")))

    async def join(self, hooks: Hooks) -> None:
        """Enter the shared state: join its epoch, or rebuild it from disk when there is none."""
        self.hooks = hooks
        await self._enter()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._heartbeat()))

    async def rejoin(self) -> None:
        """Redis lost this epoch: drain, then join the next one (one rejoin at a time)."""
        if self._rejoin is None or self._rejoin.done():
            self._rejoin = asyncio.get_running_loop().create_task(self._rejoin_now())
        await asyncio.shield(self._rejoin)

    async def _rejoin_now(self) -> None:
        logger.warning("Redis lost the shared state (restarted empty?); finishing the images in hand and "
                       "recounting from disk before anything more is admitted")
        assert self.hooks is not None
        await self.hooks.drain()
        self.rebuilds += 1
        await self._enter()

    async def _enter(self) -> None:
        assert self.hooks is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            epoch = await self._retrying(lambda: self.redis.get(self.key("epoch")))
            if epoch:
                self.epoch = epoch.decode()
                await self._register()
                return
            await self._retrying(lambda: self.redis.sadd(self.key("drained"), self.worker))
            if await self._retrying(self._claim_rebuild):
                await self._rebuild(started)
                continue
            if loop.time() - started > max(self.retry_for, 3 * self.lease):
                raise SharedGone("the shared state was not rebuilt in time (another worker holds the rebuild); "
                                 "stopping")
            await asyncio.sleep(0.1)

    async def _rebuild(self, started: float) -> None:
        """This worker rebuilds the state from disk, once every live peer has drained."""
        assert self.hooks is not None
        loop = asyncio.get_running_loop()
        while True:
            drained = {m.decode() for m in await self._retrying(lambda: self.redis.smembers(self.key("drained")))}
            waiting = [peer for peer in self.hooks.live_peers() if peer not in drained]
            if not waiting:
                break
            if loop.time() - started > max(self.retry_for, 3 * self.lease):
                raise SharedGone(f"the workers {', '.join(waiting[:3])} hold this dataset but do not answer on "
                                 f"Redis at {safe_url(self.url)}: give every worker the same REDIS_URL")
            await self._retrying(lambda: self.redis.pexpire(self.key("rebuilding"), int(self.lease * 2000)))
            await asyncio.sleep(0.1)
        keeper = loop.create_task(self._keep_claim())
        try:
            truth = await self.hooks.recount()
        finally:
            keeper.cancel()
        epoch = uuid.uuid4().hex

        async def write() -> None:
            await write_state(self.redis, self.prefix, truth, epoch, self.worker)

        await self._retrying(write)
        if truth.withdraw:  # kept copies of what the recount found to be a placeholder (after this rebuild)
            self._tasks.append(asyncio.get_running_loop().create_task(self.hooks.withdraw(truth.withdraw)))
        logger.info("Rebuilt the shared state from disk: %d image(s) counted in %d group(s)",
                    sum(len(v) for v in truth.counted.values()), len(truth.counted))

    async def _claim_rebuild(self) -> Any:
        return await self.redis.eval(lua.CLAIM_REBUILD, 0, self.prefix, self.worker, int(self.lease * 2000))

    async def _keep_claim(self) -> None:
        """The rebuild role stays this worker's while it recounts (a big dataset takes a while)."""
        while True:
            await asyncio.sleep(self.lease / 2)
            with contextlib.suppress(*self._errors):
                await self.redis.pexpire(self.key("rebuilding"), int(self.lease * 2000))

    async def _register(self) -> None:
        async def register() -> None:
            sent = time.monotonic()
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(self.key("workers"), self.worker, self.staging)
                pipe.set(self.key(f"alive:{self.worker}"), "1", px=int(self.lease * 1000))
                await pipe.execute()
            self.valid_until = sent + self.lease

        await self._retrying(register)

    # --- leases --------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Renew the lease; notice a lost epoch; give back the share of dead workers."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                epoch = await self._retrying(self._renew)
                if epoch is None or epoch.decode() != self.epoch:
                    await self.rejoin()
                await self.reap()
            except SharedGone:
                return  # the next call of the crawl fails the run, with the same message
            except Exception:
                logger.exception("The lease keeper failed; it starts again")

    async def _renew(self) -> bytes | None:
        sent = time.monotonic()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hexists(self.key("workers"), self.worker)
            pipe.set(self.key(f"alive:{self.worker}"), "1", px=int(self.lease * 1000))
            pipe.get(self.key("epoch"))
            member, _, epoch = await pipe.execute()
        if epoch is not None and epoch.decode() == self.epoch and not member:
            raise self._fenced()
        self.valid_until = sent + self.lease
        return epoch  # type: ignore[no-any-return]

    def lease_holds(self) -> bool:
        """Whether this worker's lease is known to hold now (its lines may be written)."""
        return not self.fenced and time.monotonic() < self.valid_until

    def _fenced(self) -> SharedGone:
        if not self.fenced:
            self.fenced = True
            if self.on_fenced is not None:
                self.on_fenced()
        return SharedGone(FENCED)

    async def reap(self) -> None:
        """Give back the share of every worker whose lease ran out and whose staging folder is free."""
        assert self.hooks is not None
        workers = await self._retrying(lambda: self.redis.hgetall(self.key("workers")))
        for raw, staging in workers.items():
            worker = raw.decode()
            alive = self.key(f"alive:{worker}")
            if worker == self.worker or await self._retrying(partial(self.redis.exists, alive)):
                continue
            found = await self._retrying(partial(self.redis.hgetall, self.key(f"held:{worker}")))
            held = {k.decode(): v.decode() for k, v in found.items()}
            on_disk = await self.hooks.reap_dead(worker, staging.decode(), held)
            if on_disk is None:  # its folder is locked: alive, only slow to renew, or frozen
                now = asyncio.get_running_loop().time()
                silent_since = self._silent.setdefault(worker, now)
                if self.hooks.fence is None or now - silent_since < 2 * self.lease:
                    continue
                logger.warning("Worker %s has not renewed its lease for %.0f s though it holds its folder "
                               "(frozen?): fencing it off and taking its share over", worker,
                               now - silent_since + self.lease)
                on_disk = await self.hooks.fence(worker, held)
            self._silent.pop(worker, None)
            answer = await self.run("REAP", worker, *on_disk)
            if answer[0] == "ok":
                logger.warning("Worker %s stopped without finishing; gave back %s candidate(s) and %s "
                               "admission(s) it held (%s of its images had reached disk)",
                               worker, answer[1], answer[2], answer[3])

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        try:
            if self.epoch:
                await asyncio.wait_for(self.redis.hdel(self.key("workers"), self.worker), 2)
                await asyncio.wait_for(self.redis.delete(self.key(f"alive:{self.worker}")), 2)
        except Exception:
            pass
        await self.redis.aclose()

    # --- reading -------------------------------------------------------------------------------

    async def counts(self, groups: list[str]) -> dict[str, int]:
        """How many images each group has now, across all workers."""
        async def read() -> list[int]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for group in groups:
                    pipe.hlen(self.key(f"kept:{group}"))
                return await pipe.execute()

        return dict(zip(groups, await self._retrying(read), strict=True))

    async def flag(self, name: str, value: str | None = None) -> str | None:
        """Read (or set, when ``value`` is given) a small shared note, such as the listing's state."""
        if value is None:
            found = await self._retrying(lambda: self.redis.get(self.key(f"note:{name}")))
            return found.decode() if found else None
        await self._retrying(lambda: self.redis.set(self.key(f"note:{name}"), value))
        return value

    async def try_lead(self, name: str) -> bool:
        """Take (or keep) a role only one worker may have at a time, for one lease."""
        key, ms = self.key(f"lead:{name}"), int(self.lease * 1000)

        async def take() -> bool:
            if await self.redis.set(key, self.worker, nx=True, px=ms):
                return True
            holder = await self.redis.get(key)
            if holder and text(holder) == self.worker:
                await self.redis.pexpire(key, ms)
                return True
            return False

        return bool(await self._retrying(take))
