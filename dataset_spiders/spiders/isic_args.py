"""The ``isic`` spider's arguments: one model, validated before the first request."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..params import arg, boolean, choice, http_url, int_list, optional, path, text, whole_number
from ..sources.isic import LABELS


@dataclass(frozen=True)
class IsicParams:
    num_images: int | None = arg(
        whole_number(1, all_word="all"), None,
        "how many images to keep; failures are topped up from the next matching records",
        shown="all",
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
        path, "Data", "the dataset root: `manifest.jsonl`, `metadata.csv`, `attribution.txt`, `licenses/`"
    )
    images_dir: str | None = arg(optional(path), None, "where images go", shown="`{out_dir}/Images`")
    descs_dir: str | None = arg(optional(path), None, "where descriptions go", shown="`{out_dir}/Descriptions`")
    seg_dir: str | None = arg(optional(path), None, "where masks go", shown="`{out_dir}/Segmentation`")
    no_images: bool = arg(boolean, False, "save descriptions (and masks) only")
    segmentation: bool = arg(boolean, False, "also download segmentation masks (API v1 only)")
    seg_level: str | None = arg(
        optional(choice("novice", "expert")), None, "preferred mask skill: `novice` or `expert`",
        aliases=("seg_skill",), shown="none: the newest",
    )
    layout: str = arg(choice("flat", "by_label"), "flat", "`flat`, or `by_label`: one folder per label")
    dry_run: bool = arg(boolean, False, "say what would be fetched (how many images, how many bytes) and stop")
    retry_failed: bool = arg(boolean, False, "also retry images an earlier run found gone or bad (404, not an image)")
    api_version: int = arg(lambda v: int(choice("1", "2")(v)), 2, "`2`, or `1` for the legacy Girder API")
    api_url: str | None = arg(
        optional(http_url), None, "the API base",
        shown="setting `ISIC_API_URL` (v2) or `ISIC_V1_API_URL` (v1)",
    )

    def __post_init__(self) -> None:
        if self.api_version == 1 and self.query:
            raise ValueError("query: the v1 API takes no search expression; use filter, or api_version=2")
        if self.api_version == 1 and self.collections:
            raise ValueError("collections: the v1 API has no collections; use api_version=2")

    def folder(self, name: str) -> str:
        given = {"images": self.images_dir, "descs": self.descs_dir, "seg": self.seg_dir}[name]
        default = {"images": "Images", "descs": "Descriptions", "seg": "Segmentation"}[name]
        return os.path.abspath(given or os.path.join(self.out_dir, default))
