"""ISIC emulators: fake records, the S3-like image host, API v2 and legacy v1.

Facade module; the implementation lives in ``isic_data``, ``isic_host``,
``isic_dsl``, ``isic_v2`` and ``isic_v1``.
"""

from .isic_data import FakeImage, FakeSegmentation, make_archive
from .isic_dsl import QueryError, parse_query
from .isic_host import ImageHost
from .isic_v1 import IsicV1Server
from .isic_v2 import LICENSES, PAGE_MODES, IsicV2Server

__all__ = [
    "LICENSES",
    "PAGE_MODES",
    "FakeImage",
    "FakeSegmentation",
    "ImageHost",
    "IsicV1Server",
    "IsicV2Server",
    "QueryError",
    "make_archive",
    "parse_query",
]
