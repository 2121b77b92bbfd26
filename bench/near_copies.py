"""What NEAR_DUPLICATES costs per image: the image stage's checks (one worker-thread call: sha256,
placeholder bytes, full decode, pixel digest) with and without the perceptual hash, on the same
~75 KB 500x375 JPEGs bench/throughput.py serves, in interleaved rounds in one process; then the
index: looking a hash up among K kept images and adding it.

    .venv/bin/python bench/near_copies.py [--n 2000] [--rounds 3] [--kept 1000000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import throughput_lib as lib

from dataset_spiders.dataset.identity import KeptRef
from dataset_spiders.dataset.near_copies import NearCopies
from dataset_spiders.dataset.validation import Limits, Placeholders, examine


def check_all(bodies: list[bytes], limits: Limits) -> float:
    """Seconds per image for every check of the image stage."""
    placeholders = Placeholders([], [])
    start = time.perf_counter()
    for body in bodies:
        examine(body, limits, placeholders)
    return (time.perf_counter() - start) / len(bodies)


def index_cost(kept: int, probes: int = 20000) -> tuple[float, float]:
    """Microseconds per lookup (a new photo: no near-copy) and per add, with ``kept`` hashes held."""
    rng = random.Random(7)
    near = NearCopies(4)
    for i in range(kept):
        near.add(f"{rng.getrandbits(64):016x}", KeptRef(str(i), "g", "", ""))
    fresh = [f"{rng.getrandbits(64):016x}" for _ in range(probes)]
    start = time.perf_counter()
    found = sum(near.copy_of(h) is not None for h in fresh)
    lookup = (time.perf_counter() - start) / probes * 1e6
    start = time.perf_counter()
    for i, h in enumerate(fresh):
        near.add(h, KeptRef(f"new{i}", "g", "", ""))
    add = (time.perf_counter() - start) / probes * 1e6
    print(f"  {kept} kept: {lookup:.1f} us per lookup ({found} of {probes} random hashes within 4 bits), "
          f"{add:.1f} us per add", flush=True)
    return lookup, add


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kept", type=int, default=1_000_000)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                    / "dataset-spiders-bench")
    args = ap.parse_args()
    bodies = lib.load_pack(lib.ensure_pack(args.n, args.cache))[: args.n]
    plain, near = Limits(pixel_digest=True), Limits(pixel_digest=True, near=True)
    check_all(bodies[:50], near)  # warm up: imports, caches
    off, on = [], []
    for _ in range(args.rounds):
        off.append(check_all(bodies, plain))
        on.append(check_all(bodies, near))
    off_ms, on_ms = statistics.median(off) * 1e3, statistics.median(on) * 1e3
    print(f"{args.n} JPEGs of {lib.WIDTH}x{lib.HEIGHT}, median of {args.rounds} interleaved rounds:")
    print(f"  checks without NEAR_DUPLICATES: {off_ms:.2f} ms per image")
    print(f"  checks with NEAR_DUPLICATES:    {on_ms:.2f} ms per image (x{on_ms / off_ms:.2f}; "
          f"+{on_ms - off_ms:.2f} ms for the perceptual hash)")
    print("the index (NEAR_DUPLICATE_DISTANCE 4: 5 bands):")
    for kept in sorted({min(args.kept, 10_000), min(args.kept, 100_000), args.kept}):
        index_cost(kept)


if __name__ == "__main__":
    main()
