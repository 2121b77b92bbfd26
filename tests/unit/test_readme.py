"""The README's argument tables come from the argument models; they must not drift apart."""

import re
from pathlib import Path

import pytest

from dataset_spiders.params import markdown_table
from dataset_spiders.spiders.imagenet_args import ImagenetParams
from dataset_spiders.spiders.isic_args import IsicParams

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("model", [IsicParams, ImagenetParams])
def test_readme_lists_every_argument_as_the_model_documents_it(model):
    assert markdown_table(model) in README.read_text()


def test_every_test_the_readme_names_exists():
    """The promises table names tests (or name prefixes, ending in ``_``); each must exist."""
    names = set(re.findall(r"`(test_[a-z0-9_]+)", README.read_text()))
    source = "".join(p.read_text() for p in README.parent.joinpath("tests").rglob("test_*.py"))
    assert names
    assert not {n for n in names if f"def {n}" not in source}
