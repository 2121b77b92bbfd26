"""The core's in-memory decisions: the quota, the duplicate index, the placeholder learner, sites."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset_spiders.dataset.identity import KeptRef, PlaceholderLearner, SeenImages, site_of
from dataset_spiders.dataset.quota import Quota

# --- Quota ------------------------------------------------------------------------------------

GROUPS = ("a", "b")
CALLS = st.lists(
    st.tuples(st.sampled_from(["reserve", "admit", "revoke", "release", "has_room"]), st.sampled_from(GROUPS)),
    max_size=120,
)


@settings(max_examples=300, deadline=None, database=None)
@given(target=st.integers(0, 4), window=st.integers(1, 4), slack=st.integers(0, 3), calls=CALLS)
def test_admit_never_lets_a_group_exceed_its_target_whatever_the_interleaving(target, window, slack, calls):
    q = Quota(target, window, slack)
    kept = dict.fromkeys(GROUPS, 0)
    pending = dict.fromkeys(GROUPS, 0)
    for call, g in calls:
        if call == "reserve":
            q.reserve(g)
            pending[g] += 1
        elif call == "admit":
            admitted = q.admit(g)
            assert admitted == (kept[g] < target), "admit refused with room, or admitted into a full group"
            kept[g] += admitted
        elif call == "revoke":
            q.revoke(g)
            kept[g] = max(0, kept[g] - 1)
        elif call == "release":
            q.release(g)
            pending[g] = max(0, pending[g] - 1)
        else:
            room = q.has_room(g)
            assert room == (pending[g] < window and kept[g] < target and kept[g] + pending[g] < target + slack)
        for group in GROUPS:
            assert 0 <= q.kept[group] == kept[group] <= target
            assert q.pending[group] == pending[group] >= 0
            assert q.full(group) == (kept[group] >= target)
    assert q.in_flight() == sum(pending.values())


@pytest.mark.parametrize("seed", range(5))
def test_a_simulated_crawl_keeps_exactly_the_target_and_never_more_than_the_window_in_flight(seed):
    rng = random.Random(seed)
    target, window, slack = 5, 3, 2

    async def main() -> tuple[Quota, int, int]:
        q = Quota(target, window, slack)
        most_in_flight = 0

        async def download() -> None:
            for _ in range(rng.randint(0, 6)):
                await asyncio.sleep(0)
            admitted = rng.random() < 0.6 and q.admit("g")
            if admitted and rng.random() < 0.2:  # the rename failed after the admit
                q.revoke("g")
            q.release("g")

        tasks, offered = [], 0
        for _ in range(200):
            if not await q.wait_for_room("g"):
                break
            q.reserve("g")
            offered += 1
            most_in_flight = max(most_in_flight, q.pending["g"])
            tasks.append(asyncio.ensure_future(download()))
        await asyncio.gather(*tasks)
        return q, most_in_flight, offered

    q, most, offered = asyncio.run(main())
    assert q.kept["g"] == target
    assert most <= window
    assert offered < 200  # the producer was told the group is full
    assert q.in_flight() == 0


def test_slack_lets_a_few_more_candidates_in_flight_than_still_needed():
    for slack, allowed in ((0, 2), (1, 3), (3, 5)):
        q = Quota(2, window=10, slack=slack)
        n = 0
        while q.has_room():
            q.reserve()
            n += 1
        assert n == allowed
    q = Quota(2, window=10, slack=5)
    q.admit()
    q.admit()
    assert q.full() and not q.has_room()  # slack never opens a full group


def test_the_window_caps_what_is_in_flight_per_group_even_without_a_target():
    q = Quota(None, window=2)
    q.reserve("a")
    q.reserve("a")
    assert not q.has_room("a")
    assert q.has_room("b")
    q.release("a")
    assert q.has_room("a")
    assert Quota(None, window=0).window == 1  # a window of 0 would block forever
    assert all(Quota(None, window=1).admit() for _ in range(1000))  # no target: no limit


def test_a_target_of_zero_is_full_from_the_start():
    q = Quota(0, window=5)
    assert q.full() and not q.has_room() and not q.admit()


def test_existing_images_count_and_a_revoke_reopens_the_group():
    q = Quota(2, window=5)
    q.add_existing("g")
    q.add_existing("g")
    q.add_existing("g")  # a folder over its target when the run started (trim brings it back)
    assert q.full("g") and not q.admit("g")
    q.revoke("g")
    assert q.full("g")
    q.revoke("g")
    assert not q.full("g") and q.has_room("g") and q.admit("g")
    q.revoke("x")  # a revoke with nothing kept stays at 0
    q.release("x")
    assert q.kept["x"] == 0 and q.pending["x"] == 0


def test_wait_for_room_returns_true_when_a_slot_frees():
    async def main() -> bool:
        q = Quota(3, window=1)
        q.reserve()
        waiter = asyncio.ensure_future(q.wait_for_room())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiter.done()
        q.release()  # the image in flight failed: its slot is free again
        return await asyncio.wait_for(waiter, 1)

    assert asyncio.run(main()) is True


def test_wait_for_room_returns_false_once_the_group_is_full():
    async def main() -> tuple[bool, bool]:
        q = Quota(1, window=1)
        q.reserve()
        waiter = asyncio.ensure_future(q.wait_for_room())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiter.done()
        assert q.admit()
        q.release()  # the admitted image's outcome is recorded
        first = await asyncio.wait_for(waiter, 1)
        return first, await asyncio.wait_for(q.wait_for_room(), 1)  # full: False at once, no wait

    assert asyncio.run(main()) == (False, False)


def test_stop_wakes_every_waiter_with_false():
    async def main() -> list[bool]:
        q = Quota(10, window=1)
        q.reserve("a")
        q.reserve("b")
        waiters = [asyncio.ensure_future(q.wait_for_room(g)) for g in ("a", "b", "a")]
        for _ in range(5):
            await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)
        q.stop()
        results = await asyncio.wait_for(asyncio.gather(*waiters), 1)
        assert not q.has_room("c")  # nothing new goes in flight after a stop
        return results

    assert asyncio.run(main()) == [False, False, False]


def test_wait_full_and_wait_until_settled():
    async def main() -> None:
        q = Quota(2, window=5)
        full = asyncio.ensure_future(q.wait_full("g"))
        q.reserve("g")
        q.reserve("g")
        settled = asyncio.ensure_future(q.wait_until_settled())
        q.admit("g")
        await asyncio.sleep(0)
        assert not full.done()
        q.admit("g")
        await asyncio.wait_for(full, 1)
        q.release("g")
        await asyncio.sleep(0)
        assert not settled.done()
        q.release("g")
        await asyncio.wait_for(settled, 1)

    asyncio.run(main())


# --- SeenImages -------------------------------------------------------------------------------

REF_A = KeptRef("a", "g1", "/d/g1/a.jpg", "http://x.com/a.jpg")
REF_B = KeptRef("b", "g2", "/d/g2/b.jpg", "http://x.com/b.jpg")


def test_a_copy_is_a_duplicate_by_bytes_or_by_pixels():
    seen = SeenImages()
    seen.add_known("sha-a", "px-a", REF_A)
    assert seen.duplicate_of("sha-a", None) == REF_A
    assert seen.duplicate_of("other-sha", "px-a") == REF_A  # re-encoded: other bytes, same pixels
    assert seen.duplicate_of("other-sha", "other-px") is None
    assert seen.duplicate_of(None, None) is None
    assert seen.duplicate_of("", "") is None


def test_the_first_kept_copy_stays_the_reference():
    seen = SeenImages()
    seen.add_known("sha", "px", REF_A)
    seen.add_known("sha", "px", REF_B)
    assert seen.duplicate_of("sha", None) == REF_A
    assert seen.duplicate_of(None, "px") == REF_A


def test_missing_digests_are_never_indexed():
    seen = SeenImages()
    seen.add_known(None, None, REF_A)
    seen.add_known("", "", REF_B)
    assert not seen.by_bytes and not seen.by_pixels
    assert seen.duplicate_of(None, None) is None


def test_forget_frees_both_digests_and_leaves_the_others():
    seen = SeenImages()
    seen.add_known("sha-a", "px-a", REF_A)
    seen.add_known("sha-b", "px-b", REF_B)
    seen.forget("sha-a", "px-a")
    assert seen.duplicate_of("sha-a", None) is None
    assert seen.duplicate_of(None, "px-a") is None
    assert seen.duplicate_of("sha-b", None) == REF_B
    seen.forget(None, None)  # nothing to forget: no error
    seen.forget("unknown", "unknown")
    assert seen.duplicate_of(None, "px-b") == REF_B


# --- PlaceholderLearner -----------------------------------------------------------------------


def test_a_placeholder_is_learned_at_the_threshold_and_its_kept_copies_are_returned_once():
    learner = PlaceholderLearner(3)
    site = "flickr.com"
    ref1 = KeptRef("i1", "g", "/d/i1.jpg", "http://farm1.static.flickr.com/1.jpg")
    ref2 = KeptRef("i2", "g", "/d/i2.jpg", "http://farm2.static.flickr.com/2.jpg")
    learner.note_kept_ref(site, "S", ref1, "px1")
    assert learner.observe(site, "S", ref1.url) is None
    assert learner.observe(site, "S", ref1.url) is None  # the same URL again is not a second URL
    learner.note_kept_ref(site, "S", ref2, "px2")
    assert learner.observe(site, "S", ref2.url) is None
    assert not learner.is_placeholder(site, "S")
    withdraw = learner.observe(site, "S", "http://farm3.static.flickr.com/3.jpg")
    assert withdraw == [(ref1, "px1"), (ref2, "px2")]
    assert learner.is_placeholder(site, "S")
    assert learner.is_sha_learned("S") and not learner.is_sha_learned("T")
    assert learner.observe(site, "S", "http://farm4.static.flickr.com/4.jpg") == []  # already learned
    assert learner.observe(site, "S", ref1.url) == []


def test_the_same_bytes_on_other_sites_are_counted_apart():
    learner = PlaceholderLearner(2)
    assert learner.observe("a.com", "S", "http://a.com/1") is None
    assert learner.observe("b.com", "S", "http://b.com/1") is None
    assert learner.observe("a.com", "T", "http://a.com/2") is None
    assert not learner.learned
    assert learner.observe("a.com", "S", "http://a.com/3") == []  # learned, nothing was kept
    assert learner.is_placeholder("a.com", "S") and not learner.is_placeholder("b.com", "S")


def test_a_threshold_of_zero_turns_learning_off():
    learner = PlaceholderLearner(0)
    ref = KeptRef("i", "g", "/d/i.jpg", "http://a.com/i")
    learner.note_kept_ref("a.com", "S", ref, None)
    learner.add_learned("a.com", "S")
    for n in range(20):
        assert learner.observe("a.com", "S", f"http://a.com/{n}") is None
    assert not learner.is_placeholder("a.com", "S")
    assert not learner.is_sha_learned("S")
    assert not learner.kept and not learner.urls


def test_a_placeholder_learned_by_an_earlier_run_is_known_at_once():
    learner = PlaceholderLearner(5)
    learner.add_learned("flickr.com", "S")
    assert learner.is_placeholder("flickr.com", "S")
    assert learner.observe("flickr.com", "S", "http://farm1.static.flickr.com/x.jpg") == []


# --- site_of ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "site"),
    [
        ("http://farm3.static.flickr.com/2/a.jpg", "flickr.com"),
        ("https://live.staticflickr.com/65535/b.jpg", "flickr.com"),
        ("http://farm1.staticflickr.com/c.jpg", "flickr.com"),
        ("http://www.flickr.com/photos/x", "flickr.com"),
        ("http://news.bbc.co.uk/img.jpg", "bbc.co.uk"),
        ("http://WWW.Example.COM./a.png", "example.com"),
        ("http://1.2.3.4:8080/a.jpg", "1.2.3.4"),
        ("http://[bad/x.jpg", ""),
        ("http://[::1/x.jpg", ""),
        ("", ""),
        (None, ""),
        ("not a url", ""),
    ],
)
def test_site_of(url, site):
    assert site_of(url) == site


def test_both_flickr_hosts_are_one_site_for_learning():
    learner = PlaceholderLearner(2)
    first = "http://farm3.static.flickr.com/1/a.jpg"
    second = "https://live.staticflickr.com/2/b.jpg"
    assert learner.observe(site_of(first), "S", first) is None
    assert learner.observe(site_of(second), "S", second) == []


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(0, 15), st.data())
def test_hashes_within_the_distance_always_share_a_band(value, distance, data):
    from dataset_spiders.dataset.near_copies import bands, distance_between

    flips = data.draw(st.sets(st.integers(0, 63), max_size=distance))
    other = value
    for bit in flips:
        other ^= 1 << bit
    a, b = f"{value:016x}", f"{other:016x}"
    assert distance_between(a, b) == len(flips)
    assert set(bands(a, distance)) & set(bands(b, distance))
    assert "".join(band.split(":")[1] for band in bands(a, distance)) == a  # the bands cut the whole hash


def test_near_copies_are_found_within_the_distance_and_forgotten_with_their_image():
    from dataset_spiders.dataset.near_copies import NearCopies

    near = NearCopies(4)
    original = KeptRef("a", "tench", "tench/a.jpg", "http://h/a")
    near.add("f0f0f0f0f0f0f0f0", original)
    near.add("not a hash", KeptRef("junk", "", "", ""))  # a hostile manifest's value is ignored
    assert near.copy_of("f0f0f0f0f0f0f0f3") == (original, 2)
    assert near.copy_of("f0f0f0f0f0f0f0ff") == (original, 4)  # 4 bits: the edge is within
    assert near.copy_of("f0f0f0f0f0f0f1ff") is None  # 5 bits
    assert near.copy_of("0f0f0f0f0f0f0f0f") is None and near.copy_of(None) is None
    near.forget("a")
    assert near.copy_of("f0f0f0f0f0f0f0f3") is None and near.by_band == {}
