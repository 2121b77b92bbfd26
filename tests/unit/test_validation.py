"""dataset/validation.py judges images by our pixel limit, not Pillow's process-wide one, and
importing the package changes nothing in the process that imports it."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings

import pytest
from PIL import Image

from dataset_spiders.dataset.validation import Limits, inspect_image
from dataset_spiders.outcomes import ImageRejected, Outcome


def _blank_png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, "PNG")
    return out.getvalue()


def test_our_pixel_limit_decides_and_pillows_is_left_as_it_was() -> None:
    big = _blank_png(15_000, 15_000)  # 225 megapixels: over twice Pillow's default, which refuses it
    pillow_limit = Image.MAX_IMAGE_PIXELS
    assert pillow_limit is not None and 2 * pillow_limit < 15_000 * 15_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a DecompressionBombWarning
        decoded = inspect_image(big, Limits(max_pixels=300_000_000))
        assert (decoded.width, decoded.height, decoded.format) == (15_000, 15_000, "PNG")
        with pytest.raises(ImageRejected) as refused:
            inspect_image(_blank_png(10_000, 10_000), Limits(max_pixels=50_000_000))
    assert refused.value.outcome == Outcome.TOO_LARGE and "10000x10000" in refused.value.detail
    assert pillow_limit == Image.MAX_IMAGE_PIXELS
    with pytest.raises(Image.DecompressionBombError):  # anyone else's open still has Pillow's guard
        Image.open(io.BytesIO(big))


def test_importing_every_module_installs_nothing() -> None:
    """No patch or filter at import time: Pillow's limits, Twisted's connection attempts and the
    loggers are what they were before the import (the stages set what they need when made)."""
    probe = """
import importlib, logging, pkgutil
from PIL import Image, ImageFile
from twisted.internet.endpoints import HostnameEndpoint
import dataset_spiders

def state():
    loggers = {n: [type(f).__name__ for f in l.filters] for n, l in logging.root.manager.loggerDict.items()
               if isinstance(l, logging.Logger)}
    return (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, HostnameEndpoint._DEFAULT_ATTEMPT_DELAY,
            [type(f).__name__ for f in logging.root.filters], {n: f for n, f in loggers.items() if f})

before = state()
names = [m.name for m in pkgutil.walk_packages(dataset_spiders.__path__, "dataset_spiders.")
         if not m.name.endswith(".__main__")]  # runs the command
for name in names:
    importlib.import_module(name)
after = state()
assert len(names) > 50, names
assert before == after, (before, after)
print("unchanged", len(names))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("unchanged")
