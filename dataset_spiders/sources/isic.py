"""The ISIC Archive's two APIs: v2 (current, cursor pages) and v1 (legacy Girder, offset pages).

Both are read into one ``IsicRecord``. Facts and sources: shared/reference/isic-api.md.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, TypeGuard
from urllib.parse import urlencode, urljoin, urlsplit

ISIC_ID = re.compile(r"ISIC_[0-9]{7}")
LABELS = ("benign", "malignant", "indeterminate")
PAGE_SIZE = 100  # v2 clamps limit to 100; v1 takes any
V2_LICENSES = ("CC-0", "CC-BY", "CC-BY-NC")
V1_FILTER_FIELD = "meta.clinical.benign_malignant"
V1_LABEL_VALUES = {
    "benign": ["benign"],
    "malignant": ["malignant"],
    "indeterminate": ["indeterminate", "indeterminate/benign", "indeterminate/malignant"],
}


class RecordError(ValueError):
    """A record lacks what the spider needs; the message says what."""


@dataclass
class IsicRecord:
    """One image of the archive, whatever the API it came from."""

    isic_id: str
    label: str | None  # benign, malignant, indeterminate, or None when unlabeled
    image_url: str | None
    ext: str | None  # from the URL path; v1 download URLs name none
    license: str | None
    attribution: str | None
    acquisition: dict[str, Any] = field(default_factory=dict)
    clinical: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    source_id: str | None = None  # v1's Mongo _id, for segmentation requests
    thumbnail_url: str | None = None  # v2 files.thumbnail_256: the archive's 256-px JPEG
    full_size: int | None = None  # v2 files.full.size: a hint (IPTC written into JPEGs since 2025), not a checksum


def valid_id(isic_id: Any) -> bool:
    return isinstance(isic_id, str) and ISIC_ID.fullmatch(isic_id) is not None


def valid_object_id(value: Any) -> TypeGuard[str]:
    """A v1 (Mongo) id: 24 hex digits, safe to put in a URL path."""
    return isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{24}", value) is not None


def url_extension(url: str) -> str | None:
    """The extension of a URL's path (never its query string), lower-cased, or None."""
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    if "." not in name:
        return None
    ext = name.rsplit(".", 1)[1].lower()
    return ext if ext.isalnum() and len(ext) <= 5 else None


# --- v2 -------------------------------------------------------------------------------------


def v2_query(label_filter: str | None, query: str | None) -> str | None:
    """The search expression: ``diagnosis_1:Benign AND (query)`` when both are given."""
    terms = []
    if label_filter:
        terms.append(f"diagnosis_1:{label_filter.capitalize()}")
    if query:
        terms.append(f"({query})" if label_filter else query)
    return " AND ".join(terms) or None


def v2_search_url(api_url: str, query: str | None, collections: tuple[int, ...]) -> str:
    params: dict[str, str] = {"limit": str(PAGE_SIZE)}
    if query:
        params["query"] = query
    if collections:
        params["collections"] = ",".join(map(str, collections))
    return f"{api_url}/images/search/?{urlencode(params)}"


def v2_collection_url(api_url: str, collection: int) -> str:
    return f"{api_url}/collections/{collection}/"


def v2_license_url(api_url: str, license_name: str) -> str:
    return f"{api_url}/zip-download/license-file/{license_name}/"


def v2_label(clinical: dict[str, Any]) -> str | None:
    """``diagnosis_1`` (Benign, Malignant, Indeterminate); a record without it, from before
    ``benign_malignant`` was removed (2025: cached descriptions, mirrors), is labelled from that
    field as v1 records are (``indeterminate/benign`` counts as indeterminate)."""
    value = clinical.get("diagnosis_1")
    if value is None:
        return v1_label(clinical.get("benign_malignant"))
    return value.lower() if isinstance(value, str) and value.lower() in LABELS else None


def image_url(value: Any, base: str) -> str | None:
    """An http(s) image URL from the record, resolved against the page; None for anything else."""
    if not isinstance(value, str) or not value.strip():
        return None
    url = urljoin(base, value.strip())
    return url if urlsplit(url).scheme in ("http", "https") and urlsplit(url).hostname else None


def _object(parent: dict[str, Any], key: str) -> dict[str, Any]:
    """The JSON object at ``key``; {} when there is none (absent, null, or not an object)."""
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


def v2_record(raw: Any, page_url: str = "") -> IsicRecord:
    if not isinstance(raw, dict):
        raise RecordError(f"a result is not a JSON object: {str(raw)[:80]}")
    metadata = _object(raw, "metadata")
    clinical = _object(metadata, "clinical")
    acquisition = _object(metadata, "acquisition")
    files = _object(raw, "files")
    full = _object(files, "full")
    thumbnail = _object(files, "thumbnail_256")
    url = image_url(full.get("url"), page_url)
    size = full.get("size")
    return IsicRecord(
        isic_id=str(raw.get("isic_id")),
        label=v2_label(clinical),
        image_url=url,
        ext=url_extension(url) if url else None,
        license=raw.get("copyright_license") if isinstance(raw.get("copyright_license"), str) else None,
        attribution=raw.get("attribution") if isinstance(raw.get("attribution"), str) else None,
        acquisition=acquisition,
        clinical=clinical,
        raw=raw,
        thumbnail_url=image_url(thumbnail.get("url"), page_url),
        full_size=size if type(size) is int and size >= 0 else None,
    )


def page_records(results: list[Any], page_url: str, skip: int) -> tuple[list[IsicRecord], int]:
    """A page's records after skipping the first ``skip`` results (what ``offset`` has left to
    skip), and how many are still to skip; a result that is no record is left out, with a warning."""
    records = []
    for raw in results:
        if skip:
            skip -= 1
            continue
        try:
            records.append(v2_record(raw, page_url=page_url))
        except RecordError as exc:
            logging.getLogger(__name__).warning("Skipping a record: %s", exc)
    return records, skip


def v2_page(data: Any, page_url: str) -> tuple[list[Any], str | None, int | None]:
    """Results, next URL and count of a v2 page; RecordError when it is not the envelope."""
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise RecordError("the page is not the API's {count, next, previous, results} envelope")
    next_url = data.get("next")
    if next_url is not None:
        if not isinstance(next_url, str):
            raise RecordError(f"the page's next link is not a URL: {str(next_url)[:80]}")
        next_url = urljoin(page_url, next_url)  # the API sends absolute links; a mirror may not
        if not next_url.startswith(("http://", "https://")):
            raise RecordError(f"the page's next link is not an HTTP URL: {next_url[:80]}")
    count = data.get("count") if isinstance(data.get("count"), int) else None
    return data["results"], next_url, count


# --- v1 -------------------------------------------------------------------------------------


def v1_list_url(api_url: str, offset: int, label_filter: str | None, limit: int = PAGE_SIZE) -> str:
    params = {"limit": str(limit), "offset": str(offset), "sort": "name", "sortdir": "1", "detail": "true"}
    if label_filter:
        values = V1_LABEL_VALUES[label_filter]
        operand = {"identifier": V1_FILTER_FIELD, "type": "string"}
        ast = (
            {"operator": "=", "operands": [operand, values[0]]}
            if len(values) == 1
            else {"operator": "in", "operands": [operand, values]}
        )
        params["filter"] = json.dumps(ast, separators=(",", ":"))
    return f"{api_url}/image?{urlencode(params)}"


def v1_image_url(api_url: str, source_id: str) -> str:
    return f"{api_url}/image/{source_id}"


def v1_download_url(api_url: str, source_id: str) -> str:
    return f"{api_url}/image/{source_id}/download?contentDisposition=inline"


def v1_segmentations_url(api_url: str, source_id: str) -> str:
    return f"{api_url}/segmentation?{urlencode({'imageId': source_id, 'limit': '0'})}"


def v1_mask_url(api_url: str, segmentation_id: str) -> str:
    return f"{api_url}/segmentation/{segmentation_id}/mask?contentDisposition=inline"


def v1_label(value: Any) -> str | None:
    """``indeterminate/benign`` and ``indeterminate/malignant`` count as indeterminate."""
    if not isinstance(value, str):
        return None
    value = value.lower().split("/", 1)[0]
    return value if value in LABELS else None


def v1_record(raw: Any, api_url: str) -> IsicRecord:
    if not isinstance(raw, dict):
        raise RecordError(f"a result is not a JSON object: {str(raw)[:80]}")
    meta = _object(raw, "meta")
    clinical = _object(meta, "clinical")
    acquisition = _object(meta, "acquisition")
    dataset = _object(raw, "dataset")
    source_id = raw.get("_id")
    if not valid_object_id(source_id):
        raise RecordError(f"record {str(raw.get('name'))[:40]!r} has no valid _id")
    attribution = dataset.get("attribution") or dataset.get("name")
    return IsicRecord(
        isic_id=str(raw.get("name")),
        label=v1_label(clinical.get("benign_malignant")),
        image_url=v1_download_url(api_url, source_id),
        ext=None,
        license=dataset.get("license") if isinstance(dataset.get("license"), str) else None,
        attribution=attribution if isinstance(attribution, str) else None,
        acquisition=acquisition,
        clinical=clinical,
        raw=raw,
        source_id=source_id,
    )


def pick_segmentations(listing: Any, preferred_skill: str | None) -> list[dict[str, Any]]:
    """Candidate segmentations in the order to try: not failed; preferred skill first, newest first."""
    if not isinstance(listing, list):
        raise RecordError("the segmentation list is not a JSON list")
    usable = [
        s for s in listing if isinstance(s, dict) and not s.get("failed") and valid_object_id(s.get("_id"))
    ]
    usable.sort(key=lambda s: str(s.get("created", "")), reverse=True)
    if preferred_skill:
        usable.sort(key=lambda s: s.get("skill") != preferred_skill)  # stable: newest first within
    return usable


def record_from_description(raw: dict[str, Any]) -> IsicRecord:
    """Read a saved description back, whichever API wrote it."""
    if "isic_id" in raw:
        return v2_record(raw)
    return v1_record(raw, api_url="")


#: Search fields the archive retired, and what replaced them (the archive's metadata history:
#: ``diagnosis`` became ``diagnosis_1``..``diagnosis_5`` in October 2024; ``benign_malignant`` was
#: deprecated in December 2024 and removed in June 2025, the label now being ``diagnosis_1``).
RETIRED_FIELDS = {
    "diagnosis": "diagnosis_1 .. diagnosis_5 (e.g. diagnosis_1:Benign, diagnosis_3:\"Melanoma Invasive\")",
    "benign_malignant": "diagnosis_1 (diagnosis_1:Benign, diagnosis_1:Malignant, diagnosis_1:Indeterminate)",
}
_FIELD = re.compile(r"(?<![\w.])-?([A-Za-z_][A-Za-z0-9_]*)\s*:")


def retired_fields_hint(query: str | None) -> str:
    """A hint naming the fields that replaced retired ones a rejected query uses ("" if none)."""
    used = {m.group(1) for m in _FIELD.finditer(query or "")}
    hints = [f"{old} was retired; use {new}" for old, new in RETIRED_FIELDS.items() if old in used]
    return f" ({'; '.join(hints)})" if hints else ""
