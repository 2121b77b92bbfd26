"""The vocabulary of the shared state (``scaleout/state.py``): what a rebuild produces and needs,
how a kept image is named in it, and how a rebuilt state is written."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from ..dataset.near_copies import bands

BATCH_DELAY = 0.005  # seconds a decision waits for others to share its round trip to Redis




@dataclass
class Rebuilt:
    """What the disk says, for a new epoch: counted ids per group and what they need to be refused."""

    counted: dict[str, dict[str, str]] = field(default_factory=dict)  # group -> id -> "" (settled)
    digests: dict[str, dict[str, str]] = field(default_factory=lambda: {"bytes": {}, "pixels": {}})
    learned: set[str] = field(default_factory=set)  # "site|sha"
    urls: dict[str, set[str]] = field(default_factory=dict)  # "site|sha" -> the URLs that served it
    refs: dict[str, dict[str, str]] = field(default_factory=dict)  # "site|sha" -> kept id -> reference
    withdraw: list[tuple[str, str]] = field(default_factory=list)  # (reference, sha): learned only now
    near: dict[str, str] = field(default_factory=dict)  # perceptual hash -> reference (NEAR_DUPLICATES)
    near_of: dict[str, str] = field(default_factory=dict)  # "group NUL id" -> its hash
    near_distance: int = -1

    def add_near(self, phash: str, group: str, image_id: str, ref: str) -> None:
        self.near.setdefault(phash, ref)
        self.near_of[f"{group}\0{image_id}"] = phash


@dataclass
class Hooks:
    """What the shared state needs from the worker's dataset core."""

    drain: Callable[[], Awaitable[None]]  # finish every admitted image (rename or give back)
    live_peers: Callable[[], list[str]]  # ids of other workers whose staging folder is locked
    recount: Callable[[], Awaitable[Rebuilt]]  # the disk's truth (reaps dead peers' folders first)
    #: (worker, staging, held: "group NUL id" -> "sha NUL pixels NUL path") -> those on disk, or
    #: None when the worker is alive after all (its staging folder is locked)
    reap_dead: Callable[[str, str, dict[str, str]], Awaitable[list[str] | None]]
    #: (reference, sha) of kept placeholders; a coroutine, as it runs as a task of its own
    withdraw: Callable[[list[tuple[str, str]]], Coroutine[Any, Any, None]]
    #: (worker, held) -> those on disk: a worker whose lease ran out long ago yet holds its lock
    #: (frozen: SIGSTOP, a paused machine) is fenced off; None: such a worker is waited for
    fence: Callable[[str, dict[str, str]], Awaitable[list[str]]] | None = None


async def write_state(redis: Any, prefix: str, truth: Rebuilt, epoch: str, worker: str) -> None:
    """Replace every key under ``prefix`` with the rebuilt state and set the new epoch, in one
    transaction, and only while ``worker`` still holds the rebuild role (else nothing is written)."""

    def key(name: str) -> str:
        return prefix + name

    stale = [k async for k in redis.scan_iter(match=glob_escape(prefix) + "*", count=1000)]
    async with redis.pipeline(transaction=True) as pipe:
        await pipe.watch(key("rebuilding"), key("epoch"))
        holder = await pipe.get(key("rebuilding"))
        if (holder.decode() if holder else None) != worker or await pipe.exists(key("epoch")):
            await pipe.unwatch()
            return  # another worker rebuilt meanwhile: join its epoch
        pipe.multi()
        for i in range(0, len(stale), 500):
            pipe.delete(*stale[i:i + 500])
        for group, ids in truth.counted.items():
            for i in range(0, len(ids), 1000):
                pipe.hset(key(f"kept:{group}"), mapping=dict(list(ids.items())[i:i + 1000]))
        for name, refs in truth.digests.items():
            items = list(refs.items())
            for i in range(0, len(items), 1000):
                pipe.hset(key(name), mapping=dict(items[i:i + 1000]))
        if truth.learned:
            pipe.sadd(key("learned"), *truth.learned)
        for content, urls in truth.urls.items():
            pipe.sadd(key(f"urls:{content}"), *urls)
        for content, kept in truth.refs.items():
            pipe.hset(key(f"refs:{content}"), mapping=kept)
        if truth.near_distance >= 0:
            by_band: dict[str, list[str]] = {}
            for phash in truth.near:
                for band in bands(phash, truth.near_distance):
                    by_band.setdefault(band, []).append(phash)
            for name, mapping in (("nearref", truth.near), ("nearof", {
                field: f"{phash}|{truth.near_distance}" for field, phash in truth.near_of.items()
            })):
                items = list(mapping.items())
                for i in range(0, len(items), 1000):
                    pipe.hset(key(name), mapping=dict(items[i:i + 1000]))
            for band, held in by_band.items():
                pipe.sadd(key(f"near:{band}"), *held)
        pipe.set(key("epoch"), epoch)
        await pipe.execute()


def text(value: bytes | str) -> str:
    """What Redis answered, as text: our client gets bytes (no ``decode_responses``), which its
    types cannot know."""
    return value.decode() if isinstance(value, bytes) else value


def reference(image_id: str, group: str, path: str, url: str, pixels: str = "") -> str:
    """A kept image, as the shared state names it (in duplicate messages, and to withdraw it)."""
    return json.dumps({"id": image_id, "group": group, "path": path, "url": url, "px": pixels}, separators=(",", ":"))


def glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    head, sep, tail = url.rpartition("@")
    return url if not sep else head.split("//")[0] + "//***@" + tail
