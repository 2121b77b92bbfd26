"""The shared state's scripts against a real redis-server: exact counts under any interleaving,
each candidate to one worker in list order, a dead worker's share given back, a lost epoch rebuilt."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from pathlib import Path

import pytest

from dataset_spiders.scaleout.state import Hooks, Rebuilt, SharedState, reference
from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with RedisServer(tmp_path_factory.mktemp("redis")) as redis_server:
        yield redis_server


def hooks(truth: Rebuilt | None = None, on_disk: list[str] | None = None) -> Hooks:
    async def drain() -> None:
        return None

    async def recount() -> Rebuilt:
        return truth or Rebuilt()

    async def reap_dead(worker: str, staging: str, held: dict[str, str]) -> list[str] | None:
        return [key for key in held if key.split("\0")[1] in (on_disk or [])]

    async def withdraw(found: list[tuple[str, str]]) -> None:
        return None

    return Hooks(drain, lambda: [], recount, reap_dead, withdraw)


async def workers(url: str, prefix: str, count: int, truth: Rebuilt | None = None) -> list[SharedState]:
    states = [SharedState(url, prefix, f"w{i}", f"/nowhere/w{i}", lease=0.3, retry_for=2) for i in range(count)]
    await states[0].forget_epoch()
    for state in states:
        await state.join(hooks(truth))
    return states


async def admit(state: SharedState, image_id: str, group: str, target: int, sha: str = "", phash: str = "",
                distance: int = -1) -> str:
    ref = reference(image_id, group, f"{group}/{image_id}.jpg", f"http://h/{image_id}")
    answer = await state.run("ADMIT", state.worker, group, image_id, sha or image_id, "", f"h|{sha or image_id}",
                             f"http://h/{image_id}", target, 0, 1, 1, ref, f"{group}/{image_id}.jpg", phash, distance)
    if answer[0] == b"near" or answer[0] == "near":
        return f"near {json.loads(answer[1])['id']} {int(answer[2])}"
    return str(answer[0])


async def close(states: list[SharedState]) -> None:
    for state in states:
        await state.close()


def test_never_more_than_n_whatever_the_interleaving(server: RedisServer) -> None:
    async def main() -> tuple[list[str], int]:
        states = await workers(server.url, "t1:", 4)
        verdicts = await asyncio.gather(*(admit(states[i % 4], f"img{i}", "g", 7) for i in range(200)))
        kept = await states[0].counts(["g"])
        await close(states)
        return verdicts, kept["g"]

    verdicts, kept = asyncio.run(main())
    assert verdicts.count("ok") == 7 == kept
    assert verdicts.count("surplus") == 193


def test_the_same_bytes_are_refused_as_a_duplicate_by_any_worker(server: RedisServer) -> None:
    async def main() -> list[str]:
        states = await workers(server.url, "t2:", 2)
        verdicts = [await admit(states[0], "a", "g", 5, sha="s1"), await admit(states[1], "b", "h", 5, sha="s1")]
        await close(states)
        return verdicts

    assert asyncio.run(main()) == ["ok", "duplicate"]


def test_candidates_go_to_one_worker_each_in_list_order(server: RedisServer) -> None:
    async def main() -> list[int]:
        states = await workers(server.url, "t3:", 3)
        taken = []
        for turn in range(12):
            answer = await states[turn % 3].run("TAKE", states[turn % 3].worker, "g", 10, -1, 0, 1, 0)
            if answer[0] == "take":
                taken.append(int(answer[2]))
        done = await states[0].run("TAKE", states[0].worker, "g", 10, -1, 0, 1, 0)
        await close(states)
        return [*taken, -1 if done[0] == "wait" else -2]

    # ten candidates, in order, once each; then "wait" (all ten still in flight), not "done"
    assert asyncio.run(main()) == [*range(10), -1]


def test_candidates_are_taken_in_batches_within_the_class_s_room(server: RedisServer) -> None:
    async def main() -> list[list[int]]:
        states = await workers(server.url, "t7:", 2)
        batches = []
        for state in (*states, states[0]):
            answer = await state.run("TAKE", state.worker, "g", 20, 5, 2, 4, 0)  # room: 5 + 2 in flight
            batches.append([int(i) for i in answer[2:]])
        await close(states)
        return batches

    assert asyncio.run(main()) == [[0, 1, 2, 3], [4, 5, 6], []]


def test_a_dead_worker_s_candidates_and_admissions_are_given_back(server: RedisServer) -> None:
    async def main() -> tuple[list[int], int, list[str]]:
        states = await workers(server.url, "t4:", 2)
        live, dead = states
        for _ in range(3):
            await dead.run("TAKE", dead.worker, "g", 10, 5, 0, 1, 0)  # candidates 0, 1, 2
        await admit(dead, "on_disk", "g", 5)  # renamed into place before it died
        await admit(dead, "staged", "g", 5)  # never reached its name
        for task in dead._tasks:
            task.cancel()  # it stops renewing its lease: as if killed
        await dead.redis.delete(dead.key(f"alive:{dead.worker}"))
        live.hooks = hooks(on_disk=["on_disk"])
        await live.reap()
        retaken = []
        for _ in range(3):
            answer = await live.run("TAKE", live.worker, "g", 10, 5, 0, 1, 0)
            retaken.append(int(answer[2]))
        kept = await live.redis.hgetall(live.key("kept:g"))
        await close(states)
        return retaken, len(kept), sorted(k.decode() for k in kept)

    retaken, count, ids = asyncio.run(main())
    assert retaken == [0, 1, 2]  # given back, and handed out again first, in list order
    assert (count, ids) == (1, ["on_disk"])


def test_a_lost_epoch_is_rebuilt_from_disk_before_anything_is_admitted(server: RedisServer) -> None:
    truth = Rebuilt(counted={"g": {"x1": "", "x2": "", "x3": ""}})

    async def main() -> tuple[list[str], int]:
        states = await workers(server.url, "t5:", 2, truth=truth)
        await admit(states[0], "x4", "g", 5)
        await states[0].redis.flushall()  # Redis restarted without its data
        verdicts = await asyncio.gather(*(admit(states[i % 2], f"y{i}", "g", 5) for i in range(6)))
        kept = (await states[1].counts(["g"]))["g"]
        await close(states)
        return verdicts, kept

    verdicts, kept = asyncio.run(main())
    # the disk had 3 (x4 had not reached it in this test): 2 more fit, never the 3 + 1 + 2 of a blind count
    assert verdicts.count("ok") == 2 and kept == 5


def test_reference_round_trips() -> None:
    assert json.loads(reference("a", "g", "p/a.jpg", "http://h/a", "px"))["px"] == "px"


def test_out_of_reach_for_too_long_is_one_line(tmp_path: Path) -> None:
    from dataset_spiders.scaleout.state import SharedGone

    async def main() -> str:
        state = SharedState("redis://127.0.0.1:1/0", "t6:", "w", "/nowhere", lease=0.3, retry_for=0.5)
        try:
            await state.join(hooks())
        except SharedGone as exc:
            return str(exc)
        finally:
            await state.redis.aclose()
        return ""

    message = asyncio.run(main())
    assert "out of reach for 0 s" in message or "out of reach for 1 s" in message
    assert "\n" not in message


def test_a_near_copy_is_refused_by_any_worker_until_its_original_is_revoked(server: RedisServer) -> None:
    original = "c3d2a1b0f0e1d2c3"
    copy = "c3d2a1b0f0e1d2c0"  # 2 bits apart
    truth = Rebuilt(near_distance=4)
    truth.add_near("00ff00ff00ff00ff", "old", "kept_before", reference("kept_before", "old", "old/k.jpg", "http://h/k"))

    async def main() -> list[str]:
        states = await workers(server.url, "t6:", 2, truth=truth)
        await states[0].redis.hset(states[0].key("kept:old"), "kept_before", "")
        verdicts = [
            await admit(states[0], "a", "g", 5, phash=original, distance=4),
            await admit(states[1], "b", "h", 5, phash=copy, distance=4),  # another worker, another class
            await admit(states[1], "c", "h", 5, phash="3c2d1a0b0f1e2d3c", distance=4),  # a different photo
            await admit(states[1], "d", "h", 5, phash="00ff00ff00ff01ff", distance=4),  # near one rebuilt from disk
        ]
        await states[0].run("REVOKE", "g", "a", "a", "", "h|a")  # the original leaves the dataset
        verdicts.append(await admit(states[1], "b", "h", 5, phash=copy, distance=4))
        await close(states)
        return verdicts

    assert asyncio.run(main()) == ["ok", "near a 2", "ok", "near kept_before 1", "ok"]


def test_a_host_one_worker_found_down_is_down_for_the_other(server):
    """Host health across workers (scaleout/decisions.py SharedHosts): advisory, through Redis."""
    from dataset_spiders.dataset.hosts import HostHealth
    from dataset_spiders.outcomes import HostDown
    from dataset_spiders.scaleout.decisions import SharedHosts

    async def scenario() -> None:
        states = await workers(server.url, "t-hosts:", 2)
        one, two = HostHealth(down_after=2, down_for=30), HostHealth(down_after=2, down_for=30)
        shared = [SharedHosts(states[0], one), SharedHosts(states[1], two)]
        one.shared, two.shared = shared
        host = "http://gone.example:80"
        one.failed(host, "refused")
        one.failed(host, "refused")
        assert one.is_down(host)
        for _ in range(60):
            if two.is_down(host):
                break
            await asyncio.sleep(0.05)
        assert two.is_down(host) and two.hosts[host].why_down.startswith("found by another worker: 2 connection")
        with pytest.raises(HostDown):
            two.admit(host)
        for piece in shared:
            piece.stop()
        await close(states)

    asyncio.run(scenario())



class ReplyEater:
    """A TCP relay in front of Redis that, while ``eating`` is set, passes every command on and
    throws every reply away: a call Redis ran whose answer never came back (a stall or a network
    fault longer than the client's socket timeout, after the command got through)."""

    def __init__(self, target_port: int) -> None:
        self.target_port, self.eating = target_port, threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not (replies and self.eating.is_set()):
                    sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


def test_a_call_retried_after_its_answer_was_lost_gets_the_first_answer(server: RedisServer) -> None:
    """Redis ran the admission but its answer was lost (the client's socket timeout, 2 s here,
    passed first): the worker sends it again. The retry must get the first call's answer; it
    used to find the first admission and answer ``present``, and the image was then never kept."""
    relay = ReplyEater(server.port)

    async def main() -> tuple[str, str, int]:
        states = [SharedState(relay.url, "t10:", "w0", "/nowhere/w0", lease=0.3, retry_for=10)]
        await states[0].forget_epoch()
        await states[0].join(hooks())
        relay.eating.set()
        asyncio.get_running_loop().call_later(2.5, relay.eating.clear)
        verdict = await admit(states[0], "a", "g", 5)
        again = await admit(states[0], "a2", "g", 5)  # a new call is a new decision
        kept = await states[0].counts(["g"])
        await close(states)
        return verdict, again, kept["g"]

    try:
        verdict, again, kept = asyncio.run(main())
    finally:
        relay.close()
    assert (verdict, again, kept) == ("ok", "ok", 2)
