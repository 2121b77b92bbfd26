"""The README's argument tables come from the argument models; they must not drift apart."""

import re
import shlex
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


def readme_commands(tool: str) -> list[list[str]]:
    """The words of each ``tool`` command in the README's code blocks (after ``.venv/bin/``, up to
    a ``&&``, ``|``, ``;`` or ``&``; comments dropped)."""
    commands = []
    for block in re.findall(r"```(?:sh|bash)\n(.*?)```", README.read_text(), re.S):
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
