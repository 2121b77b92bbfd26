"""The dataset core: the state of one crawl's dataset (see ``dataset.py``)."""

from .dataset import DatasetCore

__all__ = ["DatasetCore"]
