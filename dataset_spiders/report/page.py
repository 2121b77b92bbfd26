r"""The page: one HTML file that holds everything it shows (styles, charts, thumbnails).

Every string that comes from disk (the manifest, ``dataset.json``, ``classes.txt``) goes through
``escape`` before it reaches the page, so a label such as ``<script>`` is shown as text and a
right-to-left override as ``\u202e``; a long unbroken string wraps in its cell. A
Content-Security-Policy forbids the page any load but its own ``data:`` images.
"""

from __future__ import annotations

import json
import shlex
import time
from typing import Any

from ..secrets import hidden_arguments, redacted_command, scrub
from . import charts
from .gather import FAILED_SHOWN, IN_DATASET, NOT_A_REASON, Gathered, last_run, run_downloaded, run_seconds
from .text import escape
from .thumbs import Thumb

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1240px;
padding:0 16px;color:#212121;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:14px;margin:16px 0 6px}.muted,.none{color:#757575}code,pre{font:12px/1.4 ui-monospace,Menlo,monospace}
pre{background:#f5f5f5;padding:8px 10px;white-space:pre-wrap;word-break:break-all;border-radius:4px}
table{border-collapse:collapse;margin:6px 0}th,td{padding:3px 10px;text-align:left;vertical-align:top;
border-bottom:1px solid #eee}th{background:#fafafa;font-weight:600}td.n,th.n{text-align:right;
font-variant-numeric:tabular-nums}tr.short td{background:#fff8e1}.ok{color:#2e7d32}.bad{color:#c62828}
.chart text{font-size:12px;fill:#333}.chart text.tick{font-size:11px;fill:#555}.chart text.n{font-size:10px}
.hists{display:flex;flex-wrap:wrap;gap:24px}figure{margin:0}figcaption{font-weight:600;margin:4px 0}
.grid{display:flex;flex-wrap:wrap;gap:6px}.grid figure{width:100px;text-align:center}
.grid img{display:block;margin:0 auto;border:1px solid #ddd;background:#fafafa}
.grid figcaption{font:10px/1.2 ui-monospace,monospace;font-weight:400;color:#616161;overflow:hidden;
text-overflow:ellipsis;white-space:nowrap}.key span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
nav a{margin-right:12px}td,th,code,pre{overflow-wrap:anywhere}
"""
MAX_HOST_ROWS = 100
MAX_RUN_ROWS = 20
MAX_URL = 300  # characters of a failed image's URL shown
STATUS = {0: "0: the run did its job", 1: "1: the run could not do its job", 2: "2: a bad argument or input"}


def render(got: Gathered, sheet: dict[str, list[Thumb]], summary: dict[str, Any]) -> str:
    """The whole page as text."""
    word = "class" if got.by == "class" else "label"
    body = [
        f"<h1>Dataset report</h1><p class=muted><code>{escape(got.root)}</code> · generated "
        f"{escape(time.strftime('%Y-%m-%d %H:%M:%S %z'))} from its manifest, dataset.json and kept files</p>",
        f'<nav><a href="#asked">what was asked</a><a href="#outcomes">outcomes</a><a href="#groups">by {word}</a>'
        '<a href="#hosts">hosts</a><a href="#sizes">sizes</a><a href="#sheet">contact sheet</a></nav>',
        *_outside(got), _asked(got, summary), _outcomes(got, summary), _groups(got, summary), _hosts(summary),
        _sizes(got),
        _sheet(got, sheet),
    ]
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name=viewport content="width=device-width,initial-scale=1">'
            f"<title>Dataset report: {escape(got.root)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def _outside(got: Gathered) -> list[str]:
    """A note naming the recorded folders outside the dataset that were not looked at."""
    if not got.outside:
        return []
    names = ", ".join(f"<code>{escape(f)}</code>" for f in got.outside)
    return [f"<p class=bad>Not looked at (outside this folder, and not named on the command line): {names}. "
            "Run <code>dataset-spiders report DIR --images-dir FOLDER</code> to include such a folder.</p>"]


def _asked(got: Gathered, summary: dict[str, Any]) -> str:
    run = last_run(got.runs)
    if not run:
        return '<h2 id=asked>What was asked</h2><p class=none>no dataset.json: the runs are not recorded</p>'
    # no secret shown, not even one an earlier version recorded (a token given as -atoken=...)
    command = run.get("command")
    line = shlex.join(redacted_command(command)) if isinstance(command, list) else scrub(str(command or ""))
    arguments = hidden_arguments(given if isinstance(given := run.get("arguments"), dict) else {})
    rows = "".join(f"<tr><th>{escape(str(k))}</th><td><code>{escape(_json(v))}</code></td></tr>"
                   for k, v in arguments.items() if v not in (None, [], False, ""))
    status = run.get("exit_status")
    if status is None:
        said = "no end recorded: the run was killed, or is still running"
    else:
        said = STATUS.get(status, str(status)) if isinstance(status, int) else str(status)
    cls = "ok" if status == 0 else "bad"
    error = scrub(str(run["error"])) if run.get("error") else None
    parts = [
        "<h2 id=asked>What was asked</h2>",
        f"<p>The last of {len(got.runs)} run(s), <b>{escape(str(run.get('spider') or '?'))}</b>, "
        f"started {escape(str(run.get('started')))}, ended {escape(str(run.get('ended')))}"
        f"{_took(summary['run'])}:</p>",
        f"<pre>{escape(line)}</pre>",
        f"<table>{rows}<tr><th>target</th><td>{escape(_target(got))}</td></tr>"
        f"<tr><th>exit status</th><td class={cls}>{escape(said)}</td></tr>"
        + (f"<tr><th>error</th><td class=bad>{escape(str(error))}</td></tr>" if error else "") + "</table>",
    ]
    if len(got.runs) > 1:
        shown = got.runs[-MAX_RUN_ROWS:]
        runs = "".join(
            f"<tr><td>{escape(str(r.get('started')))}</td><td>{escape(str(r.get('ended')))}</td>"
            f"<td class=n>{_duration(run_seconds(r))}</td><td class=n>{_downloaded(r)}</td>"
            f"<td>{escape(str(r.get('spider')))}</td><td class=n>{escape(str(r.get('exit_status')))}</td>"
            f"<td>{escape(scrub(str(r.get('error') or '')))}</td></tr>" for r in shown)
        parts.append(f"<h3>Runs (the last {len(shown)})</h3><table><tr><th>started</th><th>ended</th>"
                     "<th class=n>took</th><th class=n>downloaded</th>"
                     f"<th>spider</th><th class=n>exit</th><th>error</th></tr>{runs}</table>")
    return "\n".join(parts)


def _took(run: dict[str, Any]) -> str:
    """How long the run took and how fast it downloaded, for the sentence that names it."""
    seconds = run.get("seconds")
    if seconds is None:
        return ""
    took = f"; it took <b>{_duration(seconds)}</b>"
    downloaded, rate = run.get("downloaded"), run.get("images_per_second")
    if downloaded is None:
        return took
    took += f" and downloaded {downloaded:,} image(s)"
    return took + (f", <b>{rate:,.1f} images/s</b>" if rate is not None and downloaded else "")


def _duration(seconds: float | None) -> str:
    """``2 h 05 min``, ``3 min 07 s``, ``12.4 s``; an empty string when not known."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _downloaded(run: dict[str, Any]) -> str:
    downloaded = run_downloaded(run)
    return "" if downloaded is None else f"{downloaded:,}"


def _failed(got: Gathered) -> str:
    """The first few failed images of each kind, with their URLs: where a reader starts looking."""
    if not got.failed:
        return ""
    rows = []
    for outcome, named in sorted(got.failed.items(), key=lambda item: (-got.outcomes[item[0]], item[0])):
        cells = "<br>".join(f"<code>{escape(f.id)}</code> {_url(f.url)}" for f in named)
        more = got.outcomes[outcome] - len(named)
        tail = f"<br><span class=muted>and {more:,} more</span>" if more > 0 else ""
        rows.append(f'<tr><td><span style="color:{charts.color(outcome)}">{escape(outcome)}</span></td>'
                    f"<td class=n>{got.outcomes[outcome]:,}</td><td>{cells}{tail}</td></tr>")
    return (f"<h3>Failed images, by kind</h3><p class=muted>The first {FAILED_SHOWN} of each kind, in manifest "
            "order, each under its last manifest line; <code>manifest.jsonl</code> has every one, with the "
            "reason in its <code>detail</code>.</p><table><tr><th>outcome</th><th class=n>images</th>"
            f"<th>the first (id, URL)</th></tr>{''.join(rows)}</table>")


def _url(url: str | None) -> str:
    """A URL from the manifest as text (never a link: the page names nothing outside itself),
    its password hidden, cut at ``MAX_URL`` characters."""
    if not url:
        return "<span class=none>(no URL)</span>"
    url = scrub(url)
    shown = url if len(url) <= MAX_URL else url[:MAX_URL] + "…"
    return f"<code>{escape(shown)}</code>"


def _target(got: Gathered) -> str:
    target = got.target or {}
    if type(target.get("images")) is not int:
        return "every matching image"
    return f"{target['images']:,} images per {target.get('per') or 'selection'}"


def _outcomes(got: Gathered, summary: dict[str, Any]) -> str:
    totals = summary["totals"]
    masks = ", ".join(f"{escape(o)} {n:,}" for o, n in charts.order_outcomes(got.masks))
    held = totals["in_dataset"]
    target = (got.target or {}).get("images")
    of = f" of {target:,} asked" if type(target) is int and (got.target or {}).get("per") != "class" else ""
    why = ""
    if of and held < target:
        reasons = [(o, n) for o, n in charts.order_outcomes(got.outcomes) if o not in IN_DATASET | NOT_A_REASON]
        why = f" Short; most common failures: {_reasons(reasons[:3])}."
    parts = [
        "<h2 id=outcomes>Outcomes</h2>",
        f"<p><b>{held:,}</b> image(s) in the dataset{of} ({charts.human_bytes(totals['bytes'])}), "
        f"{totals['tried']:,} tried, {totals['failed']:,} not kept.{why} Each image counts once, under the "
        "last line the manifest has for it.</p>",
        charts.bar_chart(charts.order_outcomes(got.outcomes), "images by outcome"),
        '<p class="muted key">colours: <span style="background:#2e7d32"></span>in the dataset'
        '<span style="background:#ef6c00"></span>gone (HTTP 4xx)<span style="background:#7b1fa2"></span>'
        'may mend on a re-run<span style="background:#c62828"></span>refused or broken</p>',
    ]
    if failed := _failed(got):
        parts.append(failed)
    if masks:
        parts.append(f"<p>Masks: {masks}.</p>")
    if got.skipped:
        parts.append(f"<p class=bad>{got.skipped:,} manifest line(s) name a path outside the dataset, or not "
                     "an image's: skipped, as every tool of the project skips them.</p>")
    return "\n".join(parts)


def _groups(got: Gathered, summary: dict[str, Any]) -> str:
    word = "class" if got.by == "class" else "label"
    target = got.group_target
    named = any(group["label"] for group in summary["groups"])  # imagenet classes with words
    rows = []
    short = 0
    for group in summary["groups"]:
        reasons = [tuple(r) for r in group["short_reasons"]]
        is_short = target is not None and group["kept"] < target
        short += is_short
        if is_short and group.get("shortfall"):  # the run's own words: failures, flickr_only, unknown
            why = escape(group["shortfall"])
        elif is_short:
            idle = "nothing tried: no URLs for it?" if not group["tried"] else "no failure recorded: too few candidates"
            why = _reasons(reasons) if reasons else idle
        else:
            why = _reasons(sorted(group["failures"].items(), key=lambda kv: -kv[1])[:3])
        words = f"<td>{escape(group['label'] or '')}</td>" if named else ""
        goal = f" / {target:,}" if target is not None else ""
        rows.append(
            f"<tr{' class=short' if is_short else ''}><td><code>{escape(group['name'])}</code></td>{words}"
            f"<td class=n>{group['kept']:,}{goal}</td><td>{charts.meter(group['kept'], target)}</td>"
            f"<td class=n>{group['tried']:,}</td><td>{why}</td></tr>")
    head = f"<th>{word}</th>" + ("<th>name</th>" if named else "")
    kept_head = "kept / target" if target is not None else "kept"
    last_head = "most common failures (why short, where short)" if target is not None else "failures"
    summary_line = (f"<p>{len(rows):,} class(es), {short:,} short of {target:,}.</p>" if target is not None
                    else f"<p>{len(rows):,} label(s).</p>")
    return (f"<h2 id=groups>By {word}</h2>{summary_line}<table><tr>{head}<th class=n>{kept_head}</th><th></th>"
            f"<th class=n>tried</th><th>{last_head}</th></tr>{''.join(rows)}</table>")


def _hosts(summary: dict[str, Any]) -> str:
    hosts = summary["hosts"]
    rows = "".join(
        f"<tr><td><code>{escape(h['host'])}</code></td><td class=n>{h['tried']:,}</td><td class=n>{h['kept']:,}</td>"
        f"<td>{_reasons(sorted(h['failures'].items(), key=lambda kv: -kv[1]))}</td></tr>"
        for h in hosts[:MAX_HOST_ROWS])
    more = ""
    if len(hosts) > MAX_HOST_ROWS:
        rest = hosts[MAX_HOST_ROWS:]
        more = (f"<p class=muted>and {len(rest):,} more host(s): {sum(h['tried'] for h in rest):,} tried, "
                f"{sum(h['kept'] for h in rest):,} kept.</p>")
    down = summary.get("hosts_down") or []
    said = ""
    if down:
        named = ", ".join(f"<code>{escape(h['host'])}</code> ({h['candidates']:,})" for h in down[:MAX_HOST_ROWS])
        said = (f"<p class=bad>{len(down):,} host(s) were down (no answer to a few connections in a row); the "
                f"candidates not asked because of them: {named}. A re-run tries them again.</p>")
    return (f"<h2 id=hosts>Hosts</h2><p>{len(hosts):,} host(s), most tried first.</p>{said}<table><tr><th>host</th>"
            f"<th class=n>tried</th><th class=n>kept</th><th>failures</th></tr>{rows}</table>{more}")


def _sizes(got: Gathered) -> str:
    figures = [charts.histogram(got.sizes, "size of the kept files", charts.human_bytes),
               charts.histogram(got.widths, "width (pixels)", charts.pixels),
               charts.histogram(got.heights, "height (pixels)", charts.pixels)]
    notes = []
    for name, hist, unit in (("size", got.sizes, charts.human_bytes), ("width", got.widths, charts.pixels),
                             ("height", got.heights, charts.pixels)):
        if hist.n:
            notes.append(f"{name} {unit(hist.low or 0)} to {unit(hist.high or 0)}, mean {unit(hist.total // hist.n)}")
    return (f"<h2 id=sizes>Sizes and dimensions of what was kept</h2><p>{escape('; '.join(notes)) or 'none kept'}"
            f"</p><div class=hists>{''.join(figures)}</div>")


def _sheet(got: Gathered, sheet: dict[str, list[Thumb]]) -> str:
    word = "class" if got.by == "class" else "label"
    parts = ["<h2 id=sheet>Contact sheet</h2>",
             f"<p class=muted>A sample of the kept images of each {word} (the first kept, in manifest order), "
             "made from the files on disk.</p>"]
    left_out = 0
    for name, tally in got.groups.items():
        thumbs = sheet.get(name)
        if not tally.kept or thumbs is None:
            left_out += bool(tally.kept)
            continue
        title = escape(name) + (f" · {escape(tally.label)}" if tally.label else "")
        cells = "".join(
            f'<figure><img src="{t.uri}" width="{t.width}" height="{t.height}" alt="{escape(t.id)}" '
            f'title="{escape(t.id)}"><figcaption>{escape(t.id)}</figcaption></figure>' for t in thumbs)
        shown = f"{len(thumbs)} of {tally.kept:,} kept"
        parts.append(f"<h3>{title} <span class=muted>({shown})</span></h3>"
                     + (f"<div class=grid>{cells}</div>" if cells else
                        "<p class=none>no thumbnail could be made (files missing, changed or unreadable)</p>"))
    if left_out:
        words = "class(es)" if word == "class" else "label(s)"
        parts.append(f"<p class=muted>{left_out:,} more {words} with kept images are not sampled: the sheet "
                     "holds REPORT_THUMBNAILS_MAX thumbnails at most.</p>")
    return "\n".join(parts)


def _reasons(pairs: list[tuple[str, int]] | list[tuple[Any, ...]]) -> str:
    return ", ".join(f'<span style="color:{charts.color(str(o))}">{escape(str(o))}</span> {n:,}' for o, n in pairs)


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
