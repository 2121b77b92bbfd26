"""The ZIP format, as much as reading single members of a remote archive by byte ranges needs.

Pure functions over bytes: find the central directory from the archive's last bytes (the End
Of Central Directory record, Zip64 too), list its entries, find where a member's data starts
after its local header (whose lengths may differ from the central ones), and inflate a member
with its size and CRC-32 checked. Fetching the bytes is the caller's business.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import asdict, dataclass
from typing import Any

EOCD = b"PK\x05\x06"
EOCD64 = b"PK\x06\x06"
EOCD64_LOCATOR = b"PK\x06\x07"
CENTRAL = b"PK\x01\x02"
LOCAL = b"PK\x03\x04"
EOCD_SIZE, EOCD64_SIZE, LOCATOR_SIZE, CENTRAL_SIZE, LOCAL_SIZE = 22, 56, 20, 46, 30
#: The most an archive's tail can need: the EOCD record and a comment of at most 64 KiB.
TAIL = EOCD_SIZE + 0xFFFF
STORED, DEFLATED = 0, 8
_ZIP64_EXTRA = 0x0001
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", re.I)


class ZipError(ValueError):
    """The bytes are not the ZIP structure they should be (or use a feature we do not read)."""


class NeedBytes(Exception):
    """The Zip64 end record lies before the tail that was read: read ``length`` bytes at ``offset``."""

    def __init__(self, offset: int, length: int):
        super().__init__(f"need {length} bytes at {offset}")
        self.offset, self.length = offset, length


@dataclass(frozen=True)
class Directory:
    """Where the central directory is, and how many entries it has."""

    offset: int
    size: int
    entries: int


@dataclass(frozen=True)
class Member:
    """One central directory entry: enough to fetch and inflate the member."""

    name: str
    method: int
    crc: int
    compressed: int
    size: int
    offset: int  # of the local header
    flags: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Member:
        method, crc, compressed, size, offset = (int(obj[k]) for k in ("method", "crc", "compressed", "size", "offset"))
        return cls(str(obj["name"]), method, crc, compressed, size, offset, flags=int(obj.get("flags", 0)))


def content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``Content-Range: bytes 10-19/100`` as (10, 19, 100); the total is None when ``*``."""
    m = _CONTENT_RANGE.fullmatch(value or "")
    if not m:
        return None
    return int(m[1]), int(m[2]), None if m[3] == "*" else int(m[3])


def locate_directory(tail: bytes, tail_start: int) -> Directory:
    """The central directory of an archive whose bytes from ``tail_start`` to its end are ``tail``.

    Raises ``NeedBytes`` when a Zip64 end record lies before the tail, ``ZipError`` otherwise.
    """
    pos = tail.rfind(EOCD)
    while pos >= 0:  # the last signature whose record and comment end exactly at the end
        fits = pos + EOCD_SIZE <= len(tail)
        if fits and pos + EOCD_SIZE + struct.unpack_from("<H", tail, pos + 20)[0] == len(tail):
            break
        pos = tail.rfind(EOCD, 0, pos)
    if pos < 0:
        raise ZipError("no end of central directory record in the archive's last bytes: not a ZIP archive")
    disk, cd_disk, _, entries, size, offset, _ = struct.unpack_from("<HHHHIIH", tail, pos + 4)
    if disk or cd_disk:
        raise ZipError("a multi-disk archive")
    locator = pos - LOCATOR_SIZE
    if locator >= 0 and tail[locator:locator + 4] == EOCD64_LOCATOR:
        _, record_disk, record, _ = struct.unpack_from("<4sIQI", tail, locator)
        if record_disk:
            raise ZipError("a multi-disk Zip64 archive")
        if record < tail_start:
            raise NeedBytes(record, EOCD64_SIZE)
        return parse_eocd64(tail[record - tail_start:record - tail_start + EOCD64_SIZE], record)
    if entries == 0xFFFF or 0xFFFFFFFF in (size, offset):
        raise ZipError("Zip64 sizes without a Zip64 end record")
    return _checked(Directory(offset, size, entries), tail_start + pos)


def parse_eocd64(data: bytes, at: int) -> Directory:
    """The Zip64 end of central directory record (its fixed 56 bytes), found at byte ``at``."""
    if len(data) < EOCD64_SIZE or data[:4] != EOCD64:
        raise ZipError("no Zip64 end of central directory record where its locator points")
    _, _, _, _, disk, cd_disk, _, entries, size, offset = struct.unpack_from("<4sQHHIIQQQQ", data)
    if disk or cd_disk:
        raise ZipError("a multi-disk Zip64 archive")
    return _checked(Directory(offset, size, entries), at)


def _checked(directory: Directory, end: int) -> Directory:
    """``directory`` as an end record at byte ``end`` gives it, if it can be: it lies before the
    record (never past the archive's end) and has room for its entries. Else ZipError."""
    if directory.offset + directory.size > end:
        raise ZipError(f"not a valid ZIP: its central directory ({directory.size} bytes at byte {directory.offset}) "
                       f"would end past its end record, at byte {end}")
    if directory.size < directory.entries * CENTRAL_SIZE:
        raise ZipError(f"not a valid ZIP: {directory.entries} entries cannot fit in its {directory.size}-byte "
                       "central directory")
    return directory


def parse_directory(data: bytes, entries: int | None = None) -> list[Member]:
    """Every entry of a central directory, in order (as many as ``entries``, when given)."""
    members: list[Member] = []
    pos = 0
    while pos + CENTRAL_SIZE <= len(data) and data[pos:pos + 4] == CENTRAL:
        (_, _, _, flags, method, _, _, crc, compressed, size, name_len, extra_len, comment_len, _, _, _,
         offset) = struct.unpack_from("<4sHHHHHHIIIHHHHHII", data, pos)
        end = pos + CENTRAL_SIZE + name_len + extra_len + comment_len
        if end > len(data):
            raise ZipError("the central directory ends inside an entry")
        raw_name = data[pos + CENTRAL_SIZE:pos + CENTRAL_SIZE + name_len]
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        extra = data[pos + CENTRAL_SIZE + name_len:pos + CENTRAL_SIZE + name_len + extra_len]
        size, compressed, offset = _zip64_values(extra, size, compressed, offset)
        members.append(Member(name, method, crc, compressed, size, offset, flags))
        pos = end
    if pos != len(data):
        raise ZipError(f"the central directory holds something else at byte {pos}")
    if entries is not None and len(members) != entries:
        raise ZipError(f"not a valid ZIP: its central directory lists {len(members)} entries, its end record {entries}")
    return members


def _zip64_values(extra: bytes, size: int, compressed: int, offset: int) -> tuple[int, int, int]:
    """Sizes and offset from the Zip64 extra field, for those whose 32-bit value is 0xFFFFFFFF."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        if tag == _ZIP64_EXTRA:
            values = list(struct.unpack_from(f"<{length // 8}Q", extra, pos + 4))
            out = []
            for value in (size, compressed, offset):
                out.append(values.pop(0) if value == 0xFFFFFFFF and values else value)
            return out[0], out[1], out[2]
        pos += 4 + length
    return size, compressed, offset


def data_offset(header: bytes, member: Member) -> int:
    """Where a member's data starts, from the first bytes of its local header (at least 30)."""
    if len(header) < LOCAL_SIZE or header[:4] != LOCAL:
        raise ZipError(f"no local header where the central directory puts {member.name}")
    name_len, extra_len = struct.unpack_from("<HH", header, 26)
    return member.offset + LOCAL_SIZE + int(name_len) + int(extra_len)


def extract(member: Member, data: bytes) -> bytes:
    """The member's bytes from its compressed data, with size and CRC-32 checked."""
    if member.flags & 0x1:
        raise ZipError(f"{member.name} is encrypted")
    if len(data) < member.compressed:
        raise ZipError(f"{member.name}: {len(data)} of its {member.compressed} compressed bytes")
    data = data[:member.compressed]
    if member.method == STORED:
        out = data
    elif member.method == DEFLATED:
        inflater = zlib.decompressobj(-15)
        try:
            out = inflater.decompress(data, member.size + 1)
        except zlib.error as exc:
            raise ZipError(f"{member.name} does not inflate: {exc}") from None
    else:
        raise ZipError(f"{member.name} uses compression method {member.method} (only stored and deflated are read)")
    if len(out) != member.size:
        raise ZipError(f"{member.name} inflates to {len(out)} bytes, not the {member.size} the directory says")
    if zlib.crc32(out) != member.crc:
        raise ZipError(f"{member.name} fails its CRC-32 check")
    return out
