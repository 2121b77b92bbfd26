"""What dead image hosts cost (issue 17, "dead hosts cost one timeout, not one per URL"): wall time of
`scrapy crawl imagenet` on a URL list whose classes start with URLs on dead hosts, and how many requests
reach those hosts, with the crawler's settings as given and (--baseline) with host health turned off.

The world is tests/emulators/dead_hosts.py's DeadHostsWorld, real peers on loopback addresses of their
own, no proxy: one class per kind of dead host, SCALE dead URLs in front of its good ones,
  black_holed    two hosts that accept connections and never answer (SCALE/2 URLs each)
  refused        a host:port nothing listens on (refused at once)
  unconnectable  a host whose connect() hangs (accept queue full, SYNs dropped)
  unresolvable   photos-gone.invalid (no such name)
plus a class with good URLs only; good URLs are spread over two live hosts. Each run gets a fresh world
(the same shape), runs `scrapy crawl imagenet -a urls_file=LIST -a wnids=... -a per_class=5
-a flickr_only=false -a out_dir=...` from the project, and must be exact: exit 0 and per_class files per
class, each byte for byte a body served for that class. Requests per dead host come from the emulators'
counters where a host can count (black holes count connections and requests; a refusal, a dropped SYN
and a failed lookup never reach a process): for every dead host the manifest's outcomes of its URLs are
shown too (a URL without a line was never taken up).

    .venv/bin/python bench/dead_hosts.py [--scale 14] [--kinds black_holed,refused,unconnectable,unresolvable]
        [--per-class 5] [--settings NAME=VALUE ...] [--baseline] [--project DIR] [--logs DIR]

--baseline runs the same world a second time with host health off (BASELINE_OFF below) and prints the
ratio new / baseline. Today (imagenet: IMAGES_DOWNLOAD_TIMEOUT 15 s, one retry) each black-holed or
unconnectable URL in flight costs ~30 s and a class keeps per_class + 2 candidates in flight, so the
baseline takes ~30 s x SCALE / 7; the issue's scale (--scale 120) takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.emulators.dead_hosts import (  # noqa: E402
    BLACK_HOLED,
    DNS_ENV,
    REFUSED,
    UNCONNECTED,
    UNRESOLVED,
    DeadHostsWorld,
)

KINDS = ("black_holed", "refused", "unconnectable", "unresolvable")
BASELINE_OFF = {  # the code before host health: no health, no separate limits, today's 15 s per image request
    "HOSTS_DOWN_AFTER": "0", "IMAGES_CONNECT_TIMEOUT": "0", "IMAGES_FIRST_BYTE_TIMEOUT": "0",
    "HOSTS_UNPROVEN_CONCURRENCY": "0", "HOSTS_STALL_AFTER": "0", "IMAGES_DOWNLOAD_TIMEOUT": "15",
}
"""Settings that turn host health off (unknown to code without it, which accepts them unread)."""
KIND_OF_CLASS = {BLACK_HOLED: "black_holed", REFUSED: "refused", UNCONNECTED: "unconnectable",
                 UNRESOLVED: "unresolvable"}


def crawl_env() -> dict[str, str]:
    """This machine's environment without proxy variables (the world is direct, on loopback) or SCRAPY_*;
    with DNS_ENV, so a lost DNS reply (about 1 lookup in 30 here) costs 1 s, not glibc's 5 s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRAPY_") and not k.lower().endswith("_proxy")}
    return env | DNS_ENV | {"PYTHONDONTWRITEBYTECODE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}


def crawl_command(python: Path, urls_file: Path, wnids: list[str], per_class: int, out: Path,
                  settings: dict[str, str]) -> list[str]:
    cmd = [str(python), "-m", "scrapy", "crawl", "imagenet", "-a", f"urls_file={urls_file}",
           "-a", f"wnids={','.join(wnids)}", "-a", f"per_class={per_class}", "-a", "flickr_only=false",
           "-a", f"out_dir={out}", "-s", "PROGRESS=off", "-s", "REPORT_HTML=false"]
    for name, value in settings.items():
        cmd += ["-s", f"{name}={value}"]
    return cmd


def last_lines(out: Path) -> dict[str, dict]:
    """The manifest's last line per image id (an image may have several: the last is its outcome)."""
    manifest = out / "manifest.jsonl"
    lines = [json.loads(line) for line in manifest.read_text().splitlines()] if manifest.exists() else []
    return {line["id"]: line for line in lines if line.get("kind", "image") == "image"}


def run_once(label: str, args: argparse.Namespace, settings: dict[str, str], tmp: Path) -> dict:
    """A fresh world, one crawl in it; wall time, exactness, counters and the manifest's outcomes."""
    kinds = set(args.kinds)
    sizes = {"black_holed": -(-args.scale // 2) if "black_holed" in kinds else 0,
             "refused": args.scale if "refused" in kinds else 0,
             "unconnectable": args.scale if "unconnectable" in kinds else 0,
             "unresolvable": args.scale if "unresolvable" in kinds else 0}
    good = args.good if args.good is not None else args.per_class + 5
    with DeadHostsWorld(black_holed=sizes["black_holed"], refused=sizes["refused"], good=good,
                        unconnectable=sizes["unconnectable"], unresolvable=sizes["unresolvable"]) as world:
        for wnid in [w for w, kind in KIND_OF_CLASS.items() if kind not in kinds and w in world.classes]:
            del world.classes[wnid]  # a kind left out: its class (good URLs only, now) goes too
        urls_file = world.write(tmp / f"{label}.txt")
        out = tmp / f"out-{label}"
        cmd = crawl_command(args.python, urls_file, world.wnids, args.per_class, out, settings)
        log = tmp / f"log-{label}.txt"
        print(f"running {label}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
        start, launched = time.perf_counter(), time.time()
        with open(log, "wb") as sink:
            try:
                rc = subprocess.run(cmd, cwd=args.project, env=crawl_env(), stdout=sink, stderr=subprocess.STDOUT,
                                    timeout=args.timeout).returncode
            except subprocess.TimeoutExpired:
                rc = -1
        wall = time.perf_counter() - start
        holes = world.dead_host_requests()
        problems = world.check(out / "Images", args.per_class)
        lines = last_lines(out)
        hosts = dead_hosts(world, lines)
        good_requests = world.good_requests()
    if rc:
        tail = log.read_text(errors="replace")[-3000:]
        print(f"{label}: exit {rc}{' (timed out)' if rc == -1 else ''}; the log ends:\n{tail}", file=sys.stderr)
    return {"label": label, "wall": wall, "rc": rc, "problems": problems, "holes": holes, "hosts": hosts,
            "outcomes": Counter(line["outcome"] for line in lines.values()), "good_requests": good_requests,
            "full_after": full_after(lines, launched), "log": log}


def full_after(lines: dict[str, dict], launched: float) -> dict[str, float]:
    """Seconds from the crawl's launch to each class's last kept image (the manifest's ``time``)."""
    last: dict[str, float] = {}
    for line in lines.values():
        if line["outcome"] == "kept" and isinstance(line.get("time"), float):
            last[line["group"]] = max(last.get(line["group"], 0.0), line["time"] - launched)
    return last


def dead_hosts(world: DeadHostsWorld, lines: dict[str, dict]) -> list[dict]:
    """One row per dead host: its kind, URLs listed, requests it counted (None: it cannot count), and
    the manifest's outcomes of its URLs."""
    by_url = {line.get("url"): line["outcome"] for line in lines.values()}
    rows: dict[str, dict] = {}
    for wnid, urls in world.classes.items():
        for url in urls:
            if url in world.bodies:
                continue
            netloc = urlsplit(url).netloc
            row = rows.setdefault(netloc, {"host": netloc, "kind": KIND_OF_CLASS.get(wnid, "?"), "listed": 0,
                                           "requests": None, "connections": None, "outcomes": Counter()})
            row["listed"] += 1
            row["outcomes"][by_url.get(url, "(no line)")] += 1
    for netloc, counts in world.dead_host_requests().items():
        if netloc in rows:
            rows[netloc]["requests"], rows[netloc]["connections"] = counts["requests"], counts["connections"]
    return list(rows.values())


def report(results: list[dict], args: argparse.Namespace) -> None:
    print(f"\n{args.scale} dead URLs per class ({', '.join(args.kinds)}), per_class={args.per_class}, "
          f"{os.cpu_count()} cores; wall = process start to exit; requests = what reached the host (black holes "
          "count them; '-': the host cannot count); outcomes: the manifest's last line per URL")
    for r in results:
        exact = "exact" if r["rc"] == 0 and not r["problems"] else "NOT EXACT"
        print(f"\n{r['label']}: {r['wall']:.1f} s, exit {r['rc']}, {exact}; good hosts: {r['good_requests']} requests; "
              f"outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items())))
        for problem in r["problems"][:10]:
            print(f"  problem: {problem}")
        print("  class full after: " + ", ".join(f"{wnid} ({KIND_OF_CLASS.get(wnid, 'good only')}) {t:.1f} s"
                                                   for wnid, t in sorted(r["full_after"].items(), key=lambda x: x[1])))
        print(f"  {'dead host':<22}{'kind':<15}{'listed':>7}{'requests':>9}{'conns':>6}  manifest outcomes")
        for row in r["hosts"]:
            reqs = "-" if row["requests"] is None else str(row["requests"])
            conns = "-" if row["connections"] is None else str(row["connections"])
            outcomes = ", ".join(f"{k} {v}" for k, v in row["outcomes"].most_common())
            print(f"  {row['host']:<22}{row['kind']:<15}{row['listed']:>7}{reqs:>9}{conns:>6}  {outcomes}")
    if len(results) == 2:
        new, base = results
        def requests(r: dict) -> int:
            return sum(row["requests"] or 0 for row in r["hosts"])
        ratio = f"{requests(new) / requests(base):.2f}" if requests(base) else "n/a"
        print(f"\nnew / baseline: wall x{new['wall'] / base['wall']:.2f} ({new['wall']:.1f} s / {base['wall']:.1f} s), "
              f"requests to black holes x{ratio} ({requests(new)} / {requests(base)})")
        both = [w for w in new["full_after"] if w in base["full_after"] and base["full_after"][w] > 0]
        print("class full after, new / baseline: " + ", ".join(
            f"{KIND_OF_CLASS.get(w, 'good only')} x{new['full_after'][w] / base['full_after'][w]:.2f}" for w in both))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, default=14, help="dead URLs in front of each class's good ones (default 14)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"kinds of dead host, from {','.join(KINDS)}")
    ap.add_argument("--per-class", type=int, default=5)
    ap.add_argument("--good", type=int, help="good URLs per class (default per_class + 5)")
    ap.add_argument("--settings", nargs="*", default=[], metavar="NAME=VALUE", help="passed as -s NAME=VALUE")
    ap.add_argument("--baseline", action="store_true", help="also run with host health off; print new / baseline")
    ap.add_argument("--project", type=Path, default=HERE.parent, help="the checkout whose crawler runs")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds a crawl may take before it is killed")
    ap.add_argument("--logs", type=Path, help="copy each crawl's log and URL list into this folder")
    args = ap.parse_args()
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if unknown := set(args.kinds) - set(KINDS):
        ap.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    settings = {}
    for item in args.settings:
        name, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--settings takes NAME=VALUE, got {item!r}")
        settings[name] = value
    args.project = args.project.resolve()
    venv = args.project / ".venv" / "bin" / "python"
    args.python = venv if venv.exists() else Path(sys.executable)
    again = [sys.executable, str(Path(__file__).resolve()), "--scale", str(args.scale), "--kinds", ",".join(args.kinds),
             "--per-class", str(args.per_class), "--project", str(args.project)]
    again += ["--good", str(args.good)] if args.good is not None else []
    again += ["--baseline"] if args.baseline else []
    again += ["--settings", *args.settings] if args.settings else []
    print(f"reproduce: cd {args.project} && {shlex.join(again)}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-dead-hosts-") as tmp_name:
        tmp = Path(tmp_name)
        results.append(run_once("new", args, settings, tmp))
        if args.baseline:
            results.append(run_once("baseline", args, settings | BASELINE_OFF, tmp))
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for path in tmp.glob("*.txt"):
                (args.logs / path.name).write_bytes(path.read_bytes())
    report(results, args)
    if any(r["rc"] or r["problems"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
