"""Near-copies of kept images: the same photo resized or re-encoded (opt-in, NEAR_DUPLICATES).

Each checked image gets a 64-bit perceptual hash (imagehash's DCT ``phash``, 16 hex digits):
resizing and re-encoding change few of its bits, a different photo about half. An image whose
hash is within ``NEAR_DUPLICATE_DISTANCE`` bits of a kept image's, in any class, is refused.

Comparing with every kept image would cost a million comparisons per image at a million images.
Instead the 16 digits are cut into distance + 1 bands: two hashes that differ in at most
``distance`` bits agree entirely on at least one band (pigeonhole), so only images sharing a
band are compared. Worker mode keeps the same bands in Redis (``scaleout/scripts.py``).
"""

from __future__ import annotations

import functools
import re
from array import array
from typing import Any

from .identity import KeptRef

MAX_DISTANCE = 15  # one band per hex digit at most
VECTOR_FROM = 48  # hashes in a band from which numpy compares them (imagehash needs numpy anyway)
_HASH = re.compile(r"[0-9a-f]{16}")


def is_hash(value: Any) -> bool:
    """Whether ``value`` is a hash as we write them (a manifest line may hold anything)."""
    return isinstance(value, str) and _HASH.fullmatch(value) is not None


def bands(phash: str, distance: int) -> list[str]:
    """The ``distance + 1`` bands of a hash, each named by its place: ``"0:3fa1"``, ``"1:07c"``..."""
    n = distance + 1
    cuts = [16 * i // n for i in range(n + 1)]
    return [f"{i}:{phash[cuts[i]:cuts[i + 1]]}" for i in range(n)]


def distance_between(a: str, b: str) -> int:
    """Hamming distance of two hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def near_detail(ref: KeptRef, distance: int) -> str:
    """The manifest's words for a refused near-copy: which image it copies, and how closely."""
    where = f" in {ref.group}" if ref.group else ""
    return f"a near-copy of {ref.image_id}{where} ({distance} of 64 bits differ; {ref.url or ref.path})"


def perceptual_hash(image: Any) -> str | None:
    """The pHash of a decoded Pillow image, or None if it has none (a mode imagehash cannot
    convert). Imported here so that runs without NEAR_DUPLICATES never load imagehash."""
    import imagehash

    try:
        return str(imagehash.phash(image))
    except (ValueError, OSError, TypeError):
        return None


@functools.cache
def _numpy() -> Any:
    """numpy (which imagehash needs anyway) if it counts bits (2.0 and later), else None."""
    try:
        import numpy as np
    except ImportError:
        return None
    return np if hasattr(np, "bitwise_count") else None


def missing_library() -> str | None:
    """Why near-copies cannot be found here (one line), or None."""
    try:
        import imagehash  # noqa: F401
    except ImportError as exc:
        return f"NEAR_DUPLICATES needs the imagehash package ({exc}): pip install imagehash"
    return None


class NearCopies:
    """Kept images by band of their perceptual hash (one process; see the module docstring).
    Hashes are held as integers: comparing two is one XOR and a bit count."""

    def __init__(self, distance: int):
        self.distance = distance
        self.by_band: dict[str, array[int]] = {}
        self.refs: dict[int, KeptRef] = {}  # hash -> the kept image that holds it
        self.of_id: dict[str, int] = {}  # image id -> its hash, to forget it

    def copy_of(self, phash: str | None) -> tuple[KeptRef, int] | None:
        """The kept image this one is a near-copy of, and how many bits apart, or None."""
        if not is_hash(phash):
            return None
        assert phash is not None
        value, best, limit = int(phash, 16), None, self.distance
        for band in bands(phash, self.distance):
            held = self.by_band.get(band)
            if not held:
                continue
            if len(held) < VECTOR_FROM or (np := _numpy()) is None:
                for other in held:
                    if (value ^ other).bit_count() <= limit:
                        best, limit = other, (value ^ other).bit_count() - 1
            else:  # a million kept images put ~250 in a band: compared at once, not one by one
                counts = np.bitwise_count(np.frombuffer(held, dtype=np.uint64) ^ np.uint64(value))
                at = int(counts.argmin())
                if counts[at] <= limit:
                    best, limit = held[at], int(counts[at]) - 1
        return None if best is None else (self.refs[best], (value ^ best).bit_count())

    def add(self, phash: str | None, ref: KeptRef) -> None:
        if not is_hash(phash) or ref.image_id in self.of_id:
            return
        assert phash is not None
        value = self.of_id[ref.image_id] = int(phash, 16)
        if value in self.refs:
            return  # the same hash kept twice (an earlier run without this check): the first one answers
        self.refs[value] = ref
        for band in bands(phash, self.distance):
            self.by_band.setdefault(band, array("Q")).append(value)

    def forget(self, image_id: str) -> None:
        """A kept image is out of the dataset (given back, withdrawn, trimmed)."""
        value = self.of_id.pop(image_id, None)
        holder = self.refs.get(value) if value is not None else None
        if value is None or holder is None or holder.image_id != image_id:
            return
        del self.refs[value]
        for band in bands(f"{value:016x}", self.distance):
            held = self.by_band[band]
            held.remove(value)
            if not held:
                del self.by_band[band]

    def hashes(self) -> dict[str, KeptRef]:
        """Every hash held, as written (for a shared state rebuilt from this process's)."""
        return {f"{value:016x}": ref for value, ref in self.refs.items()}
