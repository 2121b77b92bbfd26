"""Any string a user could type for any argument either works or is one ArgumentError line."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset_spiders.params import ArgumentError, parse_args
from dataset_spiders.spiders.imagenet_args import ImagenetParams
from dataset_spiders.spiders.isic_args import IsicParams

MODELS = [IsicParams, ImagenetParams]
TYPED = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "0", "-1", "1", "all", "true", "false", "ilsvrc1000", "n01440764", "a,b", "-",
                     "http://x", "1e9", "99999999999999999999", "\x00", "../../etc", "benign", "flat", "2"]),
)


def names(model: type) -> list[str]:
    fields = dataclasses.fields(model)
    return [f.name for f in fields] + [a for f in fields for a in f.metadata.get("aliases", ())] + ["bogus"]


@pytest.mark.parametrize("model", MODELS)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_every_argument_string_parses_or_fails_with_one_line(model, data):
    raw = data.draw(st.dictionaries(st.sampled_from(names(model)), TYPED, max_size=4))
    try:
        parsed = parse_args(model, raw)
    except ArgumentError as exc:
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message
    else:
        assert isinstance(parsed, model)
