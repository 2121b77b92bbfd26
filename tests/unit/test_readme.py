"""The README's argument tables come from the argument models, and docs/settings.md's table from
``settings_doc.py``; they must not drift apart. The tests the README and docs/ name exist, and
their examples are commands that work."""

import re
import shlex
from pathlib import Path

import pytest

from dataset_spiders import settings_doc
from dataset_spiders.params import markdown_table
from dataset_spiders.settings_check import OURS
from dataset_spiders.spiders.imagenet_args import ImagenetParams
from dataset_spiders.spiders.isic_args import IsicParams

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def pages() -> list[Path]:
    """The README and every page of docs/."""
    return [README, *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("model", [IsicParams, ImagenetParams])
def test_readme_lists_every_argument_as_the_model_documents_it(model):
    assert markdown_table(model) in README.read_text()


def test_docs_settings_is_the_table_the_code_renders():
    assert settings_doc.markdown_table() in (DOCS / "settings.md").read_text()


def test_every_setting_of_ours_has_a_row_and_every_row_a_setting():
    """A new setting without a description fails here; so does a row for a setting nobody has."""
    from scrapy.settings import default_settings

    from dataset_spiders import settings
    from dataset_spiders.secrets import SECRET_SETTINGS

    assert not set(OURS) - set(settings_doc.DESCRIPTIONS)
    known = set(OURS) | set(SECRET_SETTINGS) | {n for n in [*dir(settings), *dir(default_settings)] if n.isupper()}
    assert not set(settings_doc.DESCRIPTIONS) - known


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as ``-``."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"(?m)^#+ (.*)$", re.sub(r"```.*?```", "", text, flags=re.S))}


def test_every_relative_link_points_to_a_page_and_a_heading_that_exist():
    """Links between the README and docs/ (``docs/isic.md``, ``../README.md#dataset-spiders-isic``)."""
    links = [(page, target) for page in pages()
             for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()) if "://" not in target]
    assert links
    for page, target in links:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.is_file(), f"{page.name}: {target}"
        assert not anchor or anchor in heading_anchors(linked.read_text()), f"{page.name}: {target}"
    from_readme = {(README.parent / target.partition("#")[0]).resolve() for page, target in links if page == README}
    assert {page.resolve() for page in DOCS.glob("*.md")} <= from_readme, "a page of docs/ the README does not link"


def test_every_test_the_readme_names_exists():
    """The README and docs/ (the promises table) name tests (or name prefixes, ending in ``_``);
    each must exist."""
    names = {n for page in pages() for n in re.findall(r"`(test_[a-z0-9_]+)", page.read_text())}
    source = "".join(p.read_text() for p in ROOT.joinpath("tests").rglob("test_*.py"))
    assert names
    assert not {n for n in names if f"def {n}" not in source}


def readme_commands(tool: str) -> list[list[str]]:
    """The words of each ``tool`` command in the code blocks of the README and docs/ (after
    ``.venv/bin/``, up to a ``&&``, ``|``, ``;`` or ``&``; comments dropped)."""
    commands = []
    blocks = [b for page in pages() for b in re.findall(r"```(?:sh|bash)\n(.*?)```", page.read_text(), re.S)]
    for block in blocks:
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            for i, word in enumerate(words):
                if word.rsplit("/", 1)[-1] == tool:
                    rest = words[i + 1:]
                    end = next((j for j, w in enumerate(rest) if w in ("&&", "|", ";", "&")), len(rest))
                    commands.append(rest[:end])
    return commands


def test_the_readme_examples_are_commands_that_work_outside_the_checkout():
    """Each ``dataset-spiders`` example (and each one ``--help`` ends with) parses as the console
    command reads it and would not stop at the question a bare ``isic`` asks (so it works in a
    script too), and no example is a ``scrapy`` command, which works only inside the checkout."""
    import dataclasses

    from dataset_spiders.cli import EXAMPLES, asks_for_everything, build_parser, spider_models

    shown = [shlex.split(line, comments=True)[1:] for lines in EXAMPLES.values() for line in lines]
    examples = readme_commands("dataset-spiders") + shown
    assert {words[0] for words in examples} >= {"isic", "imagenet", "verify", "report"}
    for words in examples:
        try:
            args = build_parser().parse_args(words)
        except SystemExit as exc:
            if exc.code == 0 and "--help" in words:
                continue
            pytest.fail(f"dataset-spiders {shlex.join(words)}: exit {exc.code}")
        if args.command == "isic":
            given = {f.name: getattr(args, f.name) for f in dataclasses.fields(spider_models()["isic"])
                     if getattr(args, f.name) is not None}
            assert not asks_for_everything("isic", given), f"dataset-spiders {shlex.join(words)} would ask"
    assert readme_commands("scrapy") == []
