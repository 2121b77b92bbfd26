"""Leak-free, stratified train/val/test splits of ISIC images (``-a splits=train:80,val:10,test:10 -a seed=N``).

Images are split by group, never one by one: every image of a patient (``patient_id``) goes to
one split, so no patient, and therefore no lesion (a lesion belongs to one patient), crosses
splits; a record without ``patient_id`` is grouped by its ``lesion_id``, and one with neither is
its own group. Images of one lesion in train and test inflate every score measured on test.

A group's number is a keyed hash (HMAC-SHA-256, the seed as key) of its key, read as a number
in [0, 1); it falls into one of the splits' shares of [0, 1) (cumulative weights, in the order
given): ``Scheme.split_of``, the plain rule. Alone, that rule leaves a label with few groups out
of some splits (a test split with no malignant image measures no sensitivity), so a dataset's
``Ledger`` stratifies: a new group whose label some split does not hold yet goes to one of the
splits that lack it (its number, against those splits' weights alone); once every split holds
the label, its groups follow the plain rule. A group counts for the label of the image that
brought it (the first one met: the split is needed before its other images are seen), and
the splits it lands in hold every label its images have.

So a group's split depends on the seed, the group, and (for the first groups of each label)
the labels the dataset's splits held when it came: the ledger starts from the groups the
dataset has on disk, which never move, so a re-run that adds images moves none of the images
already assigned, a patient's images added later join the patient's split, and the same seed
and selection give the same assignment. Another seed gives another one; the shares are met on
average over many groups. Pure functions: nothing here reads or writes files.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SPLIT_COLUMN = "split"
UNLABELED = "unlabeled"  # the stratum, and the folder, of images the archive gives no label
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


@dataclass
class Ledger:
    """The splits of one dataset's groups, and which labels each split holds (see the module
    docstring). ``stratify=False`` gives every new group the plain rule: what workers sharing a
    dataset use, since they meet new groups apart and must agree without asking one another."""

    scheme: Scheme
    stratify: bool = True
    groups: dict[str, str] = field(default_factory=dict)  # group key -> split
    holds: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # label -> splits

    def known(self, key: str, split: str, label: str | None) -> None:
        """An image the dataset already has: its group's key, the split it is in, its label."""
        self.groups.setdefault(key, split)
        self.holds[label or UNLABELED].add(split)

    def split_of(self, isic_id: str, clinical: Mapping[str, Any] | None, label: str | None) -> str:
        """The split of an image the run meets: its group's, or a new one's (noted from now on)."""
        key = group_key(isic_id, clinical)
        split = self.groups.get(key)
        if split is None:
            holding = self.holds[label or UNLABELED]
            lacking = tuple(pair for pair in self.scheme.splits if pair[0] not in holding) if self.stratify else ()
            split = self.groups[key] = pick(lacking or self.scheme.splits, draw(self.scheme.seed, key))
        self.holds[label or UNLABELED].add(split)
        return split
