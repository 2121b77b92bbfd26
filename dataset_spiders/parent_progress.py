"""The crawl's progress, drawn by the Python API's process (a notebook's kernel, a script).

The crawl runs in a child whose stderr is a pipe, so its own bar (``extensions/progress.py``)
would become ``Progress:`` lines, and in a notebook a text bar would be a wall of them. So the
API asks the child for its numbers instead (``DATASET_SPIDERS_PROGRESS=json``: a line
``progress-json: {"kept": ..., "target": ..., "failed": ..., "bytes": ..., "groups_done": ...,
"groups": ..., "hosts_down": ..., "elapsed": ..., "done": ...}`` on stderr about every 0.5 s,
and once with ``"done": true`` at the end) and draws them with ``tqdm.auto``: a widget in
Jupyter, a text bar on a terminal. Elsewhere (a script writing to a log file) nothing is asked:
the child's ``Progress:`` lines pass through, as they would from the command.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

ENV = "DATASET_SPIDERS_PROGRESS"  # "json": the child writes PREFIX lines instead of a bar or Progress: lines
PREFIX = "progress-json: "
MB = 1 << 20


def bar_class(out: TextIO) -> Any:
    """tqdm.auto's bar where it can be seen: in Jupyter, where tqdm.auto's is the notebook's
    widget (tqdm.autonotebook found a kernel and ipywidgets), and on a terminal, where it is the
    text bar; None elsewhere (a file, a pipe; a kernel without ipywidgets), or where tqdm is
    missing."""
    try:
        from tqdm import autonotebook, std
        from tqdm.auto import tqdm as auto
    except ImportError:  # (tqdm is a dependency; a broken install should not stop a download)
        return None
    if autonotebook.tqdm is not std.tqdm:
        return auto
    try:
        return auto if out.isatty() else None
    except (AttributeError, ValueError):  # a stream without isatty, or closed
        return None


def numbers_of(line: str) -> dict[str, Any] | None:
    """The numbers of a progress line of the child, or None if ``line`` is not one (or is not
    readable: then it is passed on as any other line)."""
    if not line.startswith(PREFIX):
        return None
    try:
        numbers = json.loads(line[len(PREFIX):])
    except ValueError:
        return None
    return numbers if isinstance(numbers, dict) else None


class ParentBar:
    """A ``bar_class`` bar fed with the child's numbers, made at the first of them (a run that
    stops before it downloads draws none). The child's other lines are written above it."""

    def __init__(self, cls: Any, out: TextIO):
        self.cls = cls
        self.out = out
        self.bar: Any = None

    def show(self, n: dict[str, Any]) -> None:
        target = _count(n.get("target"))
        if self.bar is None:
            self.bar = self.cls(total=target, unit="img", desc="images", file=self.out, leave=True, smoothing=0.1)
        elif target != self.bar.total:
            self.bar.reset(total=target)
        self.bar.n = _count(n.get("kept")) or 0
        got = _count(n.get("bytes")) or 0
        elapsed = given if isinstance(given := n.get("elapsed"), (int, float)) else 0
        groups, down = _count(n.get("groups")), _count(n.get("hosts_down"))
        extra = f", classes {_count(n.get('groups_done')) or 0}/{groups}" if groups else ""
        extra += f", {down} host(s) down" if down else ""
        self.bar.set_postfix_str(f"{_count(n.get('failed')) or 0} failed, {got / MB:.1f} MB, "
                                 f"{got / MB / max(elapsed, 1e-6):.2f} MB/s{extra}", refresh=False)
        self.bar.refresh()
        if n.get("done") is True:
            self.close()

    def write(self, line: str) -> None:
        """A line of the child's log: above the bar while there is one."""
        if self.bar is not None:
            self.cls.write(line.rstrip("\n"), file=self.out)
        else:
            self.out.write(line)
            self.out.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
