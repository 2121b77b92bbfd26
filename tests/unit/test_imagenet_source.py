"""ImageNet URL lists, class lists and host filters: concrete inputs in the formats the reference describes."""

import gzip
import hashlib
import re
import tracemalloc
from collections import Counter

import pytest

from dataset_spiders.sources import imagenet
from dataset_spiders.sources.class_files import parse_class_text, read_class_file
from dataset_spiders.sources.imagenet import (
    ERROR_BODIES,
    Candidate,
    NoUrls,
    choose_classes,
    count_url_file,
    decode_url_bytes,
    first_lemma,
    host_matches,
    ilsvrc1000,
    iter_url_file,
    parse_geturls,
    registrable_domain,
    safe_label,
    scan_url_file,
    url_image_id,
    valid_wnid,
)

TENCH = "n01440764"
FLICKR = ["flickr.com", "staticflickr.com"]


def test_valid_wnid():
    assert valid_wnid(TENCH) and valid_wnid("n15075141")
    for bad in ("n0144076", "n014407645", "N01440764", " n01440764", "n0144076x", "n0144076\u0664", None, 1440764):
        assert not valid_wnid(bad), bad


# --- geturls ------------------------------------------------------------------------------


def test_plain_geturls_body_with_crlf_and_blank_lines():
    body = (
        b"http://farm1.static.flickr.com/1/1_a.jpg\r\n\r\n  https://example.org/x/2.png  \r\nhttp://e.com/3.jpg\r\n\r\n"
    )
    got = parse_geturls(body, TENCH)
    assert [c.url for c in got] == [
        "http://farm1.static.flickr.com/1/1_a.jpg",
        "https://example.org/x/2.png",
        "http://e.com/3.jpg",
    ]
    assert [c.image_id for c in got] == [url_image_id(TENCH, c.url) for c in got]
    assert parse_geturls(body.replace(b"\r\n", b"\n"), TENCH) == got


def test_getmapping_body_keeps_the_source_ids_with_a_space_or_a_tab():
    body = (
        b"n01440764_10 http://farm1.static.flickr.com/1/10_a.jpg\r\n"
        b"n01440764_11\thttp://farm2.static.flickr.com/2/11_b.jpg\r\n"
        b"\r\n"
        b"n01443537_12 http://other.class/12.jpg\r\n"  # another class's id
        b"n01440764_x http://e.com/bad-id.jpg\r\n"  # malformed id
        b"n01440764_13 http://farm1.static.flickr.com/1/10_a.jpg\r\n"  # same URL again
        b"n01440764_14 ftp://e.com/not-http.jpg\r\n"
        b"n01440764_15\r\n"
        b"<html>oops</html>\r\n"
        b"n01440764_10 http://e.com/same-id-other-url.jpg\r\n"
    )
    got = parse_geturls(body, TENCH)
    assert got[:2] == [
        Candidate("n01440764_10", "http://farm1.static.flickr.com/1/10_a.jpg"),
        Candidate("n01440764_11", "http://farm2.static.flickr.com/2/11_b.jpg"),
    ]
    assert [c.url for c in got[2:]] == [
        "http://other.class/12.jpg",
        "http://e.com/bad-id.jpg",
        "http://e.com/same-id-other-url.jpg",
    ]
    assert [c.image_id for c in got[2:]] == [url_image_id(TENCH, c.url) for c in got[2:]]
    assert parse_geturls(body.replace(b"\r\n", b"\n"), TENCH) == got


def test_geturls_mixed_formats_and_duplicates_keep_the_first():
    body = b"http://a.com/1.jpg\nn01440764_5 http://a.com/1.jpg\nn01440764_6 http://a.com/2.jpg\nhttp://a.com/2.jpg\n"
    got = parse_geturls(body, TENCH)
    assert got == [
        Candidate(url_image_id(TENCH, "http://a.com/1.jpg"), "http://a.com/1.jpg"),
        Candidate("n01440764_6", "http://a.com/2.jpg"),
    ]


@pytest.mark.parametrize("error", ERROR_BODIES)
def test_geturls_error_bodies_raise_no_urls(error):
    for body in (error.encode(), f"\r\n {error}\r\n\r\n".encode()):
        with pytest.raises(NoUrls) as info:
            parse_geturls(body, TENCH)
        message = str(info.value)
        assert error in message and TENCH in message and "\n" not in message


def test_geturls_empty_or_html_bodies_give_no_candidates():
    assert parse_geturls(b"", TENCH) == []
    assert parse_geturls(b"\r\n\r\n", TENCH) == []
    assert parse_geturls(b"<html><body>URL not valid</body></html>", TENCH) == []
    assert parse_geturls(b"The synset is not ready yet. Please stay tuned! Really.", TENCH) == []


def test_geturls_non_utf8_bytes_are_percent_encoded():
    got = parse_geturls(b"http://x.com/caf\xe9.jpg\r\nn01440764_2 http://x.com/\xc3\xa9t\xc3\xa9.jpg\r\n", TENCH)
    assert [c.url for c in got] == ["http://x.com/caf%E9.jpg", "http://x.com/\u00e9t\u00e9.jpg"]


def test_decode_url_bytes():
    assert decode_url_bytes(b"http://x.com/a.jpg") == "http://x.com/a.jpg"
    assert decode_url_bytes(b"http://x.com/caf\xe9.jpg") == "http://x.com/caf%E9.jpg"
    assert decode_url_bytes("http://x.com/café.jpg".encode()) == "http://x.com/café.jpg"
    # one bad byte: the whole URL is percent-encoded bytewise, so the valid sequence keeps its bytes too
    assert decode_url_bytes(b"http://x.com/\xc3\xa9\xff?q=%20") == "http://x.com/%C3%A9%FF?q=%20"


def test_url_image_id_is_stable_and_does_not_use_the_basename():
    a = url_image_id(TENCH, "http://farm1.static.flickr.com/1/123_abc.jpg")
    b = url_image_id(TENCH, "http://farm2.static.flickr.com/1/123_abc.jpg")
    assert re.fullmatch(r"n01440764_u[0-9a-f]{12}", a)
    assert a == url_image_id(TENCH, "http://farm1.static.flickr.com/1/123_abc.jpg") and a != b
    assert a == "n01440764_u" + hashlib.sha1(b"http://farm1.static.flickr.com/1/123_abc.jpg").hexdigest()[:12]


# --- class lists --------------------------------------------------------------------------


def classes_of(lines: list[str], source: str = "classes.txt") -> list[tuple[str, str | None]]:
    return parse_class_text("".join(line if line.endswith("\n") else line + "\n" for line in lines), source)[0]


def test_simple_class_lines_mix_and_match():
    lines = [
        "\ufeffn01440764\r\n",
        "# a comment line\n",
        "\n",
        "goldfish,n01443537\n",
        "n01484850\tgreat white shark, white shark\n",
        "  n01491361   # tiger shark, trailing comment\r\n",
        "crane,n02012849\n",
        "n01440764\n",  # duplicate: first wins
        "tench again,n01440764\n",
        "n01494475\t\n",
    ]
    assert classes_of(lines) == [
        ("n01440764", None),
        ("n01443537", "goldfish"),
        ("n01484850", "great white shark, white shark"),
        ("n01491361", None),
        ("n02012849", "crane"),
        ("n01494475", None),
    ]


def test_codeandfire_style_labels_with_commas():
    assert classes_of(["crane, the bird,n02012849"]) == [("n02012849", "crane, the bird")]


# Each published format, a few lines in its real shape (separators, BOM, CRLF as the originals have them).
FORMATS = {
    "synset_words.txt": ("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n"
                         "n01484850 great white shark, white shark, man-eater, man-eating shark, "
                         "Carcharodon carcharias\n",
                         "wnid words"),
    "LOC_synset_mapping.txt": ("n01440764 tench, Tinca tinca\r\nn01443537 goldfish, Carassius auratus\r\n"
                               "n01498041 stingray\r\n", "wnid words"),
    "map_clsloc.txt": ("n02119789 1 kit_fox\nn02100735 2 English_setter\nn02110185 3 Siberian_husky\n",
                       "wnid index name"),
    "imagenet_class_index.json": ('{"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"], '
                                  '"10": ["n01530575", "brambling"], "2": ["n01484850", "great_white_shark"]}',
                                  "Keras"),
    "classes_in_imagenet.csv": ("\ufeffsynid,class_name,urls,flickr_urls\r\nn01440764,tench,1200,940\r\n"
                                "n01443537,goldfish,1300,1010\r\n", "CSV"),
    "wnids_1000.txt": ("tench,n01440764\ngoldfish,n01443537\n", "label,wnid"),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_published_class_file_format(name, tmp_path):
    text, shape = FORMATS[name]
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    classes, found = read_class_file(str(path))
    assert shape in found
    expected = {
        "synset_words.txt": [("n01440764", "tench, Tinca tinca"), ("n01443537", "goldfish, Carassius auratus"),
                             ("n01484850", "great white shark, white shark, man-eater, man-eating shark, "
                                           "Carcharodon carcharias")],
        "LOC_synset_mapping.txt": [("n01440764", "tench, Tinca tinca"), ("n01443537", "goldfish, Carassius auratus"),
                                   ("n01498041", "stingray")],
        "map_clsloc.txt": [("n02119789", "kit fox"), ("n02100735", "English setter"), ("n02110185", "Siberian husky")],
        "imagenet_class_index.json": [("n01440764", "tench"), ("n01443537", "goldfish"),
                                      ("n01484850", "great white shark"), ("n01530575", "brambling")],
        "classes_in_imagenet.csv": [("n01440764", "tench"), ("n01443537", "goldfish")],
        "wnids_1000.txt": [("n01440764", "tench"), ("n01443537", "goldfish")],
    }[name]
    assert classes == expected


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("n01440764\n# ok\ntench\n", "line 3: 'tench'"),
        ("n01440764\n# ok\nn0144076\n", "line 3: 'n0144076'"),
        ("n01440764\n# ok\ntench,n0144076x\r\n", "line 3: 'tench,n0144076x'"),
        ("n01440764\n# ok\ntench n01440764\n", "line 3: 'tench n01440764'"),
        ("<html><body>Not Found</body></html>\n", "line 1: '<html><body>Not Found</body></html>'"),
    ],
)
def test_a_bad_class_line_is_one_line_naming_the_file_the_line_and_the_formats(text, line):
    with pytest.raises(ValueError) as info:
        parse_class_text(text, "wnids.txt")
    message = str(info.value)
    assert message.startswith(f"wnids.txt {line} is not a class line (accepted: one wnid a line; ")
    assert "map_clsloc.txt" in message and "\n" not in message


@pytest.mark.parametrize("text", ['{"0": "tench"}', "{not json", '["n01440764"]'])
def test_json_that_is_not_keras_s_is_refused(text):
    with pytest.raises(ValueError, match=r"wnids\.json"):
        parse_class_text(text, "wnids.json")


def test_a_csv_with_comments_and_blank_lines_before_its_header_reads():
    text = "\ufeff# classes\n\nsynid,class_name\r\n# a note\nn01440764,tench\n\nn01443537,goldfish\n"
    assert parse_class_text(text, "c.csv") == ([("n01440764", "tench"), ("n01443537", "goldfish")], "CSV with a header")


@pytest.mark.parametrize(("text", "said"), [
    ("[" * 100_000 + "]" * 100_000, "deep.txt line 1: '[[[["),  # a JSON array 100,000 deep: no class line
    ('{"0": ' + "[" * 100_000 + "]" * 100_000 + "}", "deep.txt is JSON but not Keras's"),
    ('synid,class_name\nn01440764,"' + "x" * 200_000 + '"\n', "deep.txt line 2: field larger than field limit"),
    ('"' + "x" * 200_000 + '",synid\n', "deep.txt line 1: "),
])
def test_any_depth_or_field_size_is_one_line_naming_the_file(text, said):
    with pytest.raises(ValueError) as info:
        parse_class_text(text, "deep.txt")
    assert str(info.value).startswith(said) and "\n" not in str(info.value)


def test_ilsvrc1000_is_the_shipped_class_list():
    classes = ilsvrc1000()
    assert len(classes) == 1000 and len({w for w, _ in classes}) == 1000
    assert classes[0] == ("n01440764", "tench, Tinca tinca")
    assert classes[-1][0] == "n15075141"
    assert dict(classes)["n04399382"] == "teddy, teddy bear"
    assert [w for w, _ in classes] == sorted(w for w, _ in classes)  # sorted order is the class-index order
    assert all(valid_wnid(w) and lemmas for w, lemmas in classes)
    classes.clear()
    assert len(ilsvrc1000()) == 1000  # callers get a copy


def test_ilsvrc1000_file_reads_as_a_wnid_list():
    from importlib.resources import files

    text = files("dataset_spiders.data").joinpath("ilsvrc1000.tsv").read_text(encoding="utf-8")
    assert text.startswith("# ILSVRC-2012 classes in class-index order; from timm ")
    assert "\r" not in text and text.endswith("\n")
    assert parse_class_text(text, "ilsvrc1000.tsv")[0] == ilsvrc1000()


def test_first_lemma_and_safe_label():
    assert first_lemma("tench, Tinca tinca") == "tench"
    assert first_lemma("crane") == "crane"
    assert safe_label("tench, Tinca tinca") == "tench"
    assert safe_label("teddy, teddy bear") == "teddy"
    assert safe_label("great white shark, white shark") == "great_white_shark"
    assert safe_label("jack-o'-lantern") == "jack-o_-lantern"
    assert safe_label("  a / b \\ c : d  ") == "a_b_c_d"
    assert safe_label("café au lait") == "café_au_lait"
    assert safe_label("._-x-_.") == "x"
    for empty in ("", ".", "..", "...", "/", ", x"):
        assert safe_label(empty) == "class"
    long = safe_label("a" * 59 + " b" * 20)
    assert len(long) <= 60 and not long.endswith("_")
    for _, lemmas in ilsvrc1000():
        name = safe_label(lemmas)
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,59}", name) and name.strip("._-") == name, lemmas


# --- hosts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://farm3.static.flickr.com/2/1_a.jpg", True),
        ("https://live.staticflickr.com/65535/1_a_b.jpg", True),
        ("http://flickr.com/photos/1", True),
        ("HTTP://FARM1.STATIC.FLICKR.COM/1.jpg", True),
        ("http://user:pw@www.flickr.com:8080/x.jpg", True),
        ("http://flickr.com./x.jpg", True),
        ("http://notflickr.com/x.jpg", False),
        ("http://flickr.com.evil.net/x.jpg", False),
        ("http://evil.net/flickr.com/x.jpg", False),
        ("http://evil.net?u=a.flickr.com", False),
        ("http://evil.net#.flickr.com", False),
        ("http://flickr.com@evil.net/x.jpg", False),
        ("http://[::1]/x.jpg", False),
        ("flickr.com/x.jpg", False),
        ("not a url", False),
        ("", False),
    ],
)
def test_host_matches(url, expected):
    assert host_matches(url, FLICKR) is expected


def test_host_matches_normalises_the_domains():
    assert host_matches("http://farm1.static.flickr.com/x", [" .Flickr.COM. "])
    assert not host_matches("http://farm1.static.flickr.com/x", [])
    assert not host_matches("http://farm1.static.flickr.com/x", [""])


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("farm3.static.flickr.com", "flickr.com"),
        ("flickr.com", "flickr.com"),
        ("WWW.Example.COM.", "example.com"),
        ("news.bbc.co.uk", "bbc.co.uk"),
        ("bbc.co.uk", "bbc.co.uk"),
        ("www.example.com.au", "example.com.au"),
        ("img.example.ne.jp", "example.ne.jp"),
        ("a.b.ac.jp", "b.ac.jp"),
        ("a.co.com", "co.com"),  # "com" is not a ccTLD
        ("x.y.org", "y.org"),
        ("localhost", "localhost"),
        ("192.168.0.10", "192.168.0.10"),
        ("::1", "::1"),
    ],
)
def test_registrable_domain(host, expected):
    assert registrable_domain(host) == expected


# --- list files ---------------------------------------------------------------------------

URL_FILE = (
    b"\xef\xbb\xbfn01440764_1\thttp://farm1.static.flickr.com/1/1_a.jpg\r\n"
    b"n01440764_2 https://www.example.com/2.jpg\n"
    b"n01440764_3\thttp://farm1.static.flickr.com/1/1_a.jpg\n"  # same URL as _1
    b"n01440764_4\thttp://x.com/caf\xe9.jpg\n"
    b"\n"
    b"garbage line\n"
    b"n01440764\thttp://no-number.com/x.jpg\n"
    b"n01440764_5\tftp://ftp.example.com/x.jpg\n"
    b"n01440764_6\thttp://\n"
    b"n01440764_7\n"
    b"n0144076_8\thttp://short-wnid.com/x.jpg\n"
    b"n01443537_1\thttp://live.staticflickr.com/2/g.jpg\n"
    b"  n01443537_2 \t HTTPS://Farm2.StaticFlickr.com/a b.jpg  \r\n"
    b"n01443537_3\thttp://notflickr.com/g.jpg"  # no final newline
)


def _write(tmp_path, name, data):
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return str(path)


EXPECTED_ITER = [
    ("n01440764", Candidate("n01440764_1", "http://farm1.static.flickr.com/1/1_a.jpg")),
    ("n01440764", Candidate("n01440764_2", "https://www.example.com/2.jpg")),
    ("n01440764", Candidate("n01440764_3", "http://farm1.static.flickr.com/1/1_a.jpg")),
    ("n01440764", Candidate("n01440764_4", "http://x.com/caf%E9.jpg")),
    ("n01443537", Candidate("n01443537_1", "http://live.staticflickr.com/2/g.jpg")),
    ("n01443537", Candidate("n01443537_2", "HTTPS://Farm2.StaticFlickr.com/a b.jpg")),
    ("n01443537", Candidate("n01443537_3", "http://notflickr.com/g.jpg")),
]


@pytest.mark.parametrize("name", ["urls.txt", "urls.txt.gz"])
def test_iter_url_file_plain_and_gzip(tmp_path, name):
    assert list(iter_url_file(_write(tmp_path, name, URL_FILE))) == EXPECTED_ITER


def test_iter_url_file_is_the_same_whatever_the_block_size(tmp_path, monkeypatch):
    path = _write(tmp_path, "urls.txt", URL_FILE)
    for size in (1, 2, 7, 50):
        monkeypatch.setattr(imagenet, "_BLOCK", size)
        assert list(iter_url_file(path)) == EXPECTED_ITER, size
        assert count_url_file(path, FLICKR) == Counter({"n01440764": 2, "n01443537": 2}), size


@pytest.mark.parametrize("name", ["urls.txt", "urls.txt.gz"])
def test_scan_url_file(tmp_path, name):
    path = _write(tmp_path, name, URL_FILE)
    got = scan_url_file(path, ["n01443537", TENCH, "n04399382", "bogus"], None)
    assert list(got) == ["n01443537", TENCH, "n04399382"]
    assert got[TENCH] == [c for w, c in EXPECTED_ITER if w == TENCH and c.image_id != "n01440764_3"]
    assert got["n01443537"] == [c for w, c in EXPECTED_ITER if w == "n01443537"]
    assert got["n04399382"] == []  # teddy bear is not in fall11
    flickr = scan_url_file(path, {TENCH, "n01443537"}, FLICKR)
    assert [c.image_id for c in flickr[TENCH]] == ["n01440764_1"]
    assert [c.image_id for c in flickr["n01443537"]] == ["n01443537_1", "n01443537_2"]
    assert scan_url_file(path, [TENCH], []) == {TENCH: []}


@pytest.mark.parametrize("name", ["urls.txt", "urls.txt.gz"])
def test_count_url_file_agrees_with_iter_url_file(tmp_path, name):
    path = _write(tmp_path, name, URL_FILE)
    assert count_url_file(path, None) == Counter(w for w, _ in EXPECTED_ITER) == Counter({TENCH: 4, "n01443537": 3})
    assert count_url_file(path, FLICKR) == Counter(w for w, c in EXPECTED_ITER if host_matches(c.url, FLICKR))
    assert count_url_file(path, ["example.com"]) == Counter({TENCH: 1})


def test_choose_classes():
    counts = {f"n{i:08d}": i for i in range(100)}
    picked = choose_classes(counts, 5, 50, seed=7)
    assert len(picked) == 5 and len(set(picked)) == 5 and all(counts[w] >= 50 for w in picked)
    assert picked == sorted(picked)
    assert choose_classes(dict(reversed(counts.items())), 5, 50, seed=7) == picked  # dict order does not matter
    assert len({tuple(choose_classes(counts, 5, 50, seed=s)) for s in range(10)}) > 1
    assert choose_classes(counts, 50, 50, seed=None) == [f"n{i:08d}" for i in range(50, 100)]
    assert choose_classes(counts, 0, 50, seed=1) == []


def test_choose_classes_says_when_too_few_are_eligible():
    counts = {"n00000001": 60, "n00000002": 50, "n00000003": 70, "n00000004": 49}
    with pytest.raises(ValueError, match=r"^only 3 classes have at least 50 usable URLs; asked for 5$"):
        choose_classes(counts, 5, 50, seed=1)
    with pytest.raises(ValueError, match=r"^only 1 class has at least 70 usable URLs; asked for 2$"):
        choose_classes(counts, 2, 70, seed=1)


# --- a large file -------------------------------------------------------------------------


def _flickr_url(c: int, i: int) -> str:
    return f"http://farm{i % 9 + 1}.static.flickr.com/{c}/{i}_{c * 7919 + i:x}.jpg"


def _write_big_file(path, classes: int, per_class: int) -> None:
    """classes x per_class lines: odd lines Flickr (TAB), even lines elsewhere (one SPACE), a junk line per class."""
    with open(path, "wb") as f:
        for c in range(classes):
            w = f"n{10_000_000 + c * 3:08d}"
            lines = [
                f"{w}_{i}\t{_flickr_url(c, i)}\n" if i % 2 else f"{w}_{i} http://www.example{i % 50}.com/{c}/p{i}.jpg\n"
                for i in range(per_class - 1)
            ]
            lines.append(f"{w}_x\tnot a url\n")
            f.write("".join(lines).encode())


def test_scan_of_a_million_line_file_is_fast_and_bounded(tmp_path):
    path = tmp_path / "fall11_urls.txt"
    _write_big_file(path, 1000, 1000)
    assert path.stat().st_size > 50_000_000
    wanted = {0: "n10000000", 500: "n10001500", 999: "n10002997"}  # first, middle and last classes
    tracemalloc.start()
    try:
        got = scan_url_file(str(path), list(wanted.values()), FLICKR)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    for c, w in wanted.items():
        assert got[w] == [Candidate(f"{w}_{i}", _flickr_url(c, i)) for i in range(1, 999, 2)], w
    assert peak < 50_000_000, f"peak {peak / 1e6:.1f} MB"
