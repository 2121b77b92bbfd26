"""The item every spider yields: one image, where it comes from, where it goes, and what happened."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .dataset.identity import KeptRef
from .dataset.manifest import Key, Record


@dataclass
class ImageResult:
    """What happened to one image: filled in by the image and mask stages, written to the
    manifest by ``ImageItem.to_record``."""

    outcome: str | None = None
    detail: str = ""
    url: str | None = None  # the alternative fetched
    final_url: str | None = None
    redirect_urls: list[str] = field(default_factory=list)
    stem: str | None = None  # the stem of the alternative that was fetched
    staged: str | None = None  # temporary file holding the bytes until they are committed
    path: str | None = None  # the final file, once kept or found present
    size: int | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    pixels: str | None = None  # digest of the decoded pixels, for duplicates that differ in bytes
    phash: str | None = None  # perceptual hash, for near-copies (NEAR_DUPLICATES)
    origin: str | None = None  # "ARCHIVE_URL!MEMBER" when the bytes came from inside an archive (v2 masks)
    learned: bool = False  # the outcome is a placeholder learned in this crawl

    def decide(self, outcome: str, detail: str = "") -> None:
        self.outcome, self.detail = outcome, detail


@dataclass
class ImageItem:
    """One image of the dataset: what to fetch and where it goes (set by the spider), and
    ``result``, what happened (set by the stages).

    ``image_urls`` are alternatives tried in order until one is kept (an ISIC image has one;
    a segmentation mask may have several candidates). ``stems`` gives, for each alternative,
    the final path without its extension; the extension is chosen from the real format.
    """

    image_id: str
    image_urls: list[str]
    stems: list[str]
    kind: str = "image"  # "image" or "mask"
    group: str = ""  # the class an exact count is kept for ("" when the count is global)
    label: str | None = None
    ext: str | None = None  # the extension the source's URL names, if any
    description: dict[str, Any] | None = None  # the source's record, saved as JSON
    description_path: str | None = None
    source_id: str | None = None  # the source's own id, for follow-up requests
    flight: str = ""  # with REDIS_URL: the shared candidate this item was handed as
    spare: int = -1  # its place in its class's list (handed out again if needed later)
    retry_later: bool = False  # a failed connection is tried again behind its class's other candidates
    position: int | None = None  # isic: the record's place in the archive's listing
    variant: str | None = None  # isic: "full" or "thumbnail_256"
    split: str | None = None  # isic with splits: the image's split
    size_hint: int | None = None  # isic: files.full.size, compared with what arrives (a hint, not a checksum)
    result: ImageResult = field(default_factory=ImageResult)
    images: list[dict[str, Any]] = field(default_factory=list)  # IMAGES_RESULT_FIELD (Scrapy's)

    @property
    def key(self) -> Key:
        return Key(self.kind, self.image_id)

    def ref(self) -> KeptRef:
        return KeptRef(self.image_id, self.group, self.result.path or "", self.result.url or "")

    def to_record(self, path: str | None, outcome: str) -> Record:
        """The manifest line of this image (``path`` relative to the dataset root)."""
        r = self.result
        return Record(
            id=self.image_id, outcome=outcome, kind=self.kind, group=self.group or None, label=self.label,
            url=r.url or (self.image_urls[0] if self.image_urls else None), final_url=r.final_url,
            detail=r.detail or None, path=path, bytes=r.size, sha256=r.sha256, width=r.width, height=r.height,
            pixels=r.pixels, learned=r.learned, phash=r.phash, position=self.position, origin=r.origin,
            variant=self.variant, split=self.split,
        )
