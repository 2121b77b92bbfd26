"""The README's argument tables come from the argument models; they must not drift apart."""

from pathlib import Path

from dataset_spiders.params import markdown_table
from dataset_spiders.spiders.isic_args import IsicParams

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_lists_every_isic_argument_as_the_model_documents_it():
    assert markdown_table(IsicParams) in README.read_text()
