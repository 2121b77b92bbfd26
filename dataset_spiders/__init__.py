"""dataset-spiders: clean, verified image datasets from the ISIC Archive and ImageNet URL lists.

From Python: ``from dataset_spiders import download_isic, download_imagenet`` (``api.py``).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["DownloadError", "Summary", "download_imagenet", "download_isic"]


def __getattr__(name: str) -> Any:
    """The Python API, imported on first use: ``import dataset_spiders`` (every crawl does) stays light."""
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(name)
