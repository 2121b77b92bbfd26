"""The isic argument model: what a user may type, and the one-line errors for the rest."""

import os

import pytest

from dataset_spiders.params import ArgumentError, parse_args
from dataset_spiders.spiders.isic_args import IsicParams


def test_defaults_match_galavineri_layout():
    p = parse_args(IsicParams, {})
    assert p.num_images is None and p.offset == 0 and p.filter is None and p.api_version == 2
    assert p.folder("images") == os.path.abspath("ISIC/Images")
    assert p.folder("descs") == os.path.abspath("ISIC/Descriptions")
    assert p.folder("seg") == os.path.abspath("ISIC/Segmentation")


def test_command_line_strings_are_typed():
    given = {"num_images": "25", "filter": "Benign", "no_images": "true", "seg_skill": "expert", "layout": "by_label"}
    p = parse_args(IsicParams, given)
    assert (p.num_images, p.filter, p.no_images, p.seg_level, p.layout) == (25, "benign", True, "expert", "by_label")
    assert parse_args(IsicParams, {"collections": "61, 74,61"}).collections == (61, 74)
    assert parse_args(IsicParams, {"num_images": "all"}).num_images is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"num_images": "-3"}, "num_images: expected a whole number >= 1, got -3"),
        ({"num_images": "ten"}, "num_images: expected a whole number >= 1 or 'all', got 'ten'"),
        ({"filter": "foo"}, "filter: expected one of benign, malignant, indeterminate, got 'foo'"),
        ({"api_version": "7"}, "api_version: expected one of 1, 2, got '7'"),
        ({"collections": "61,x"}, "collections: expected comma-separated whole numbers, got 'x'"),
        ({"api_url": "ftp://x"}, "api_url: expected an http(s):// URL, got 'ftp://x'"),
        ({"api_version": "1", "query": "age_approx:50"}, "query: the v1 API takes no search expression"),
        ({"seg_level": "x"}, "seg_level: expected one of novice, expert, got 'x'"),
        ({"bogus": "1"}, "unknown argument 'bogus'"),
        ({"seg_level": "novice", "seg_skill": "expert"}, "argument 'seg_level' was given twice"),
    ],
)
def test_bad_arguments_give_one_line_naming_the_argument(args, message):
    with pytest.raises(ArgumentError) as info:
        parse_args(IsicParams, args)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_the_geturls_url_takes_the_wnid_whatever_the_api_url_holds():
    from dataset_spiders.spiders.imagenet import geturls_url

    base = "https://www.image-net.org/api/imagenet.synset.geturls"
    assert geturls_url(base, "n01440764") == f"{base}?wnid=n01440764"
    assert geturls_url(f"{base}?wnid=", "n01440764") == f"{base}?wnid=n01440764"
    assert geturls_url("http://m/api/text/geturls?key=1", "n01440764") == "http://m/api/text/geturls?key=1&wnid=n01440764"
