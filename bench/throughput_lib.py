"""Helpers of bench/throughput.py: the photo bodies (cached on disk), a lean photo server, the stock spider.

    python bench/throughput_lib.py serve PACK LATENCY   # prints {"port": P}, serves until stdin closes
    python bench/throughput_lib.py stock URLS OUT_DIR   # Scrapy's stock FilesPipeline, settings given here

The server is HTTP-proxy style like tests/emulators/imagenet.py's PhotoHosts (clients set http_proxy to it,
so URLs keep their real host names), but single-threaded asyncio with the bodies precomputed: PhotoHosts
is a ThreadingHTTPServer (a thread per connection, sleeping out each delay, contending for the GIL, every
URL logged under a lock), which would take more of the 2 cores the clients are measured on.
``GET .../<i>_<hex>.jpg`` answers body i after the latency; anything else 404 after the same latency;
``GET /_stats`` (direct, no latency) the counts since the last ``GET /_reset``, with the times of the
first request and the last answer.
"""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import random
import re
import sys
import time
from pathlib import Path

WIDTH, HEIGHT, QUALITY, COARSE = 500, 375, 85, 4  # bicubic-upscaled noise: ~75 KB at quality 85
PHOTO = re.compile(rb"/[0-9]+/([0-9]+)_[0-9a-f]+\.jpg$")


# -- bodies --------------------------------------------------------------------------------------
def jpeg(seed: int) -> bytes:
    from PIL import Image

    rng = random.Random(f"bench:{seed}")
    w, h = WIDTH // COARSE, HEIGHT // COARSE
    img = Image.frombytes("RGB", (w, h), rng.randbytes(w * h * 3)).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()


def ensure_pack(n: int, cache: Path) -> Path:
    """N distinct JPEGs in one file (lengths in ``.json`` beside it), made once per parameters."""
    made = {int(p.name.split("-")[1]): p for p in cache.glob(f"jpegs-*-{WIDTH}x{HEIGHT}-q{QUALITY}-c{COARSE}.bin")
            if p.with_suffix(".json").exists()}
    if fits := [count for count in made if count >= n]:
        return made[min(fits)]  # a larger pack serves too: URLs name bodies 0..n-1
    pack = cache / f"jpegs-{n}-{WIDTH}x{HEIGHT}-q{QUALITY}-c{COARSE}.bin"
    cache.mkdir(parents=True, exist_ok=True)
    print(f"generating {n} JPEGs into {pack} (once)...", file=sys.stderr, flush=True)
    with multiprocessing.get_context("spawn").Pool() as pool:
        bodies = pool.map(jpeg, range(n), chunksize=64)
    tmp = pack.with_suffix(".tmp")
    tmp.write_bytes(b"".join(bodies))
    pack.with_suffix(".json").write_text(json.dumps([len(b) for b in bodies]))
    tmp.replace(pack)
    return pack


def load_pack(pack: Path) -> list[bytes]:
    data, out, at = pack.read_bytes(), [], 0
    for size in json.loads(pack.with_suffix(".json").read_text()):
        out.append(data[at : at + size])
        at += size
    return out


# -- the server ----------------------------------------------------------------------------------
async def serve(pack: Path, latency: float) -> None:
    bodies = load_pack(pack)
    heads = [b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n" % len(b) for b in bodies]
    missing = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n"
    fresh = {"200": 0, "404": 0, "bytes": 0, "connections": 0, "now": 0, "peak": 0, "first": 0.0, "last": 0.0}
    stats = dict(fresh)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, _, headers = head.partition(b"\r\n")
                target, version = line.split(b" ")[1:3]
                close = version == b"HTTP/1.0" or b"connection: close" in headers.lower()
                tail = b"Connection: close\r\n\r\n" if close else b"\r\n"
                if target in (b"/_stats", b"/_reset"):
                    body = json.dumps(stats).encode()
                    if target == b"/_reset":
                        stats.update(fresh, now=stats["now"])
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s%s" % (len(body), tail, body))
                    await writer.drain()
                else:
                    stats["first"] = stats["first"] or time.time()
                    stats["now"] += 1
                    stats["peak"] = max(stats["peak"], stats["now"])
                    await asyncio.sleep(latency)
                    stats["now"] -= 1
                    found = PHOTO.search(target.split(b"?", 1)[0])
                    index = int(found[1]) if found else len(bodies)
                    if index < len(bodies):
                        stats["200"] += 1
                        stats["bytes"] += len(bodies[index])
                        writer.writelines((heads[index], tail, bodies[index]))
                    else:
                        stats["404"] += 1
                        writer.writelines((missing, tail, b"Not Found"))
                    await writer.drain()
                    stats["last"] = time.time()
                if close:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # the bench closes our stdin to stop us
    server.close()


# -- the stock spider ----------------------------------------------------------------------------
def stock(urls_file: str, out_dir: str) -> None:
    """A plain spider with Scrapy's FilesPipeline; every setting given here (no project, no scrapy.cfg)."""
    import scrapy
    from scrapy.crawler import CrawlerProcess

    class StockSpider(scrapy.Spider):
        name = "stock"

        async def start(self):  # type: ignore[override]
            with open(urls_file, encoding="utf-8") as f:
                for line in f:
                    yield {"file_urls": [line.rstrip("\n").split("\t")[-1]]}

    process = CrawlerProcess(settings={
        "ITEM_PIPELINES": {"scrapy.pipelines.files.FilesPipeline": 1},
        "FILES_STORE": out_dir,
        "CONCURRENT_REQUESTS": 128,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 128,
        "DOWNLOAD_TIMEOUT": 15,
        "ROBOTSTXT_OBEY": False,
        "TELNETCONSOLE_ENABLED": False,
        "REMOTE_CONTROL_ENABLED": False,
        "LOG_LEVEL": "INFO",
    })
    process.crawl(StockSpider)
    process.start()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(serve(Path(sys.argv[2]), float(sys.argv[3])))
    elif sys.argv[1] == "stock":
        stock(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {sys.argv[1]!r}")
