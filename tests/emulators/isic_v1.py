"""Emulator of the legacy ISIC API v1 (Girder, ``/api/v1``), reference §1.2, §1.3, §3.3, §3.4."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from .behaviours import serve_with_behaviour
from .isic_data import FakeImage, FakeSegmentation, as_list, hex24
from .server import EmulatorServer, HttpError, Request

_FAILED_MASK = "This segmentation is failed, and thus has no mask."
PAGE_MODES = ("normal", "recycle", "shift")
_MISSING = object()


def girder_error(message: str, status: int = 400) -> HttpError:
    """Girder's error shape ``{"message", "type": "rest"}``."""
    return HttpError(status, {"message": message, "type": "rest"})


def _lookup(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        doc = doc.get(part, _MISSING) if isinstance(doc, dict) else _MISSING
    return doc


def eval_filter(ast: Any, doc: dict[str, Any]) -> bool:
    """Evaluate a v1 ``filter`` JSON AST (IA utility/querylang.py) against ``doc``."""
    if not isinstance(ast, dict) or not isinstance(ast.get("operands"), list):
        raise girder_error("Invalid filter: expected {operator, operands}.")
    op, operands = ast.get("operator"), ast["operands"]
    if op in ("and", "or"):
        results = [eval_filter(o, doc) for o in operands]
        return all(results) if op == "and" else any(results)
    if op == "not":
        return not eval_filter(operands[0], doc)
    if len(operands) != 2 or not isinstance(operands[0], dict) or "identifier" not in operands[0]:
        raise girder_error(f"Invalid filter operands for {op!r}.")
    value = _lookup(doc, operands[0]["identifier"])
    value = None if value is _MISSING else value
    rhs = operands[1]
    if op in ("in", "not in"):
        if not isinstance(rhs, list):
            raise girder_error("Invalid filter: 'in' needs a list.")
        found = value in [None if v == "__null__" else v for v in rhs]
        return found if op == "in" else not found
    compare = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    if op not in compare:
        raise girder_error(f"Invalid filter operator {op!r}.")
    try:
        return bool(compare[op](value, rhs))
    except TypeError:
        return False


def _int_param(req: Request, name: str, default: int) -> int:
    raw = req.arg(name)
    try:
        return default if raw is None else int(raw)
    except ValueError:
        raise girder_error(f"Invalid value for integer parameter {name}: {raw}.") from None


def _window(items: list[Any], req: Request, default_limit: int = 50) -> list[Any]:
    """Girder paging: ``offset`` then ``limit`` (0 = no limit)."""
    limit, offset = _int_param(req, "limit", default_limit), _int_param(req, "offset", 0)
    items = items[max(offset, 0) :]
    return items if limit <= 0 else items[:limit]


class IsicV1Server(EmulatorServer):
    """Legacy Girder API: image list/description/download and segmentations.

    ``page_mode`` (settable at any time) changes the image list's offset pages:
    ``"recycle"`` (past the last record, every offset returns records already served instead
    of an empty list, rotated so that no page is the page before: it never ends);
    ``"shift"`` (pages at an offset over 0 start ``overlap`` records earlier, as if records
    were added before the offset mid-listing: one page repeats some records but brings new
    ones; legitimate).
    """

    def __init__(self, fake_images: Iterable[FakeImage], page_mode: str = "normal") -> None:
        super().__init__()
        self.images: list[FakeImage] = as_list(fake_images)
        self.page_mode = page_mode
        self.overlap = 90  # "shift" mode: how many records earlier pages after the first start
        api = "/api/v1"
        self.route("GET", rf"{api}/image", self._list)
        self.route("GET", rf"{api}/image/(?P<id>[^/]+)", self._describe)
        self.route("GET", rf"{api}/image/(?P<id>[^/]+)/download", self._download)
        self.route("GET", rf"{api}/segmentation", self._segmentations)
        self.route("GET", rf"{api}/segmentation/(?P<id>[^/]+)", self._segmentation)
        self.route("GET", rf"{api}/segmentation/(?P<id>[^/]+)/mask", self._mask)

    # -- JSON shapes -------------------------------------------------------
    def description(self, img: FakeImage) -> dict[str, Any]:
        """The full v1 image description (§1.3)."""
        w, h = img.pixels
        clinical: dict[str, Any] = {
            k: img.extra_clinical[k] for k in ("age_approx", "sex", "anatom_site_general") if k in img.extra_clinical
        }
        if img.v1_label is not None:
            clinical["benign_malignant"] = img.v1_label
        clinical.update(
            diagnosis=img.v1_diagnosis(),
            diagnosis_confirm_type=None,
            melanocytic=img.diagnosis_1 in ("Benign", "Malignant"),
        )
        return {
            "_id": img.v1_id,
            "_modelType": "image",
            "name": img.isic_id,
            "created": img.created,
            "updated": img.created,
            "creator": {"_id": hex24("creator"), "name": "User 6VSN"},
            "dataset": {
                "_accessLevel": 0,
                "_id": hex24(f"dataset/{img.license}"),
                "name": "Emulated Dataset",
                "description": "Moles and melanomas.",
                "license": img.license,
                "updated": img.created,
            },
            "meta": {"acquisition": {"image_type": "dermoscopic", "pixelsX": w, "pixelsY": h}, "clinical": clinical},
            "notes": {
                "reviewed": {"accepted": True, "time": img.created, "userId": hex24("reviewer")},
                "tags": list(img.tags),
            },
        }

    @staticmethod
    def segmentation_summary(seg: FakeSegmentation) -> dict[str, Any]:
        return {"_id": seg.seg_id, "created": seg.created, "failed": seg.failed, "skill": seg.skill}

    # -- lookups -----------------------------------------------------------
    def _image(self, image_id: str | None) -> FakeImage:
        img = next((i for i in self.images if i.v1_id == image_id), None)
        if img is None:
            raise girder_error(f"Invalid image id ({image_id}).")
        return img

    def _find_segmentation(self, seg_id: str) -> tuple[FakeImage, FakeSegmentation]:
        for img in self.images:
            for seg in img.segmentation_list():
                if seg.seg_id == seg_id:
                    return img, seg
        raise girder_error(f"Invalid segmentation id ({seg_id}).")

    # -- handlers ----------------------------------------------------------
    def _list(self, req: Request) -> None:
        sort, sortdir = req.arg("sort", "name"), _int_param(req, "sortdir", 1)
        if sort not in ("_id", "name", "created"):
            raise girder_error(f"Invalid sort field {sort!r}.")
        if sum(req.arg(k) is not None for k in ("name", "filter", "imageIds")) > 1:
            raise girder_error("Only one of 'name', 'filter' or 'imageIds' may be given.")
        docs = [self.description(img) for img in self.images]
        if (name := req.arg("name")) is not None:
            docs = [d for d in docs if d["name"] == name]
        if (raw_filter := req.arg("filter")) is not None:
            try:
                ast = json.loads(raw_filter)
            except ValueError:
                raise girder_error("The filter must be a JSON object.") from None
            docs = [d for d in docs if eval_filter(ast, d)]
        if (raw_ids := req.arg("imageIds")) is not None:
            try:
                ids = set(json.loads(raw_ids))
            except (ValueError, TypeError):
                raise girder_error("The imageIds must be a JSON array.") from None
            docs = [d for d in docs if d["_id"] in ids]
        docs.sort(key=lambda d: d[sort], reverse=sortdir < 0)
        docs = self._list_page(docs, req)
        if req.arg("detail", "false") != "true":
            docs = [{"_id": d["_id"], "name": d["name"], "updated": d["updated"]} for d in docs]
        req.send_json(docs)

    def _list_page(self, docs: list[dict[str, Any]], req: Request) -> list[dict[str, Any]]:
        """The window of the list at ``offset``, as ``page_mode`` says."""
        limit, offset = _int_param(req, "limit", 50), max(_int_param(req, "offset", 0), 0)
        if self.page_mode == "shift" and offset > 0:
            offset = max(offset - self.overlap, 0)
        elif self.page_mode == "recycle" and docs and offset >= len(docs):
            size = len(docs) if limit <= 0 else min(limit, len(docs))
            start = ((offset - len(docs)) // size + 1) % len(docs)  # one further each page a client steps
            docs, offset = docs[start:] + docs[:start], 0
        docs = docs[offset:]
        return docs if limit <= 0 else docs[:limit]

    def _describe(self, req: Request) -> None:
        req.send_json(self.description(self._image(req.match["id"])))

    def _download(self, req: Request) -> None:
        img = self._image(req.match["id"])
        disposition = "attachment" if req.arg("contentDisposition") == "attachment" else "inline"
        headers = {"Content-Disposition": f'{disposition}; filename="{img.isic_id}.{img.ext}"'}
        serve_with_behaviour(req, img.behaviour, img.body, img.content_type, headers, self._error)

    def _segmentations(self, req: Request) -> None:
        if req.arg("imageId") is None:
            raise girder_error("Parameter 'imageId' is required.")
        img = self._image(req.arg("imageId"))
        sort, sortdir = req.arg("sort", "created"), _int_param(req, "sortdir", -1)
        if sort not in ("_id", "created", "skill"):
            raise girder_error(f"Invalid sort field {sort!r}.")
        segs = sorted(
            img.segmentation_list(), key=lambda s: getattr(s, "seg_id" if sort == "_id" else sort), reverse=sortdir < 0
        )
        req.send_json([self.segmentation_summary(s) for s in _window(segs, req)])

    def _segmentation(self, req: Request) -> None:
        img, seg = self._find_segmentation(req.match["id"])
        body = self.segmentation_summary(seg)
        body.update(
            imageId=img.v1_id,
            creator={"_id": hex24("segmenter"), "name": "User Q2ZA"},
            meta={},
            reviews=[{"userId": hex24("segmenter"), "skill": seg.skill, "time": seg.created, "approved": True}],
        )
        req.send_json(body)

    def _mask(self, req: Request) -> None:
        img, seg = self._find_segmentation(req.match["id"])
        if seg.failed or seg.behaviour == "410":
            raise girder_error(_FAILED_MASK, 410)
        headers = {"Content-Disposition": f'inline; filename="{img.isic_id}_segmentation.png"'}
        serve_with_behaviour(req, seg.behaviour, img.mask_for(seg), "image/png", headers, self._error)

    @staticmethod
    def _error(req: Request, status: int, headers: Mapping[str, str]) -> None:
        req.send_json({"message": f"HTTP {status}", "type": "rest"}, status, headers)

    def not_found(self, req: Request) -> None:
        req.send_json({"message": f'No matching route for "{req.method} {req.path}"', "type": "rest"}, 404)
