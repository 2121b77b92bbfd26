"""URL lists as ImageNet shipped them: plain, gzipped, or alone in a tar archive; anything else refused."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from dataset_spiders.sources.imagenet import iter_url_file, scan_url_file
from dataset_spiders.sources.url_lists import check_url_list

LIST = (b"n01440764_10026\thttp://farm1.static.flickr.com/1/a.jpg\r\n"
        b"n01440764_10027\thttp://farm1.static.flickr.com/1/b.jpg\r\n"
        b"n01443537_1\thttp://www.example.org/c.png\r\n")
_GZ = gzip.compress(LIST * 50)
CORRUPT_GZIP = _GZ[:20] + b"\xff" * 30 + _GZ[50:]  # the header is right, the deflate stream is not (zlib.error)


def tar_of(path: Path, members: dict[str, bytes], mode: str) -> Path:
    with tarfile.open(path, mode) as tar:
        info = tarfile.TarInfo("imagenet_fall11_urls")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def shipped(tmp_path: Path) -> dict[str, Path]:
    plain = tmp_path / "fall11_urls.txt"
    plain.write_bytes(LIST)
    gz = tmp_path / "fall11_urls.txt.gz"
    gz.write_bytes(gzip.compress(LIST))
    return {
        "txt": plain,
        "gz": gz,
        "tgz": tar_of(tmp_path / "imagenet_fall11_urls.tgz", {"._fall11_urls.txt": b"\0\5junk",
                                                              "imagenet_fall11_urls/fall11_urls.txt": LIST}, "w:gz"),
        "tar": tar_of(tmp_path / "urls.tar", {"fall11_urls.txt": LIST}, "w"),
        "named_txt_but_gzip": (tmp_path / "list.txt").write_bytes(gzip.compress(LIST)) and tmp_path / "list.txt",
    }


@pytest.mark.parametrize("kind", ["txt", "gz", "tgz", "tar", "named_txt_but_gzip"])
def test_every_shipped_form_reads_the_same_list(kind, tmp_path):
    path = str(shipped(tmp_path)[kind])
    check_url_list(path)
    assert [(w, c.url) for w, c in iter_url_file(path)] == [
        ("n01440764", "http://farm1.static.flickr.com/1/a.jpg"),
        ("n01440764", "http://farm1.static.flickr.com/1/b.jpg"),
        ("n01443537", "http://www.example.org/c.png"),
    ]
    assert [c.url for c in scan_url_file(path, ["n01443537"], None)["n01443537"]] == ["http://www.example.org/c.png"]


def test_a_big_tgz_is_streamed_not_held(tmp_path):
    lines = b"".join(b"n01440764_%d\thttp://farm1.static.flickr.com/1/%d.jpg\n" % (i, i) for i in range(200_000))
    path = tar_of(tmp_path / "big.tgz", {"fall11_urls.txt": lines}, "w:gz")
    assert sum(1 for _ in iter_url_file(str(path))) == 200_000


def zip_of(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("fall11_urls.txt", LIST)
    return path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: zip_of(p / "urls.zip"), "is a ZIP archive"),
        (lambda p: tar_of(p / "photos.tgz", {"a.jpg": b"\xff\xd8\xff\xe0" + bytes(100)}, "w:gz"), "binary data"),
        (lambda p: tar_of(p / "empty.tar", {}, "w"), "no file in it"),
        (lambda p: (p / "f.txt").write_bytes(b"<!DOCTYPE html><html><body>Moved</body></html>\n") and p / "f.txt",
         "is not a URL list: its first line is '<!DOCTYPE html>"),
        (lambda p: (p / "e.txt").write_bytes(b"\n\n") and p / "e.txt", "is empty"),
        (lambda p: (p / "t.gz").write_bytes(b"\x1f\x8b\x08\x00garbage") and p / "t.gz", "cannot be read"),
        (lambda p: (p / "u.gz").write_bytes(CORRUPT_GZIP) and p / "u.gz", "cannot be read"),  # does not inflate
    ],
)
def test_anything_else_is_one_line_naming_the_file(make, words, tmp_path):
    path = make(tmp_path)
    with pytest.raises(ValueError) as info:
        check_url_list(str(path))
    message = str(info.value)
    assert message.startswith(str(path)) and words in message and "\n" not in message
    assert "accepted: a fall11_urls.txt-style list" in message
