"""The ``imagenet`` spider's arguments: one model, validated before the first request."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..params import Parser, arg, boolean, choice, http_url, optional, path, whole_number
from ..sources.class_files import read_class_file
from ..sources.imagenet import valid_wnid
from ..sources.url_lists import check_url_list

ILSVRC = "ilsvrc1000"


def wnid_list(value: object) -> tuple[str, ...]:
    """Comma-separated wnids, or ``ilsvrc1000``."""
    items = [v.strip() for v in str(value).split(",") if v.strip()]
    if not items:
        raise ValueError("expected comma-separated wnids (n + 8 digits) or ilsvrc1000, got an empty value")
    if items == [ILSVRC]:
        return (ILSVRC,)
    for item in items:
        if not valid_wnid(item):
            raise ValueError(f"{item!r} is not a wnid (n + 8 digits)")
    return tuple(dict.fromkeys(items))


def class_file(value: object) -> str:
    """A class file in one of the accepted formats (``sources/class_files.py``), or ``-``."""
    text = existing_file(value)
    if text != "-":
        try:
            read_class_file(text)  # its format is checked now: a bad file is one line and exit 2
        except OSError as exc:
            raise ValueError(f"cannot read {text}: {exc.strerror or exc}") from None
    return text


def url_list(value: object) -> str:
    """A URL list as shipped (``sources/url_lists.py``), or ``-``: checked from its first lines."""
    text = existing_file(value)
    if text != "-":
        check_url_list(text)
    return text


def existing_file(value: object) -> str:
    text = path(value)
    if text != "-" and not os.path.isfile(text):
        raise ValueError(f"no such file: {text}")
    return text


@dataclass(frozen=True)
class ImagenetParams:
    """Download N images for each ImageNet class (WordNet id) from the geturls API or a URL list
    such as fall11_urls.txt into one folder per class: exactly N valid images each where the URLs
    allow, each decoded in full, no "photo unavailable" placeholders, no duplicates, a manifest
    line for every URL tried and why. Run it again to resume; nothing kept is downloaded twice."""

    wnids: tuple[str, ...] = arg(
        optional(Parser(wnid_list, "WNID,...", "wnids: n and 8 digits")), (),
        "comma-separated wnids, or `ilsvrc1000` (the 1000 ILSVRC-2012 classes); a wnid the source lists no URL "
        "for is named at the end, after the others are downloaded, and the exit status is 1", shown="none",
    )
    wnids_file: str | None = arg(
        optional(Parser(class_file, "FILE", "a file, or - for standard input")), None,
        "a class file: wnids, `label,wnid`, wnid TAB label, synset_words.txt, map_clsloc.txt, Keras's "
        "imagenet_class_index.json or a CSV with a `synid`/`wnid` column (docs/imagenet.md); `-` reads standard input",
        shown="none",
    )
    num_classes: int | None = arg(
        optional(whole_number(1)), None, "draw this many classes at random from `urls_file`", shown="none"
    )
    min_urls: int | None = arg(
        optional(whole_number(1)), None, "with `num_classes`: only classes with this many usable URLs",
        shown="`per_class`",
    )
    seed: int | None = arg(optional(whole_number(0)), None, "with `num_classes`: the random seed", shown="none")
    per_class: int = arg(whole_number(1), 10, "images to keep per class")
    urls_file: str | None = arg(
        optional(Parser(url_list, "FILE", "a file, or - for standard input")), None,
        "a URL list such as `fall11_urls.txt`, `.gz`, or alone in a `.tgz`/`.tar`: `<wnid>_<n>` TAB URL",
        shown="none: the geturls API",
    )
    api_url: str | None = arg(optional(http_url), None, "the geturls endpoint", shown="setting `IMAGENET_API_URL`")
    flickr_only: bool = arg(boolean, True, "only URLs on Flickr's hosts (setting `FLICKR_DOMAINS`)")
    out_dir: str = arg(path, "ImageNet", "the dataset root: `manifest.jsonl` goes here")
    images_dir: str | None = arg(
        optional(path), None, "the image tree, one folder per class", shown="`{out_dir}/Images`"
    )
    layout: str = arg(choice("wnid", "name_wnid"), "wnid", "class folders named `{wnid}` or `{label}_{wnid}`")
    dry_run: bool = arg(boolean, False, "say what would be fetched (how many images, how many bytes) and stop")
    retry_failed: bool = arg(boolean, False, "also retry images an earlier run found gone or bad (404, not an image)")
    strict: bool = arg(boolean, False, "exit 1 when a class ends with fewer than `per_class` images")
    reselect: bool = arg(
        boolean, False, "when `out_dir` holds another selection (or spider): set its images aside to "
        "`.quarantine/` (recorded) and make it this run's; without it such a run stops",
    )

    def __post_init__(self) -> None:
        given = [name for name in ("wnids", "wnids_file", "num_classes") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("give exactly one of wnids, wnids_file or num_classes")
        if self.num_classes and not self.urls_file:
            raise ValueError("num_classes: classes are drawn from urls_file; give urls_file too")

    @staticmethod
    def selection_of(arguments: Mapping[str, Any]) -> dict[str, Any]:
        """What a dataset of these arguments is, not how many (nor which classes): one per folder."""
        return {"flickr_only": arguments.get("flickr_only", True) is not False,
                "layout": arguments.get("layout") or "wnid",
                "source": "a URL list" if arguments.get("urls_file") else "the geturls API"}

    def folder(self) -> str:
        return os.path.abspath(self.images_dir or os.path.join(self.out_dir, "Images"))
