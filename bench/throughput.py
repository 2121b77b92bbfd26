"""Images per second, CPU per image and peak memory: `scrapy crawl imagenet` against Scrapy's stock
FilesPipeline and img2dataset, same live URLs, same local server, one run after another; then
`scrapy crawl imagenet` on a list of dead URLs.

A local photo server (bench/throughput_lib.py: asyncio, HTTP-proxy style so URLs keep real host
names, N distinct ~75 KB JPEGs of 500x375 precomputed and cached, LATENCY seconds per answer) serves
  a  stock:      a plain spider, Scrapy's FilesPipeline, no checks (no project settings, no scrapy.cfg)
  b  ours:       `scrapy crawl imagenet` on a fall11-style list (10 classes x N/10, per_class=N/10)
  c  img2dataset: 2 processes x 128 threads, no resize, no re-encoding (its own virtualenv, made once)
  d  ours-dead:  `scrapy crawl imagenet` on N dead URLs: half refused connections, half 404
  e  ours-near:  b with NEAR_DUPLICATES on (a perceptual hash per image, looked up among those kept)
  f  ours-dead, host health off: d as the code was before host health (every dead URL asked, and
     retried at once), for the ratio d / f
  g  ours, host health off: b the same way, for the ratio b / g (live hosts must not pay for it)
all with 128 requests allowed in flight (img2dataset: 256), URLs spread over 8 host names. CPU and peak
RSS are the child's (os.wait4 rusage: its own plus its reaped children's; ru_maxrss is the largest single
process); "tree MB" is sampled from /proc every 0.2 s (the child and its descendants, summed); "srv" is
the server's CPU in % of one core (near 100% it would be the bottleneck: it is single-threaded);
"others" is every other process's CPU on the machine in the meantime (this bench's own included): over
~20% the machine was shared and the rates are low. "in flight" is at the server (requests waiting out
their latency): avg = requests x latency / serving time.

    .venv/bin/python bench/throughput.py [--n 5000] [--latency 0.05] [--only a,b,c,d,e,f,g] [--project DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import throughput_lib as lib

HERE = Path(__file__).resolve().parent
HOSTS = [f"farm{i}.staticflickr.com" for i in range(1, 9)]
CLASSES = 10
CONCURRENCY = 128
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp"}


def live_urls(n: int) -> list[str]:
    return [f"http://{HOSTS[i % 8]}/{1000 + i % 997}/{i}_{hashlib.sha1(b'%d' % i).hexdigest()[:10]}.jpg"
            for i in range(n)]


def dead_urls(n: int, port: int) -> list[str]:
    """Even: a 404 from the server (proxied, real host names); odd: refused (127.0.0.2-9, nothing listens)."""
    return [f"http://{HOSTS[i % 8]}/{1000 + i % 997}/gone/{i}.jpg" if i % 2 == 0
            else f"http://127.0.0.{2 + (i // 2) % 8}:{port}/{1000 + i % 997}/{i}_dead.jpg" for i in range(n)]


def write_list(path: Path, urls: list[str]) -> list[str]:
    """fall11 style, ``<wnid>_<n>`` TAB URL, CLASSES classes in a row; returns the wnids."""
    per = -(-len(urls) // CLASSES)
    wnids = [f"n{1_000_000 + c:08d}" for c in range(CLASSES)]
    path.write_text("".join(f"{wnids[i // per]}_{i % per + 1}\t{u}\n" for i, u in enumerate(urls)))
    return wnids


def count_files(folder: Path, suffixes: set[str] = IMAGE_EXTS) -> int:
    return sum(1 for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


def tree_rss(pid: int) -> int:
    """RSS in bytes of ``pid`` and every descendant, from /proc."""
    parent: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    parent[int(entry.name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    family, total = {pid}, 0
    for _ in range(5):
        family |= {p for p, pp in parent.items() if pp in family}
    for p in family:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, pack: Path, latency: float):
        cmd = [sys.executable, str(HERE / "throughput_lib.py"), "serve", str(pack), str(latency)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = json.loads(self.proc.stdout.readline())["port"]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self, path: str = "/_stats") -> dict:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        return json.loads(opener.open(self.url + path, timeout=10).read())

    def stop(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(timeout=10)


def measure(name: str, cmd: list[str], cwd: Path, env: dict, log: Path, server: Server) -> dict:
    """Run ``cmd``; wall time, rusage of the child (os.wait4), sampled tree RSS, the server's CPU and counts."""
    server.stats("/_reset")
    srv_cpu, busy = cpu_seconds(server.proc.pid), machine_busy()
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    after, busy = server.stats(), machine_busy() - busy
    if proc.returncode:
        print(f"{name}: exit {proc.returncode}; the log ends:\n{log.read_text(errors='replace')[-3000:]}")
    cpu, srv_cpu = usage.ru_utime + usage.ru_stime, cpu_seconds(server.proc.pid) - srv_cpu
    return {"name": name, "wall": wall, "cpu": cpu, "rc": proc.returncode, "others": busy - cpu - srv_cpu,
            "maxrss": usage.ru_maxrss * 1024, "tree": peak[0], "srv_cpu": srv_cpu,
            "requests": after["200"] + after["404"], "peak": after["peak"], "span": after["last"] - after["first"]}


def img2dataset_bin(cache: Path) -> Path | None:
    venv = cache / "venv-img2dataset"
    exe = venv / "bin" / "img2dataset"
    if not exe.exists():
        print(f"installing img2dataset into {venv} (once)...", file=sys.stderr, flush=True)
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)]).returncode == 0 and subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "img2dataset"], capture_output=True, text=True
        ).returncode == 0
        if not made or not exe.exists():
            return None
    return exe


def client_env(proxy: str) -> dict[str, str]:
    """The environment of every client: this machine's, with the photo server as its HTTP proxy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRAPY_") and k.lower() not in ("http_proxy",
           "https_proxy", "no_proxy", "all_proxy")}
    no_proxy = ",".join(["localhost", *(f"127.0.0.{i}" for i in range(1, 10))])
    return env | {"http_proxy": proxy, "HTTP_PROXY": proxy, "no_proxy": no_proxy, "NO_PROXY": no_proxy,
                  "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def ours_command(python: Path, per_class: int) -> list[str]:
    """``scrapy crawl imagenet`` as benchmarked (DATASET_MAX_IN_FLIGHT is per class: 13 x 10 classes
    keeps 130 candidates in flight); the caller adds the list, the classes and out_dir."""
    return [str(python), "-m", "scrapy", "crawl", "imagenet", "-a", f"per_class={per_class}",
            "-a", "flickr_only=false", "-s", f"CONCURRENT_REQUESTS={CONCURRENCY}",
            "-s", f"CONCURRENT_REQUESTS_PER_DOMAIN={CONCURRENCY}", "-s", f"IMAGENET_ACTIVE_CLASSES={CLASSES}",
            "-s", f"DATASET_MAX_IN_FLIGHT={-(-CONCURRENCY // CLASSES)}"]


#: The settings that turn host health off (dataset/hosts.py): every dead URL asked, as before it.
HEALTH_OFF = ["-s", "HOSTS_DOWN_AFTER=0", "-s", "HOSTS_UNPROVEN_CONCURRENCY=0", "-s", "HOSTS_STALL_AFTER=0",
              "-s", "IMAGES_CONNECT_TIMEOUT=0", "-s", "IMAGES_FIRST_BYTE_TIMEOUT=0", "-s", "IMAGES_DOWNLOAD_TIMEOUT=15"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--only", default="a,b,c,d,e,f,g")
    ap.add_argument("--project", type=Path, default=HERE.parent)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                    / "dataset-spiders-bench")
    ap.add_argument("--logs", type=Path, help="copy each client's log (and the URL lists) into this folder")
    args = ap.parse_args()
    n, only, project = args.n, set(args.only.split(",")), args.project.resolve()
    python = project / ".venv" / "bin" / "python"
    python = python if python.exists() else Path(sys.executable)
    pack = lib.ensure_pack(n, args.cache)
    refused = socket.socket()  # bound, never listening: every connection to its port is refused
    refused.bind(("127.0.0.1", 0))
    server = Server(pack, args.latency)
    env = client_env(server.url)
    ours = ours_command(python, -(-n // CLASSES))
    results, expected = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp_name:
        tmp = Path(tmp_name)
        urls = live_urls(n)
        wnids = write_list(tmp / "live.txt", urls)
        (tmp / "live-urls.txt").write_text("".join(u + "\n" for u in urls))
        write_list(tmp / "dead.txt", dead_urls(n, refused.getsockname()[1]))
        runs = {
            "a": ("stock FilesPipeline", lambda out: [sys.executable, str(HERE / "throughput_lib.py"), "stock",
                                                      str(tmp / "live.txt"), str(out)], tmp),
            "b": ("ours (imagenet)", lambda out: [*ours, "-a", f"urls_file={tmp / 'live.txt'}",
                                                  "-a", f"wnids={','.join(wnids)}", "-a", f"out_dir={out}"], project),
            "c": ("img2dataset", None, tmp),
            "d": ("ours, dead URLs", lambda out: [*ours, "-a", f"urls_file={tmp / 'dead.txt'}",
                                                  "-a", f"wnids={','.join(wnids)}", "-a", f"out_dir={out}"], project),
            "e": ("ours, near-copies", lambda out: [*ours, "-s", "NEAR_DUPLICATES=true", "-a",
                                                    f"urls_file={tmp / 'live.txt'}", "-a", f"wnids={','.join(wnids)}",
                                                    "-a", f"out_dir={out}"], project),
            "f": ("ours, dead, no health", lambda out: [*ours, *HEALTH_OFF, "-a", f"urls_file={tmp / 'dead.txt'}",
                                                        "-a", f"wnids={','.join(wnids)}", "-a", f"out_dir={out}"],
                  project),
            "g": ("ours, no health", lambda out: [*ours, *HEALTH_OFF, "-a", f"urls_file={tmp / 'live.txt'}",
                                                  "-a", f"wnids={','.join(wnids)}", "-a", f"out_dir={out}"], project),
        }
        for key in "abcdefg":
            if key not in only:
                continue
            label, make, cwd = runs[key]
            out = tmp / f"out-{key}"
            if key == "c":
                exe = img2dataset_bin(args.cache)
                if exe is None:
                    print("img2dataset: cannot be installed here (pip install img2dataset failed); skipped")
                    continue
                cmd = [str(exe), "--url_list", str(tmp / "live-urls.txt"), "--input_format", "txt",
                       "--output_folder", str(out), "--output_format", "files", "--processes_count", "2",
                       "--thread_count", str(CONCURRENCY), "--resize_mode", "no", "--disable_all_reencoding",
                       "True", "--number_sample_per_shard", str(-(-n // 2)), "--timeout", "15",
                       "--enable_wandb", "False", "--distributor", "multiprocessing"]
            else:
                cmd = make(out)
            print(f"running {key}: {label}...", file=sys.stderr, flush=True)
            r = measure(label, cmd, cwd, env, tmp / f"log-{key}.txt", server)
            r["files"] = count_files(out) if out.exists() else 0
            r["units"] = n if key in "df" else r["files"]
            expected[label] = 0 if key in "df" else n
            if key in "df":
                manifest = out / "manifest.jsonl"
                lines = manifest.read_text().splitlines() if manifest.exists() else []
                outcomes = Counter(json.loads(line)["outcome"] for line in lines).most_common()
                r["note"] = f"manifest: {len(lines)} lines; " + ", ".join(f"{k} {v}" for k, v in outcomes)
            results.append(r)
            shutil.rmtree(out, ignore_errors=True)
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for path in [*tmp.glob("log-*.txt"), tmp / "live.txt", tmp / "dead.txt"]:
                shutil.copy(path, args.logs)
    server.stop()
    refused.close()
    report(results, expected, n, args.latency)


def report(results: list[dict], expected: dict, n: int, latency: float) -> None:
    print(f"\n{n} URLs, {latency * 1000:.0f} ms per answer, {CONCURRENCY} in flight, {os.cpu_count()} cores; "
          "img/s = files / wall (process start to exit), steady = files / (first request to last answer at the "
          "server); CPU %, srv and others (every other process) in % of one core over the wall time")
    print(f"{'client':<20}{'files':>6}{'ok':>4}{'wall s':>7}{'img/s':>7}{'steady':>7}{'CPU ms/img':>11}{'CPU':>6}"
          f"{'maxrss MB':>10}{'tree MB':>8}{'srv':>6}{'others':>7}{'reqs':>6}{'in flight avg/peak':>19}")
    by = {}
    for r in results:
        by[r["name"]] = r
        r["rate"], r["per"] = r["units"] / r["wall"], r["cpu"] * 1000 / max(r["units"], 1)
        r["steady"] = r["units"] / r["span"] if r["span"] > 0 else 0.0
        ok = "yes" if r["files"] == expected[r["name"]] and r["rc"] == 0 else "NO"
        avg = r["requests"] * latency / r["span"] if r["span"] > 0 else 0.0
        pct = {k: f"{r[k] / r['wall'] * 100:.0f}%" for k in ("cpu", "srv_cpu", "others")}
        print(f"{r['name']:<20}{r['files']:>6}{ok:>4}{r['wall']:>7.1f}{r['rate']:>7.0f}{r['steady']:>7.0f}"
              f"{r['per']:>11.2f}{pct['cpu']:>6}{r['maxrss'] / 2**20:>10.0f}{r['tree'] / 2**20:>8.0f}"
              f"{pct['srv_cpu']:>6}{pct['others']:>7}{r['requests']:>6}{avg:>12.0f} / {r['peak']:<5}")
        if "note" in r:
            print(f"{'':<20}{r['note']} (img/s: candidates/s; CPU per candidate; steady: the 404 half only)")
    if busy := [r["name"] for r in results if r["others"] > 0.2 * r["wall"]]:
        print(f"warning: other processes used the CPU during {', '.join(busy)}: the rates there are low")
    if "ours (imagenet)" in by and "ours, no health" in by:
        x, y = by["ours (imagenet)"], by["ours, no health"]
        print(f"live URLs, host health on / off: images/s x{x['rate'] / y['rate']:.2f}, "
              f"CPU per image x{x['per'] / y['per']:.2f}")
    if "ours, dead URLs" in by and "ours, dead, no health" in by:
        x, y = by["ours, dead URLs"], by["ours, dead, no health"]
        print(f"dead URLs, host health on / off: candidates/s x{x['rate'] / y['rate']:.2f}, "
              f"CPU per candidate x{x['per'] / y['per']:.2f}")
    for a, b in (("ours (imagenet)", "stock FilesPipeline"), ("ours (imagenet)", "img2dataset")):
        if a in by and b in by:
            x, y = by[a], by[b]
            print(f"{a} / {b}: images/s x{x['rate'] / y['rate']:.2f} (steady x{x['steady'] / y['steady']:.2f}), "
                  f"CPU per image x{x['per'] / y['per']:.2f}")


if __name__ == "__main__":
    main()
