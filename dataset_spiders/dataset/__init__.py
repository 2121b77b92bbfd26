"""The dataset core: the state of one crawl's dataset (see ``dataset.py``)."""

from .core import DatasetCore

__all__ = ["DatasetCore"]
