"""Leak-free train/val/test splits of ISIC images (``-a splits=train:80,val:10,test:10 -a seed=N``).

Images are split by group, never one by one: every image of a patient (``patient_id``) goes to
one split, so no patient, and therefore no lesion (a lesion belongs to one patient), crosses
splits; a record without ``patient_id`` is grouped by its ``lesion_id``, and one with neither is
its own group. Images of one lesion in train and test inflate every score measured on test.

A group's split depends on the seed and the group's key alone: a keyed hash (HMAC-SHA-256, the
seed as key) of the key, read as a number in [0, 1), falls into one of the splits' shares of
[0, 1) (cumulative weights, in the order given). So the assignment is the same for the same
seed whatever else is in the selection, a re-run that adds images moves none of the images
already assigned, a patient's images added later join the patient's split, and another seed
gives another assignment. The shares are met on average over many groups, not exactly for a
small selection. Pure functions: nothing here reads or writes files.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SPLIT_COLUMN = "split"
_SCALE = 1 << 64  # the hash's first 8 bytes, as a fraction of 2**64


@dataclass(frozen=True)
class Scheme:
    """The splits asked for (names and weights, in order) and the seed."""

    splits: tuple[tuple[str, int], ...]
    seed: int

    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.splits)

    def split_of(self, isic_id: str, clinical: Mapping[str, Any] | None) -> str:
        """The split of one image, from its id and its record's clinical fields."""
        return pick(self.splits, draw(self.seed, group_key(isic_id, clinical)))


def scheme(splits: Any, seed: Any) -> Scheme | None:
    """A Scheme from the ``splits`` and ``seed`` arguments (as parsed, or as ``dataset.json``
    holds them: lists of [name, weight]); None when no splits are asked or the shape is not one."""
    if not isinstance(splits, (list, tuple)) or len(splits) < 2 or type(seed) is not int or seed < 0:
        return None
    pairs = []
    for pair in splits:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            return None
        name, weight = pair
        if not isinstance(name, str) or not name or type(weight) is not int or weight <= 0:
            return None
        pairs.append((name, weight))
    if len({name for name, _ in pairs}) != len(pairs):
        return None
    return Scheme(tuple(pairs), seed)


def _identifier(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def group_key(isic_id: str, clinical: Mapping[str, Any] | None) -> str:
    """``patient:IP_…`` when the record names its patient, else ``lesion:IL_…``, else ``image:ISIC_…``."""
    clinical = clinical or {}
    if (patient := _identifier(clinical.get("patient_id"))) is not None:
        return f"patient:{patient}"
    if (lesion := _identifier(clinical.get("lesion_id"))) is not None:
        return f"lesion:{lesion}"
    return f"image:{isic_id}"


def draw(seed: int, key: str) -> int:
    """The group's number in [0, 2**64): HMAC-SHA-256 of ``key`` under the seed, its first 8 bytes."""
    digest = hmac.new(str(seed).encode("ascii"), key.encode("utf-8"), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big")


def pick(splits: tuple[tuple[str, int], ...], number: int) -> str:
    """The split whose share of [0, 2**64) holds ``number`` (exact integer arithmetic: number/2**64
    against the cumulative weights over their total)."""
    total = sum(weight for _, weight in splits)
    cumulative = 0
    for name, weight in splits:
        cumulative += weight
        if number * total < cumulative * _SCALE:
            return name
    return splits[-1][0]
