"""The ZIP reader of the v2 masks (sources/zip_ranges.py), on archives made by ``zipfile``: the
tail alone finds the directory, and a member is read from its own bytes alone."""

from __future__ import annotations

import io
import os
import struct
import zipfile

import pytest

from dataset_spiders.sources import zip_ranges
from dataset_spiders.spiders.isic_masks import mask_id


def archive(members, comment=b"", **kwargs) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", **kwargs) as zf:
        for name, data, method in members:
            zf.writestr(zipfile.ZipInfo(name, (2016, 1, 1, 0, 0, 0)), data, compress_type=method)
        zf.comment = comment
    return buffer.getvalue()


def read_member(blob: bytes, member: zip_ranges.Member) -> bytes:
    """What the spider does with two ranges: the local header, then exactly the data."""
    head = blob[member.offset:member.offset + 30]
    start = zip_ranges.data_offset(head, member)
    return zip_ranges.extract(member, blob[start:start + member.compressed])


def members_of(blob: bytes, tail_size: int = zip_ranges.TAIL) -> list[zip_ranges.Member]:
    tail_start = max(0, len(blob) - tail_size)
    directory = zip_ranges.locate_directory(blob[tail_start:], tail_start)
    return zip_ranges.parse_directory(blob[directory.offset:directory.offset + directory.size])


CONTENT = [
    ("ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png", os.urandom(3000), zipfile.ZIP_STORED),
    ("ISIC2018_Task1_Training_GroundTruth/ISIC_0000001_segmentation.png", b"\0" * 50_000, zipfile.ZIP_DEFLATED),
    ("ISIC2018_Task1_Training_GroundTruth/LICENSE.txt", b"CC-BY-NC", zipfile.ZIP_DEFLATED),
]


@pytest.mark.parametrize("comment", [b"", b"a comment holding PK\x05\x06 and more" * 3])
def test_every_member_is_read_from_the_tail_and_its_own_bytes(comment):
    blob = archive(CONTENT, comment)
    found = members_of(blob, tail_size=len(comment) + 22 + 400)  # the directory lies partly before this tail
    assert [m.name for m in found] == [name for name, _, _ in CONTENT]
    assert [m.method for m in found] == [0, 8, 8]
    for member, (_, data, _) in zip(found, CONTENT, strict=True):
        assert read_member(blob, member) == data
    assert found[1].compressed < 1000 < found[1].size  # deflated for real


def test_a_local_header_with_a_longer_extra_field_than_the_central_one():
    blob = bytearray(archive(CONTENT[:1]))
    member = members_of(bytes(blob))[0]
    # give the local header a 9-byte extra field the central directory does not have
    name_len = int.from_bytes(blob[26:28], "little")
    blob[28:30] = (9).to_bytes(2, "little")
    blob[30 + name_len:30 + name_len] = b"\x99\x99\x05\x00hello"
    moved = zip_ranges.Member(member.name, member.method, member.crc, member.compressed, member.size, 0)
    assert zip_ranges.data_offset(bytes(blob[:30]), moved) == 30 + name_len + 9
    assert read_member(bytes(blob), moved) == CONTENT[0][1]


def test_zip64_end_records_and_extra_fields(monkeypatch):
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)  # Zip64 end record and locator
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 100)  # Zip64 extra fields for these (small) sizes
    blob = archive(CONTENT, allowZip64=True)
    tail_start = len(blob) - 22 - 20  # the EOCD and its locator only: the Zip64 record lies before
    assert blob[tail_start:tail_start + 4] == zip_ranges.EOCD64_LOCATOR
    with pytest.raises(zip_ranges.NeedBytes) as need:
        zip_ranges.locate_directory(blob[tail_start:], tail_start)
    at = need.value.offset
    directory = zip_ranges.parse_eocd64(blob[at:at + need.value.length], at)
    found = zip_ranges.parse_directory(blob[directory.offset:directory.offset + directory.size])
    assert directory.entries == 3 and [m.size for m in found] == [3000, 50_000, 8]
    assert [read_member(blob, m) for m in found] == [data for _, data, _ in CONTENT]
    assert [m.name for m in members_of(blob)] == [name for name, _, _ in CONTENT]  # the whole tail holds it


def test_damaged_bytes_are_refused_never_returned():
    blob = archive(CONTENT)
    stored, deflated, _ = members_of(blob)
    data = bytearray(blob[stored.offset + 30 + len(stored.name):][:stored.compressed])
    data[100] ^= 0xFF
    with pytest.raises(zip_ranges.ZipError, match="CRC-32"):
        zip_ranges.extract(stored, bytes(data))
    start = deflated.offset + 30 + len(deflated.name)
    with pytest.raises(zip_ranges.ZipError):
        zip_ranges.extract(deflated, b"\xff" * deflated.compressed)
    with pytest.raises(zip_ranges.ZipError, match="compressed bytes"):
        zip_ranges.extract(deflated, blob[start:start + deflated.compressed - 1])
    with pytest.raises(zip_ranges.ZipError, match="not a ZIP"):
        zip_ranges.locate_directory(b"<html>Access Denied</html>" * 10, 0)
    with pytest.raises(zip_ranges.ZipError, match="no local header"):
        zip_ranges.data_offset(blob[stored.offset + 1:stored.offset + 31], stored)


def _with_end_record(blob: bytes, **changes: int) -> bytes:
    """``blob`` with fields of its end of central directory record changed (entries, size, offset)."""
    at = blob.rfind(zip_ranges.EOCD)
    fields = dict(zip(("entries", "size", "offset"), struct.unpack_from("<HII", blob, at + 10), strict=True))
    fields.update(changes)
    patched = struct.pack("<HHII", fields["entries"], fields["entries"], fields["size"], fields["offset"])
    return blob[:at + 8] + patched + blob[at + 20:]


@pytest.mark.parametrize(("changes", "says"), [
    ({"offset": 10_000_000}, "would end past its end record"),  # the directory past the archive's end
    ({"size": 10_000_000}, "would end past its end record"),
    ({"entries": 500}, "cannot fit in its"),
    ({"entries": 2}, "lists 3 entries, its end record 2"),
])
def test_an_end_record_inconsistent_with_the_archive_is_not_a_valid_zip(changes, says):
    """Never read as an empty archive (every image ``no_mask``): the run stops at start instead."""
    blob = _with_end_record(archive(CONTENT), **changes)
    with pytest.raises(zip_ranges.ZipError, match=f"not a valid ZIP: .*{says}"):
        directory = zip_ranges.locate_directory(blob[-zip_ranges.TAIL:], max(0, len(blob) - zip_ranges.TAIL))
        zip_ranges.parse_directory(blob[directory.offset:directory.offset + directory.size], directory.entries)


def test_content_range():
    assert zip_ranges.content_range("bytes 0-99/1000") == (0, 99, 1000)
    assert zip_ranges.content_range("bytes 5-9/*") == (5, 9, None)
    assert zip_ranges.content_range("bytes */1000") is None
    assert zip_ranges.content_range(None) is None


def test_mask_members_are_matched_by_pattern_not_by_one_layout():
    assert mask_id("ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png") == "ISIC_0000000"
    assert mask_id("ISBI2016_ISIC_Part1_Training_GroundTruth/ISIC_0000001_Segmentation.png") == "ISIC_0000001"
    assert mask_id("ISIC_0000002_segmentation.PNG") == "ISIC_0000002"
    assert mask_id("x/y/isic_0000003_expert_segmentation.png") == "ISIC_0000003"
    for other in ("ISIC2018_Task1_Training_GroundTruth/LICENSE.txt", "ISIC_0000000.jpg",
                  "ISIC_000000_segmentation.png", "ISIC_0000000_superpixels.png",
                  "__MACOSX/ISIC2018_Task1_Training_GroundTruth/._ISIC_0000000_segmentation.png",
                  "ISIC_0000000_segmentation.png/"):
        assert mask_id(other) is None, other
