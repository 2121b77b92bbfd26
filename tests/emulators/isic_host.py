"""S3-bucket-like static host for ISIC image bytes (``images/``, ``thumbnails/``)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from email.utils import formatdate

from . import images
from .behaviours import serve_with_behaviour
from .isic_data import FakeImage, as_list
from .server import EmulatorServer, Request

_S3_ERRORS = {
    404: ("NoSuchKey", "The specified key does not exist."),
    410: ("Gone", "The object is gone."),
    429: ("SlowDown", "Please reduce your request rate."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
}


def s3_error(req: Request, status: int, headers: Mapping[str, str] | None = None) -> None:
    """An S3-style XML error body."""
    code, message = _S3_ERRORS.get(status, ("Error", f"HTTP {status}"))
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Key>{req.path.lstrip('/')}</Key><RequestId>EMULATOR</RequestId></Error>"
    )
    req.send(status, body.encode(), "application/xml", headers)


def object_headers(body: bytes) -> dict[str, str]:
    """Headers S3 sends with an object (ETag, Last-Modified, attachment disposition)."""
    return {
        "ETag": f'"{hashlib.md5(body).hexdigest()}"',
        "Last-Modified": formatdate(1_700_000_000, usegmt=True),
        "Accept-Ranges": "bytes",
        "Content-Disposition": "attachment",
    }


class ImageHost(EmulatorServer):
    """Serves ``GET /images/{isic_id}.{ext}`` (applying ``FakeImage.behaviour``) and
    ``GET /thumbnails/{isic_id}_thumbnail.jpg`` (always ok)."""

    def __init__(self, fake_images: Iterable[FakeImage]) -> None:
        super().__init__()
        self.images: list[FakeImage] = as_list(fake_images)
        self._thumbs: dict[str, bytes] = {}
        self.route("GET", r"/images/(?P<isic_id>[^/]+)\.(?P<ext>[A-Za-z]+)", self._image)
        self.route("GET", r"/thumbnails/(?P<isic_id>[^/]+)_thumbnail\.jpg", self._thumbnail)

    def image_url(self, img: FakeImage) -> str:
        return f"{self.url}/images/{img.isic_id}.{img.ext}"

    def thumbnail_url(self, img: FakeImage) -> str:
        return f"{self.url}/thumbnails/{img.isic_id}_thumbnail.jpg"

    def thumbnail(self, img: FakeImage) -> bytes:
        """The (cached) 256px JPEG thumbnail of ``img``."""
        if img.isic_id not in self._thumbs:
            self._thumbs[img.isic_id] = images.thumbnail_jpeg(img.body)
        return self._thumbs[img.isic_id]

    def find(self, isic_id: str) -> FakeImage | None:
        return next((img for img in self.images if img.isic_id == isic_id), None)

    def not_found(self, req: Request) -> None:
        s3_error(req, 404)

    def _image(self, req: Request) -> None:
        img = self.find(req.match["isic_id"])
        if img is None or img.ext != req.match["ext"]:
            return s3_error(req, 404)
        serve_with_behaviour(req, img.behaviour, img.body, img.content_type, object_headers(img.body), s3_error)

    def _thumbnail(self, req: Request) -> None:
        img = self.find(req.match["isic_id"])
        if img is None:
            return s3_error(req, 404)
        body = self.thumbnail(img)
        req.send(200, body, "image/jpeg", object_headers(body))
