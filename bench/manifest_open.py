"""Start-up cost of a big dataset: opening a 1,000,000-line manifest, scanning a 14,000,000-line URL list.

1. Writes manifest.jsonl with LINES `kept` lines (1000 ILSVRC classes, ids `<wnid>_<n>`, path, bytes,
   sha256, width, height, pixels, group, label, url), then in a fresh subprocess times, against the
   baseline of parsing every line with orjson in the same process: `core.earlier.load` as every crawl
   opens it (the index), and again as `imagenet` does (the placeholder learner and the duplicate index
   fed from every image's last line), and the peak RSS.
2. Writes a fall11-style URL list (`<wnid>_<n>` TAB URL, 21,841 classes in wnid order, ~60% Flickr hosts,
   ~85 bytes a line, like fall11_urls.txt) and times, in a fresh subprocess each,
   `scan_url_file` for 3 classes (flickr_only=true: what `-a urls_file=... -a wnids=...` does) and
   `count_url_file` (what `-a num_classes=...` does first). Warm page cache: the file was just written or read.

Both files are made once and kept in the cache folder. If the disk lacks room for the URL list, a smaller
one is written and the times are extrapolated linearly (the script says so).

    .venv/bin/python bench/manifest_open.py [--lines 1000000] [--url-lines 14000000] [--project DIR] [--cache DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
URL_LINE_BYTES = 86  # fall11_urls.txt: about 1.2 GB for 14.2 million lines
FALL11_CLASSES = 21_841

CHILD_MANIFEST = """
import json, resource, sys, time
import orjson
sys.path.insert(0, sys.argv[1])
from dataset_spiders.dataset import earlier
from dataset_spiders.dataset.disk import DatasetDisk
from dataset_spiders.dataset.identity import PlaceholderLearner, SeenImages
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base = rss()
t0 = time.perf_counter()
with open(sys.argv[2] + "/manifest.jsonl", "rb") as f:  # the baseline: parsing every line, nothing kept
    for line in f:
        orjson.loads(line)
t1 = time.perf_counter()
disk = DatasetDisk(sys.argv[2], [sys.argv[2] + "/ImageNet"])
found = earlier.load(disk, PlaceholderLearner(0), None)  # what every crawl does: the index
t2 = time.perf_counter()
after_load = rss()
learner, seen = PlaceholderLearner(3), SeenImages()
full = earlier.load(disk, learner, seen)  # imagenet: also duplicates and learned placeholders
t3 = time.perf_counter()
print(json.dumps({"entries": len(found.index), "parse": t1 - t0, "load": t2 - t1, "scan": t3 - t2, "base": base,
                  "after_load": after_load, "peak": rss(), "withdraw": len(full.withdraw),
                  "known": len(seen.by_bytes)}))
"""

CHILD_URLS = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from dataset_spiders.sources import imagenet
domains = ["flickr.com", "staticflickr.com"]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.perf_counter()
if sys.argv[3] == "scan":
    found = imagenet.scan_url_file(sys.argv[2], sys.argv[4].split(","), domains)
    what = {w: len(c) for w, c in found.items()}
else:
    counts = imagenet.count_url_file(sys.argv[2], domains)
    what = {"classes": len(counts), "urls": sum(counts.values())}
print(json.dumps({"seconds": time.perf_counter() - t0, "base": base, "what": what,
                  "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def wnids_and_labels(project: Path) -> list[tuple[str, str]]:
    sys.path.insert(0, str(project))
    from dataset_spiders.sources.imagenet import ilsvrc1000

    return ilsvrc1000()


def write_manifest(path: Path, lines: int, classes: list[tuple[str, str]]) -> None:
    per = -(-lines // len(classes))
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    with open(path.with_suffix(".tmp"), "w", encoding="utf-8") as f:
        for i in range(lines):
            wnid, label = classes[i // per]
            image_id = f"{wnid}_{i % per + 1}"
            digest = hashlib.sha256(image_id.encode()).hexdigest()
            photo = (i * 2654435761) % 10**10
            url = f"http://farm{1 + i % 8}.staticflickr.com/{1000 + i % 8999}/{photo}_{digest[:10]}.jpg"
            f.write(json.dumps({
                "id": image_id, "kind": "image", "group": wnid, "label": label, "url": url, "final_url": url,
                "outcome": "kept", "detail": None, "path": f"Images/{wnid}/{image_id}.jpg",
                "bytes": 40_000 + (i * 7919) % 200_000, "sha256": digest, "width": 500, "height": 375,
                "pixels": hashlib.sha256(digest.encode()).hexdigest(), "time": round(now + i / 1000, 3),
            }, ensure_ascii=False) + "\n")
    path.with_suffix(".tmp").replace(path)


def write_url_list(path: Path, lines: int) -> list[str]:
    """fall11-style lines; returns 3 wnids found 10%, 50% and 90% of the way through."""
    wnids = [f"n{1_440_764 + k * 457:08d}" for k in range(FALL11_CLASSES)]
    per = -(-lines // FALL11_CLASSES)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="ascii") as f:
        for k, wnid in enumerate(wnids):
            first = k * per
            block = []
            for n in range(1, min(per, lines - first) + 1):
                i = first + n
                photo, secret = (i * 2654435761) % 10**10, (i * 0x9E3779B1) & 0xFFFFFFFFFF
                if i % 5 < 3:
                    url = f"http://farm{1 + i % 4}.static.flickr.com/{1000 + i % 8999}/{photo}_{secret:010x}.jpg"
                else:
                    url = f"http://www.site{i % 9973}.com/images/gallery/{wnid[1:]}/{photo}_{i % 97}.jpg"
                block.append(f"{wnid}_{n}\t{url}\n")
            f.write("".join(block))
            if first + per >= lines:
                break
    tmp.replace(path)
    used = min(FALL11_CLASSES, -(-lines // per))
    return [wnids[int(used * q)] for q in (0.1, 0.5, 0.9)]


def child(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--url-lines", type=int, default=14_000_000)
    ap.add_argument("--project", type=Path, default=HERE.parent)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                    / "dataset-spiders-bench")
    args = ap.parse_args()
    project, mb = str(args.project.resolve()), 2**20

    root = args.cache / f"manifest-{args.lines}"
    manifest = root / "manifest.jsonl"
    if not manifest.exists():
        print(f"writing {args.lines:,} manifest lines to {manifest} (once)...", file=sys.stderr, flush=True)
        write_manifest(manifest, args.lines, wnids_and_labels(args.project))
    r = child(CHILD_MANIFEST, project, str(root))
    print(f"manifest: {args.lines:,} lines, {manifest.stat().st_size / mb:,.0f} MB; {r['entries']:,} entries")
    print(f"  parse every line (orjson, the baseline): {r['parse']:6.2f} s")
    print(f"  open (the index, every crawl): {r['load']:6.2f} s = x{r['load'] / r['parse']:.2f} the baseline; "
          f"peak RSS {r['after_load'] / mb:.0f} MB (+{(r['after_load'] - r['base']) / mb:.0f} MB over "
          f"{r['base'] / mb:.0f} MB after imports)")
    print(f"  open with duplicates and placeholder learning (imagenet): {r['scan']:6.2f} s "
          f"= x{r['scan'] / r['parse']:.2f}; peak RSS {r['peak'] / mb:.0f} MB; {r['known']:,} images indexed")

    lines, target = args.url_lines, args.url_lines
    args.cache.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.cache).free
    if free < 3 * lines * URL_LINE_BYTES:
        lines = max(100_000, free // (3 * URL_LINE_BYTES) // 100_000 * 100_000)
        print(f"(only {free / 2**30:.1f} GB free: a {lines:,}-line list, times extrapolated to {target:,} lines)")
    urls = args.cache / f"fall11-style-{lines}.txt"
    wanted_file = urls.with_suffix(".wnids")
    if not urls.exists() or not wanted_file.exists():
        print(f"writing a {lines:,}-line URL list to {urls} (once)...", file=sys.stderr, flush=True)
        wanted_file.write_text(",".join(write_url_list(urls, lines)))
    wanted = wanted_file.read_text()
    scale = target / lines
    size = urls.stat().st_size
    print(f"URL list: {lines:,} lines, {size / mb:,.0f} MB" + (f" (x{scale:.1f} extrapolated)" if scale != 1 else ""))
    for mode, what in (("scan", f"scan_url_file, 3 classes ({wanted})"), ("count", "count_url_file, every class")):
        r = child(CHILD_URLS, project, str(urls), mode, wanted)
        print(f"  {what}: {r['seconds'] * scale:6.2f} s ({size / mb / r['seconds']:.0f} MB/s), "
              f"peak RSS {r['peak'] / mb:.0f} MB (+{(r['peak'] - r['base']) / mb:.0f} MB); {r['what']}")


if __name__ == "__main__":
    main()
