"""`scrapy crawl imagenet` from the class files researchers hold, each in its published shape."""

from __future__ import annotations

import os

import pytest

from tests.emulators.imagenet import GeturlsServer, PhotoHosts, make_classes
from tests.test_imagenet_crawl import imagenet

WNIDS = ["n01440764", "n01443537", "n02119789"]
NAMED = [("tench", "n01440764"), ("goldfish", "n01443537"), ("kit_fox", "n02119789")]
#: (file name, its bytes, the (first lemma, wnid) of each class folder that layout=name_wnid makes)
CLASS_FILES = [
    ("synset_words.txt", "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n"
                         "n02119789 kit fox, Vulpes macrotis\n", NAMED),
    ("LOC_synset_mapping.txt", "n01440764 tench, Tinca tinca\r\nn01443537 goldfish, Carassius auratus\r\n"
                               "n02119789 kit fox, Vulpes macrotis\r\n", NAMED),
    ("map_clsloc.txt", "n01440764 449 tench\nn01443537 450 goldfish\nn02119789 1 kit_fox\n",
     NAMED),
    ("imagenet_class_index.json", '{"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"], '
                                  '"2": ["n02119789", "kit_fox"]}', NAMED),
    ("classes_in_imagenet.csv", "\ufeffsynid,class_name,urls,flickr_urls\r\nn01440764,tench,1300,900\r\n"
                                "n01443537,goldfish,1300,1000\r\nn02119789,kit fox,1200,800\r\n",
     NAMED),
]


@pytest.mark.parametrize(("name", "text", "labels"), CLASS_FILES, ids=[c[0] for c in CLASS_FILES])
def test_each_class_file_format_runs_a_whole_crawl(name, text, labels, out, tmp_path):
    listing = tmp_path / name
    listing.write_bytes(text.encode("utf-8"))
    classes = make_classes(3, 3, seed=21, failure_rate=0.0, wnids=WNIDS)
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        run = imagenet(out, hosts, api, f"wnids_file={listing}", "per_class=2", "layout=name_wnid")
    assert run.code == 0, run.stderr
    folders = sorted(f for f in os.listdir(out / "ImageNet") if f != "classes.txt")
    assert folders == sorted(f"{label}_{wnid}" for label, wnid in labels)
    assert all(len(os.listdir(out / "ImageNet" / f)) == 2 for f in folders)
    order = [line.split("\t")[1] for line in (out / "ImageNet" / "classes.txt").read_text().splitlines()]
    assert order == WNIDS  # the file's order (Keras: its indices)
    assert f"Read 3 class(es) from {listing}" in run.stderr


def test_a_file_in_no_known_format_is_one_line_and_exit_2(out, tmp_path):
    listing = tmp_path / "classes.html"
    listing.write_text("<html><body><h1>404 Not Found</h1></body></html>\n")
    with PhotoHosts({}) as hosts, GeturlsServer({}) as api:
        run = imagenet(out, hosts, api, f"wnids_file={listing}")
        assert api.log == [] and hosts.url_log == []
    assert run.code == 2
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: imagenet: wnids_file: {listing} line 1: '<html>")
    assert "is not a class line (accepted: one wnid a line;" in last and "Traceback" not in run.stderr
