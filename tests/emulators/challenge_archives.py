"""The ISIC challenge data bucket (``isic-challenge-data.s3.amazonaws.com``): ground-truth ZIP
archives as S3 serves them, single byte ranges answered 206 with ``Content-Range`` (suffix and
open-ended ranges too, 416 past the end), or, with ``ranges=False``, every request answered 200
with the whole object (a server without Range support). Counts the body bytes it sends.
"""

from __future__ import annotations

import io
import re
import threading
import zipfile
from collections.abc import Iterable, Mapping

from .isic_host import object_headers, s3_error
from .server import EmulatorServer, Request

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")

#: Member layouts of the real archives: the 2018 Task 1 sets (``_segmentation.png``, a folder
#: named as the archive) and 2016 Part 1 (``_Segmentation.png``).
LAYOUT_2018 = "ISIC2018_Task1_Training_GroundTruth/{isic_id}_segmentation.png"
LAYOUT_2016 = "ISBI2016_ISIC_Part1_Training_GroundTruth/{isic_id}_Segmentation.png"


def make_zip(members: Iterable[tuple[str, bytes, int]], extra: Mapping[str, bytes] | None = None) -> bytes:
    """A ZIP archive (made by ``zipfile``) of ``(name, bytes, ZIP_STORED or ZIP_DEFLATED)``;
    ``extra``: a member's extra field (in its local header and its directory entry)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data, method in members:
            info = zipfile.ZipInfo(name, (2018, 1, 1, 0, 0, 0))
            info.extra = (extra or {}).get(name, b"")
            archive.writestr(info, data, compress_type=method)
    return buffer.getvalue()


class ChallengeArchives(EmulatorServer):
    """Serves ``GET /{year}/{name}.zip`` from ``archives`` (path -> bytes)."""

    def __init__(self, archives: Mapping[str, bytes], ranges: bool = True) -> None:
        super().__init__()
        self.archives = dict(archives)
        self.ranges = ranges
        self._sent_lock = threading.Lock()
        self.sent: dict[str, int] = {}  # body bytes sent, per path
        self.route("GET", r"/(?P<path>.+\.zip)", self._object)

    def url_of(self, path: str) -> str:
        return f"{self.url}/{path}"

    def bytes_sent(self) -> int:
        with self._sent_lock:
            return sum(self.sent.values())

    def _object(self, req: Request) -> None:
        body = self.archives.get(req.match["path"])
        if body is None:
            return s3_error(req, 404)
        headers = object_headers(body)
        wanted = _RANGE.fullmatch((req.headers.get("Range") or "").strip()) if self.ranges else None
        if wanted is None or wanted[1] == wanted[2] == "":  # no (single) range: the whole object
            return self._send(req, 200, body, headers)
        total = len(body)
        if wanted[1] == "":  # the last N bytes
            start, end = max(0, total - int(wanted[2])), total - 1
        else:
            start, end = int(wanted[1]), min(total - 1, int(wanted[2])) if wanted[2] else total - 1
        if start >= total or start > end:
            return req.send(416, b"", "application/xml", {"Content-Range": f"bytes */{total}"})
        headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        self._send(req, 206, body[start:end + 1], headers)

    def _send(self, req: Request, status: int, body: bytes, headers: dict[str, str]) -> None:
        with self._sent_lock:
            self.sent[req.path] = self.sent.get(req.path, 0) + len(body)
        req.send(status, body, "application/zip", headers)
