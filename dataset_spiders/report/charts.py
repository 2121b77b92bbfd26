"""Charts as inline SVG: a page that must open offline cannot load a charting library.

Every string drawn comes from the manifest or ``dataset.json`` and is escaped here; numbers are
formatted here. The SVG carries no namespace URL (inline SVG in HTML needs none), so the page
names nothing outside itself.
"""

from __future__ import annotations

from collections.abc import Callable

from .gather import IN_DATASET, Histogram
from .text import escape

BAR = 20  # px, one row of a bar chart
GAP = 6
LABEL = 170  # px, the column of names
COLORS = {"kept": "#2e7d32", "present": "#66bb6a", "described": "#81c784", "surplus": "#9e9e9e",
          "cancelled": "#bdbdbd", "duplicate": "#8d6e63", "placeholder": "#6d4c41"}
FAILED = "#c62828"
GONE = "#ef6c00"  # 4xx: the image is not there any more
FLAKY = "#7b1fa2"  # timeouts, dropped connections, 5xx: may mend on a re-run


def color(outcome: str) -> str:
    """A colour per kind of outcome, the same in every chart and table."""
    if outcome in COLORS:
        return COLORS[outcome]
    if outcome.startswith("http_4"):
        return GONE
    if outcome.startswith("http_5") or outcome in ("timeout", "connection", "truncated", "rate_limited"):
        return FLAKY
    return FAILED


def order_outcomes(counts: dict[str, int]) -> list[tuple[str, int]]:
    """What the dataset holds first, then the failures, most common first."""
    return sorted(counts.items(), key=lambda item: (item[0] not in IN_DATASET, -item[1], item[0]))


def bar_chart(rows: list[tuple[str, int]], title: str, width: int = 720) -> str:
    """A horizontal bar per (name, count), coloured by outcome, the count at the bar's end."""
    if not rows:
        return '<p class="none">nothing to draw</p>'
    top = max(n for _, n in rows) or 1
    room = width - LABEL - 70
    height = len(rows) * (BAR + GAP) + GAP
    parts = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
             f"<title>{escape(title)}</title>"]
    for i, (name, n) in enumerate(rows):
        y = GAP + i * (BAR + GAP)
        length = max(1, round(room * n / top)) if n else 0
        parts.append(
            f'<text x="{LABEL - 8}" y="{y + BAR - 6}" text-anchor="end">{escape(_clip(name))}</text>'
            f'<rect x="{LABEL}" y="{y}" width="{length}" height="{BAR}" fill="{color(name)}">'
            f"<title>{escape(name)}: {n:,}</title></rect>"
            f'<text x="{LABEL + length + 6}" y="{y + BAR - 6}">{n:,}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram(hist: Histogram, title: str, unit: Callable[[int], str], width: int = 560) -> str:
    """Vertical bars over the bins that hold anything (and those between), each labelled with
    its lower bound; ``unit`` formats a bound (bytes, pixels)."""
    used = [i for i, n in enumerate(hist.counts) if n]
    if not used:
        return f'<figure class="hist"><figcaption>{escape(title)}</figcaption><p class="none">none kept</p></figure>'
    first, last = used[0], used[-1]
    bins = list(range(first, last + 1))
    top = max(hist.counts[i] for i in bins)
    step = max(28, min(64, (width - 20) // len(bins)))
    plot, height = 150, 200
    width = 20 + step * len(bins)
    parts = [f'<figure class="hist"><figcaption>{escape(title)}</figcaption>',
             f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
             f"<title>{escape(title)}</title>",
             f'<line x1="10" y1="{plot + 20}" x2="{width - 10}" y2="{plot + 20}" stroke="#999"/>']
    for k, i in enumerate(bins):
        n = hist.counts[i]
        bar = round(plot * n / top) if n else 0
        x = 10 + k * step
        upper = f" to {unit(hist.edges[i + 1])}" if i + 1 < len(hist.edges) else " and more"
        parts.append(
            f'<rect x="{x + 3}" y="{plot + 20 - bar}" width="{step - 6}" height="{bar}" fill="#1565c0">'
            f"<title>{escape(unit(hist.edges[i]) + upper)}: {n:,}</title></rect>"
            f'<text x="{x + step / 2}" y="{plot + 14 - bar}" text-anchor="middle" class="n">{n:,}</text>'
            f'<text x="{x + step / 2}" y="{plot + 36}" text-anchor="middle" class="tick">'
            f"{escape(unit(hist.edges[i]))}</text>"
        )
    parts.append("</svg></figure>")
    return "".join(parts)


def meter(kept: int, target: int | None) -> str:
    """A small bar: how full a class is (kept of target)."""
    if not target:
        return ""
    share = min(1.0, kept / target)
    fill = "#2e7d32" if kept >= target else "#ef6c00"
    return (f'<svg class="meter" width="80" height="10" role="img"><title>{kept:,} of {target:,}</title>'
            f'<rect width="80" height="10" fill="#e0e0e0"/><rect width="{round(80 * share)}" height="10" '
            f'fill="{fill}"/></svg>')


def human_bytes(n: int) -> str:
    """``2 KiB``, ``1.5 MiB``: bin bounds and totals people can read."""
    value = float(n)
    for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or suffix == "TiB":
            return f"{value:.0f} {suffix}" if value == int(value) or suffix == "B" else f"{value:.1f} {suffix}"
        value /= 1024
    return f"{n} B"


def pixels(n: int) -> str:
    return f"{n:,}"


def _clip(text: str, most: int = 24) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"
