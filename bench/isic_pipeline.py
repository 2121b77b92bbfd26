"""Throughput of our image pipelines against Scrapy's stock ImagesPipeline, same URLs, same run.

Serves N distinct 640x480 JPEGs (noise, about 270 KB each) from the
local ISIC emulators, then runs `scrapy crawl isic` alternately with
  - stock: Scrapy's ImagesPipeline (re-encodes every image; decodes on the reactor thread)
  - ours:  our pipelines (bytes kept as served; hashing and a full decode in worker threads;
           staging and an atomic rename; descriptions; the manifest)
and prints images per second from Scrapy's own `elapsed_time_seconds`, the ratio ours/stock,
and whether the stored bytes equal the served ones. (Scrapy's `memusage/max` is no use here: a
child process inherits its parent's peak RSS, and the parent holds the served images.)

    .venv/bin/python bench/isic_pipeline.py [N] [ROUNDS]
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.emulators import FakeImage, ImageHost, IsicV2Server, images  # noqa: E402

STOCK = {
    "scrapy.pipelines.images.ImagesPipeline": 100,
    "dataset_spiders.pipelines.record.RecordOutcomesPipeline": 900,  # frees the quota slots
}


def run(api_url: str, out: Path, pipelines: dict | None) -> dict:
    cmd = [sys.executable, "-m", "scrapy", "crawl", "isic", "-a", f"api_url={api_url}", "-a", f"out_dir={out}",
           "-s", "CONCURRENT_REQUESTS=32", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=32", "-s", "DATASET_MAX_IN_FLIGHT=64"]
    if pipelines:
        cmd += ["-s", f"ITEM_PIPELINES={json.dumps(pipelines)}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    elapsed = float(re.search(r"'elapsed_time_seconds': ([0-9.]+)", proc.stderr).group(1))
    return {"elapsed": elapsed}


def main(n: int = 400, rounds: int = 3) -> None:
    records = [FakeImage(f"ISIC_{i:07d}", body=images.jpeg(640, 480, seed=i)) for i in range(n)]
    served = {r.isic_id: r.body for r in records}
    results: dict[str, list[dict]] = {"stock": [], "ours": []}
    with ImageHost(records) as host, IsicV2Server(records, host) as api, tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            for mode in ("stock", "ours"):
                out = Path(tmp) / f"{mode}{i}"
                results[mode].append(run(f"{api.url}/api/v2", out, STOCK if mode == "stock" else None))
                if mode == "ours":
                    files = {p.stem: p.read_bytes() for p in (out / "Images").iterdir()}
                    assert files == served, "ours did not store the served bytes"
                else:
                    stored = list((out / "full").iterdir())
                    assert len(stored) == n
                    identical = sum(p.read_bytes() in served.values() for p in stored)
    rate = {m: statistics.median(n / r["elapsed"] for r in rs) for m, rs in results.items()}
    size = sum(map(len, served.values())) / n / 1024
    print(f"{n} JPEGs of 640x480 ({size:.0f} KB each), {rounds} rounds, median of Scrapy's elapsed_time_seconds")
    print(f"stock ImagesPipeline: {rate['stock']:6.1f} img/s, {identical}/{n} files byte-identical to what was served")
    print(f"our pipelines:        {rate['ours']:6.1f} img/s, {n}/{n} byte-identical")
    print(f"ratio ours/stock: {rate['ours'] / rate['stock']:.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
