"""The Python API draws the crawl's progress (issue 19): it asks its child for numbers
(``DATASET_SPIDERS_PROGRESS=json``), never shows those lines, and draws them with ``tqdm.auto``:
a notebook's widget in Jupyter, a text bar on a terminal, nothing with ``echo=False``; elsewhere
the child's own lines pass through. A fake child speaks the protocol (the crawl's side of it is
``extensions/progress.py``'s)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from dataset_spiders.api import run_child

FAKE_CHILD = r"""
import json, os, sys
open(sys.argv[1], "w").write(os.environ.get("DATASET_SPIDERS_PROGRESS", "(unset)"))
say = lambda line: print(line, file=sys.stderr, flush=True)
say("2026-12-07 12:00:00 [dataset_spiders.spiders.base] INFO: isic (num_images=6): 6 image(s)")
if os.environ.get("DATASET_SPIDERS_PROGRESS") == "json":
    for kept in (0, 2, 4, 6):
        say("progress-json: " + json.dumps({"kept": kept, "target": 6, "failed": 1, "bytes": kept * 350000,
                                            "groups_done": kept // 3, "groups": 2, "hosts_down": 1,
                                            "elapsed": 1.0 + kept, "done": kept == 6}))
else:
    say("Progress: 6/6 images, 1 failed, 2.0 MB at 0.30 MB/s")
say("progress-json: {not json")
say("Summary: 6 image(s) in the dataset of the 6 asked for")
say("error: a last line")
"""

LOG = ["2026-12-07 12:00:00 [dataset_spiders.spiders.base] INFO: isic (num_images=6): 6 image(s)",
       "progress-json: {not json", "Summary: 6 image(s) in the dataset of the 6 asked for", "error: a last line"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class NotebookBar:
    """What tqdm.auto gives in Jupyter (tqdm.notebook's bar), as far as the API uses it."""

    made: list[NotebookBar] = []

    def __init__(self, total=None, **options):
        self.total, self.n, self.options, self.closed, self.seen = total, 0, options, False, []
        self.postfix = ""
        NotebookBar.made.append(self)

    def reset(self, total=None):
        self.total, self.n = total, 0

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text

    def refresh(self):
        self.seen.append((self.n, self.total, self.postfix))

    def close(self):
        self.closed = True

    @classmethod
    def write(cls, text, file=None):
        file.write(text + "\n")


def run_fake(tmp_path: Path, echo: bool, out: io.StringIO) -> str:
    """The fake child run as the API runs the crawl; the DATASET_SPIDERS_PROGRESS it was given."""
    seen = tmp_path / "env"
    code, error, _ = run_child([sys.executable, "-c", FAKE_CHILD, str(seen)], {}, echo, out)
    assert (code, error) == (0, "a last line")
    return seen.read_text()


def test_on_a_terminal_the_numbers_are_a_text_bar_and_the_other_lines_pass_through(tmp_path):
    out = Terminal()
    assert run_fake(tmp_path, True, out) == "json"
    text = out.getvalue()
    assert "progress-json: {\"" not in text  # the protocol is never shown
    lines = [line.strip("\r") for line in text.splitlines()]
    assert all(line in lines for line in LOG), text
    bar = [part for part in text.replace("\n", "\r").split("\r") if part.startswith("images:")]
    assert bar and "6/6" in bar[-1] and "1 failed, 2.0 MB" in bar[-1] and "classes 2/2, 1 host(s) down" in bar[-1]


def test_in_jupyter_the_numbers_go_to_tqdm_auto_s_widget(tmp_path, monkeypatch):
    import tqdm.auto
    import tqdm.autonotebook

    monkeypatch.setattr(tqdm.autonotebook, "tqdm", NotebookBar)  # as they are in a Jupyter kernel
    monkeypatch.setattr(tqdm.auto, "tqdm", NotebookBar)
    NotebookBar.made.clear()
    out = io.StringIO()  # a notebook's sys.stderr is no terminal
    assert run_fake(tmp_path, True, out) == "json"
    assert out.getvalue().splitlines() == LOG
    (bar,) = NotebookBar.made
    assert [(n, total) for n, total, _ in bar.seen] == [(0, 6), (2, 6), (4, 6), (6, 6)] and bar.closed
    assert bar.seen[-1][2] == "1 failed, 2.0 MB, 0.29 MB/s, classes 2/2, 1 host(s) down"
    assert bar.options["unit"] == "img" and bar.options["desc"] == "images"


@pytest.mark.parametrize("echo", [True, False])
def test_elsewhere_or_without_echo_no_bar_is_drawn(tmp_path, monkeypatch, echo):
    """A log file gets the child's own Progress: lines; echo=False, nothing at all (and no
    numbers are asked for, whatever the caller's environment says)."""
    monkeypatch.setenv("DATASET_SPIDERS_PROGRESS", "json")
    out = Terminal() if not echo else io.StringIO()
    assert run_fake(tmp_path, echo, out) == "(unset)"
    if echo:
        assert out.getvalue().splitlines() == [LOG[0], "Progress: 6/6 images, 1 failed, 2.0 MB at 0.30 MB/s",
                                               *LOG[1:]]
    else:
        assert out.getvalue() == ""
