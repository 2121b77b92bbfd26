"""Fake ISIC archive records shared by the image host, v2 and v1 emulators."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import images

CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "tif": "image/tiff",
    "tiff": "image/tiff",
}
AUTO = "auto"  # FakeImage.v1_label default: derive from diagnosis_1

_BASE_TIME = datetime(2020, 1, 1, tzinfo=UTC)
_SEG_BASE_TIME = datetime(2017, 1, 1, 12, tzinfo=UTC)
_created_counter = itertools.count()

# Default lower diagnosis levels (v2) and v1 diagnosis per diagnosis_1.
_LEVELS = {
    "Benign": ("Benign melanocytic proliferations", "Nevus", "nevus"),
    "Malignant": ("Malignant melanocytic proliferations (Melanoma)", "Melanoma Invasive", "melanoma"),
}


def hex24(text: str) -> str:
    """A deterministic 24-hex Mongo-style ObjectId derived from ``text``."""
    return hashlib.md5(text.encode()).hexdigest()[:24]


def iso(dt: datetime) -> str:
    """ISO 8601 with microseconds and ``+00:00`` (v1 style)."""
    return dt.isoformat(timespec="microseconds")


def as_list(fake_images: Iterable[FakeImage]) -> list[FakeImage]:
    """The caller's list itself (so later appends are seen by the server), else a copy."""
    return fake_images if isinstance(fake_images, list) else list(fake_images)


def content_type(ext: str) -> str:
    return CONTENT_TYPES.get(ext.lower(), "application/octet-stream")


@dataclass
class FakeSegmentation:
    """A legacy v1 segmentation; ids/created/mask are filled by the owning FakeImage."""

    seg_id: str = ""
    skill: str = "expert"  # "novice" | "expert"
    created: str = ""
    failed: bool = False
    mask: bytes | None = None  # PNG; generated at the image size when None and not failed
    behaviour: str = "ok"  # "ok" | "410" | any server.BEHAVIOURS value


@dataclass
class FakeImage:
    """One archive image and everything the emulators serve about it."""

    isic_id: str
    diagnosis_1: str | None = "Benign"  # "Benign" | "Malignant" | "Indeterminate" | None
    body: bytes = b""  # the bytes served; a 32x24 JPEG when empty
    ext: str = "jpg"  # "jpg" | "png" | "tif"
    behaviour: str = "ok"  # see server.BEHAVIOURS
    license: str = "CC-BY"  # "CC-0" | "CC-BY" | "CC-BY-NC"
    attribution: str = "Test Hospital"
    extra_clinical: dict[str, Any] = field(default_factory=dict)  # None values remove a field
    extra_acquisition: dict[str, Any] = field(default_factory=dict)
    created: str | None = None  # ISO; default strictly increasing in construction order
    collections: list[int] = field(default_factory=list)
    public: bool = True
    lesion_id: str | None = None  # clinical lesion_id, "IL_" + 7 digits (one lesion, several images)
    patient_id: str | None = None  # clinical patient_id, "IP_" + 7 digits (one patient, several lesions)
    full_url: str | None = None  # override files.full.url (e.g. a dead or signed URL)
    size: int | None = None  # override files.full.size (default len(body))
    # legacy v1
    v1_id: str = ""  # 24 hex; derived from isic_id when empty
    v1_label: str | None = AUTO  # benign_malignant; AUTO = diagnosis_1.lower(); None = key absent
    segmentations: list[FakeSegmentation] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # v1 notes.tags

    def __post_init__(self) -> None:
        if not self.body:
            self.body = images.jpeg(32, 24, seed=int(hashlib.md5(self.isic_id.encode()).hexdigest()[:8], 16))
        if self.created is None:
            n = next(_created_counter)
            self.created = iso(_BASE_TIME + timedelta(seconds=n, microseconds=1000 * (n % 1000)))
        if not self.v1_id:
            self.v1_id = hex24(self.isic_id)
        if self.v1_label == AUTO:
            self.v1_label = self.diagnosis_1.lower() if self.diagnosis_1 else None
        self.segmentation_list()

    def segmentation_list(self) -> list[FakeSegmentation]:
        """``segmentations`` with missing ids/created filled (created: 1 day apart by index)."""
        for i, seg in enumerate(self.segmentations):
            seg.seg_id = seg.seg_id or hex24(f"{self.isic_id}/segmentation/{i}")
            seg.created = seg.created or iso(_SEG_BASE_TIME + timedelta(days=i))
        return self.segmentations

    @property
    def created_dt(self) -> datetime:
        return datetime.fromisoformat(str(self.created))

    @property
    def content_type(self) -> str:
        return content_type(self.ext)

    @property
    def pixels(self) -> tuple[int, int]:
        """``(pixels_x, pixels_y)`` from the body, or (100, 100) when undecodable."""
        return images.pixel_size(self.body) or (100, 100)

    def clinical(self) -> dict[str, Any]:
        """v2 ``metadata.clinical`` (absent fields omitted)."""
        out: dict[str, Any] = {}
        if self.diagnosis_1 is not None:
            out["diagnosis_1"] = self.diagnosis_1
            if self.diagnosis_1 in _LEVELS:
                out["diagnosis_2"], out["diagnosis_3"], _ = _LEVELS[self.diagnosis_1]
        out.update(lesion_id=self.lesion_id, patient_id=self.patient_id)
        out.update(self.extra_clinical)
        return {k: v for k, v in out.items() if v is not None}

    def acquisition(self) -> dict[str, Any]:
        """v2 ``metadata.acquisition``; always has pixels_x/pixels_y."""
        w, h = self.pixels
        out: dict[str, Any] = {"pixels_x": w, "pixels_y": h, "image_type": "dermoscopic"}
        out.update(self.extra_acquisition)
        return {k: v for k, v in out.items() if v is not None}

    def v1_diagnosis(self) -> str | None:
        return _LEVELS.get(self.diagnosis_1 or "", (None, None, None))[2]

    def mask_for(self, seg: FakeSegmentation) -> bytes:
        """The PNG mask for ``seg``, generated at the image size if not given."""
        if seg.mask is None:
            seg.mask = images.mask_png(*self.pixels, seed=int(seg.seg_id[:8], 16))
        return seg.mask


def make_archive(
    n: int,
    seed: int = 0,
    diagnoses: Iterable[str | None] | None = None,
    size: tuple[int, int] = (64, 48),
    images_per_lesion: int | None = None,
    lesions_per_patient: int | None = None,
) -> list[FakeImage]:
    """``n`` FakeImages ``ISIC_0000000``.. with distinct small JPEGs.

    ``diagnoses`` is cycled through for diagnosis_1 (default Benign, Malignant, ...).
    ``images_per_lesion``: consecutive images share a ``lesion_id`` (``IL_0000000``, ...), and with
    ``lesions_per_patient`` consecutive lesions a ``patient_id`` (``IP_0000000``, ...).
    """
    labels = itertools.cycle(list(diagnoses) if diagnoses is not None else ["Benign", "Malignant"])
    out = []
    for i in range(n):
        lesion = i // images_per_lesion if images_per_lesion else None
        patient = lesion // lesions_per_patient if lesion is not None and lesions_per_patient else None
        out.append(FakeImage(
            isic_id=f"ISIC_{i:07d}", diagnosis_1=next(labels), body=images.jpeg(*size, seed=seed * 1_000_003 + i),
            lesion_id=f"IL_{lesion:07d}" if lesion is not None else None,
            patient_id=f"IP_{patient:07d}" if patient is not None else None,
        ))
    return out
