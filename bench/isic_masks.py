"""What a v2 masks run costs in bytes, against downloading the mask archives whole.

Serves an archive shaped like ISIC2018_Task1_Training_GroundTruth.zip (2,594 members, the same
names, 8-bit masks of the images' size) from the local S3-like host, runs
``scrapy crawl isic -a segmentation=true -a masks_required=true -a num_images=N`` against the
v2 emulator, and prints the bytes the archive host sent (its tail, its central directory and
the N members) next to the archive's size; then the same run again with the directory cached.

    .venv/bin/python bench/isic_masks.py --n 100
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import crawl
from tests.emulators import FakeImage, ImageHost, IsicV2Server, images
from tests.emulators.challenge_archives import LAYOUT_2018, ChallengeArchives, make_zip

MEMBERS = 2594  # the 2018 Task 1 training set
SIZE = (600, 450)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100, help="images (with their masks) to download")
    args = parser.parse_args()
    masks = {f"ISIC_{i:07d}": images.mask_png(*SIZE, seed=i) for i in range(MEMBERS)}
    blob = make_zip((LAYOUT_2018.format(isic_id=i), m, zipfile.ZIP_DEFLATED) for i, m in masks.items())
    records = [FakeImage(f"ISIC_{i:07d}", body=images.jpeg(*SIZE, seed=i)) for i in range(args.n * 2)]
    path = "2018/ISIC2018_Task1_Training_GroundTruth.zip"
    with tempfile.TemporaryDirectory() as tmp, ImageHost(records) as host, \
            IsicV2Server(records, host) as api, ChallengeArchives({path: blob}) as bucket:
        settings = {"ISIC_MASK_ARCHIVES": bucket.url_of(path)}
        out, argv = Path(tmp) / "Data", (f"api_url={api.url}/api/v2", "segmentation=true", "masks_required=true")
        run = crawl("isic", out, *argv, f"num_images={args.n}", settings=settings, timeout=600)
        first, requests = bucket.bytes_sent(), len(bucket.log)
        bucket.clear_log()
        bucket.sent.clear()
        more = crawl("isic", out, *argv, f"num_images={2 * args.n}", settings=settings, timeout=600)
        assert run.code == 0 and more.code == 0, run.stderr + more.stderr
    member_bytes = sum(len(masks[f"ISIC_{i:07d}"]) for i in range(args.n))
    print(f"archive: {MEMBERS} members, {len(blob):,} bytes; the {args.n} masks: {member_bytes:,} bytes compressed")
    print(f"first run, {args.n} images and masks: {first:,} bytes in {requests} requests "
          f"({first / len(blob):.1%} of the archive)")
    print(f"the same dataset grown to {2 * args.n} (directory cached): {bucket.bytes_sent():,} bytes in "
          f"{len(bucket.log)} requests")

if __name__ == "__main__":
    main()
