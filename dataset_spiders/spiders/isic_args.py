"""The ``isic`` spider's arguments: one model, validated before the first request."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..params import Parser, arg, boolean, choice, http_url, int_list, optional, path, text, whole_number
from ..sources.isic import LABELS


def split_spec(value: object) -> tuple[tuple[str, int], ...]:
    """``train:80,val:10,test:10`` -> (("train", 80), ("val", 10), ("test", 10)): names and weights."""
    parts = [p.strip() for p in text(value).split(",") if p.strip()]
    out: list[tuple[str, int]] = []
    for part in parts:
        name, sep, weight = part.partition(":")
        name = name.strip()
        if not sep or not weight.strip().isdigit() or not name.isidentifier() or int(weight) <= 0:
            raise ValueError(f"expected name:weight pairs such as train:80,val:10,test:10, got {part!r}")
        if name in dict(out):
            raise ValueError(f"split {name!r} is given twice")
        out.append((name, int(weight)))
    if len(out) == 1:
        raise ValueError("one split is no split: give two or more, e.g. train:80,test:20")
    return tuple(out)


@dataclass(frozen=True)
class IsicParams:
    """Download images from the ISIC Archive (dermoscopy images of skin lesions) into a verified
    dataset folder: exactly the number asked, each image decoded in full before it is kept, its
    description beside it, a manifest line for every image tried and why, a report at the end.
    Run it again to resume or to add more; nothing kept is downloaded twice."""

    num_images: int | None = arg(
        whole_number(1, all_word="all"), None,
        "how many images to keep; failures are topped up from the next matching records",
        shown="every matching image (see `all`)",
    )
    all: bool = arg(
        boolean, False, "every matching image, said outright: without it (or `num_images`, `per_label`) "
        "`dataset-spiders isic` asks first on a terminal and refuses elsewhere, and the Python API refuses"
    )
    offset: int = arg(whole_number(0), 0, "skip the first K matching records (the archive's stable order)")
    filter: str | None = arg(
        optional(choice(*LABELS)), None,
        "`benign`, `malignant` or `indeterminate` (v2 `diagnosis_1`; v1 `benign_malignant`)",
        shown="every record",
    )
    query: str | None = arg(
        optional(text), None, "a v2 search expression, ANDed with `filter`", shown="none"
    )
    collections: tuple[int, ...] = arg(
        int_list, (), "comma-separated v2 collection ids, each checked to exist first", shown="none"
    )
    out_dir: str = arg(
        path, "ISIC", "the dataset root: `manifest.jsonl`, `metadata.csv`, `attribution.txt`, `licenses/`"
    )
    images_dir: str | None = arg(optional(path), None, "where images go", shown="`{out_dir}/Images`")
    descs_dir: str | None = arg(optional(path), None, "where descriptions go", shown="`{out_dir}/Descriptions`")
    seg_dir: str | None = arg(optional(path), None, "where masks go", shown="`{out_dir}/Segmentation`")
    no_images: bool = arg(boolean, False, "save descriptions (and masks) only")
    segmentation: bool = arg(
        boolean, False,
        "also download lesion masks (v2: from the challenge archives, `ISIC_MASK_ARCHIVES`; v1: its API)"
    )
    masks_required: bool = arg(
        boolean, False, "with `segmentation`: keep only images that have a mask; `num_images` counts pairs"
    )
    seg_level: str | None = arg(
        optional(choice("novice", "expert")), None, "preferred mask skill: `novice` or `expert`",
        aliases=("seg_skill",), shown="none: the newest",
    )
    per_label: int | None = arg(
        optional(whole_number(1)), None, "exactly N images for each label of the selection (not with `num_images`)",
        shown="none",
    )
    strict: bool = arg(boolean, False, "with `per_label`: exit 1 when a label ends with fewer than N images")
    image_size: str = arg(
        choice("full", "thumbnail_256"), "full", "`full`, or `thumbnail_256`: the archive's 256-px JPEG thumbnails"
    )
    token: str | None = arg(
        optional(text), None, "an ISIC API token for private images (prefer the `ISIC_TOKEN` environment variable)",
        shown="`$ISIC_TOKEN`",
    )
    splits: tuple[tuple[str, int], ...] = arg(
        Parser(split_spec, "NAME:WEIGHT,...", "name:weight pairs"), (),
        "`train:80,val:10,test:10`: a split for every image, no lesion or patient in two, each "
        "label in every split its lesions and patients allow",
        shown="none",
    )
    seed: int = arg(whole_number(0), 0, "with `splits`: the seed that makes them reproducible")
    layout: str = arg(
        choice("flat", "by_label", "by_split"), "flat",
        "`flat`; `by_label`: one folder per label; `by_split`: one per split (then per label)",
    )
    dry_run: bool = arg(boolean, False, "say what would be fetched (how many images, how many bytes) and stop")
    retry_failed: bool = arg(boolean, False, "also retry images an earlier run found gone or bad (404, not an image)")
    reselect: bool = arg(
        boolean, False, "when `out_dir` holds another selection (or spider): set its images aside to "
        "`.quarantine/` (recorded) and make it this run's; without it such a run stops",
    )
    api_version: int = arg(Parser(lambda v: int(choice("1", "2")(v)), "{1,2}", "one of 1, 2", ("1", "2")), 2,
                           "`2`, or `1` for the legacy Girder API")
    api_url: str | None = arg(
        optional(http_url), None, "the API base",
        shown="setting `ISIC_API_URL` (v2) or `ISIC_V1_API_URL` (v1)",
    )

    def __post_init__(self) -> None:
        if self.all and (self.num_images is not None or self.per_label is not None):
            raise ValueError("all: not with num_images or per_label (it asks for every matching image)")
        if self.per_label is not None and (self.num_images is not None or self.offset):
            raise ValueError("per_label: not with num_images or offset (it asks for N of each label)")
        if self.masks_required and not self.segmentation:
            raise ValueError("masks_required: needs segmentation=true")
        if self.masks_required and self.per_label is not None:
            raise ValueError("masks_required: not with per_label (it searches for the ids that have masks)")
        if self.layout == "by_split" and not self.splits:
            raise ValueError("layout=by_split: needs splits, e.g. splits=train:80,val:10,test:10")
        if self.api_version == 1 and self.query:
            raise ValueError("query: the v1 API takes no search expression; use filter, or api_version=2")
        if self.api_version == 1 and self.collections:
            raise ValueError("collections: the v1 API has no collections; use api_version=2")

    @staticmethod
    def selection_of(arguments: Mapping[str, Any]) -> dict[str, Any]:
        """What a dataset of these arguments is, not how many: one selection per folder."""
        a = arguments
        splits = [list(s) for s in a.get("splits") or [] if isinstance(s, (list, tuple))]
        return {"api_version": a.get("api_version") or 2, "filter": a.get("filter") or None,
                "query": a.get("query") or None, "collections": sorted(str(c) for c in a.get("collections") or []),
                "image_size": a.get("image_size") or "full", "layout": a.get("layout") or "flat",
                "splits": splits, "seed": a.get("seed") or 0 if splits else None}

    def folder(self, name: str) -> str:
        given = {"images": self.images_dir, "descs": self.descs_dir, "seg": self.seg_dir}[name]
        default = {"images": "Images", "descs": "Descriptions", "seg": "Segmentation"}[name]
        return os.path.abspath(given or os.path.join(self.out_dir, default))
