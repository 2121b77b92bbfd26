"""URL lists as ImageNet shipped them: ``fall11_urls.txt``, gzipped, or inside a tar archive
(``imagenet_fall11_urls.tgz``), recognised by their bytes, not their names, and always streamed:
never extracted to disk, never held in memory. Anything else (another archive, binary, HTML) is
refused at start with one line."""

from __future__ import annotations

import contextlib
import gzip
import re
import tarfile
import zlib
from collections.abc import Iterator
from typing import Protocol

ACCEPTED = "a fall11_urls.txt-style list (<wnid>_<n> TAB URL), gzipped (.gz), or alone in a .tgz/.tar.gz/.tar"
_LINE = re.compile(rb"\s*n\d{8}_\S+\s+https?://\S", re.IGNORECASE)
_OTHER = {b"PK\x03\x04": "a ZIP archive", b"BZh": "a bzip2 file", b"\xfd7zXZ": "an xz file",
          b"7z\xbc\xaf": "a 7-Zip archive", b"Rar!": "a RAR archive", b"%PDF": "a PDF"}


class Stream(Protocol):
    """What a list is read through: the file, a GzipFile over it, or a tar member."""

    def read(self, size: int = -1, /) -> bytes: ...


def _is_tar(head: bytes) -> bool:
    return len(head) >= 262 and head[257:262] == b"ustar"


@contextlib.contextmanager
def open_url_list(path: str) -> Iterator[Stream]:
    """The list's bytes as a stream, whatever it came in. ValueError: not a URL list (one line)."""
    with open(path, "rb") as raw:
        head = raw.read(512)
        raw.seek(0)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as probe:
                inner = probe.read(512)
            if not _is_tar(inner):
                with gzip.open(raw, "rb") as stream:
                    yield stream
                return
        elif not _is_tar(head):
            for magic, what in _OTHER.items():
                if head.startswith(magic):
                    raise ValueError(f"{path} is {what}, not a URL list (accepted: {ACCEPTED})")
            yield raw
            return
        with tarfile.open(fileobj=raw, mode="r|*") as tar:
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and not name.startswith("."):
                    member_stream = tar.extractfile(member)
                    assert member_stream is not None
                    yield member_stream
                    return
            raise ValueError(f"{path} is a tar archive with no file in it (accepted: {ACCEPTED})")


def check_url_list(path: str) -> None:
    """Refuse, with one line, a file that is not a URL list: only its first lines are read."""
    try:
        with open_url_list(path) as stream:
            head = stream.read(64 * 1024)
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:  # zlib.error: a corrupt gzip stream
        raise ValueError(f"{path} cannot be read as a URL list ({exc}; accepted: {ACCEPTED})") from None
    if not head.strip():
        raise ValueError(f"{path} is empty (accepted: {ACCEPTED})")
    if b"\0" in head:
        raise ValueError(f"{path} holds binary data, not a URL list (accepted: {ACCEPTED})")
    lines = [line for line in head.lstrip(b"\xef\xbb\xbf").split(b"\n")[:50] if line.strip()]
    if not any(_LINE.match(line) for line in lines):
        shown = lines[0][:60].decode("utf-8", "replace")
        raise ValueError(f"{path} is not a URL list: its first line is {shown!r} (accepted: {ACCEPTED})")
