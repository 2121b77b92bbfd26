"""Offline HTTP emulators (ISIC API v2, legacy v1 Girder, S3-like image host) for tests."""

from . import images
from .behaviours import BEHAVIOURS, serve_with_behaviour
from .cursor import Cursor, decode_cursor, encode_cursor
from .isic import (
    LICENSES,
    PAGE_MODES,
    FakeImage,
    FakeSegmentation,
    ImageHost,
    IsicV1Server,
    IsicV2Server,
    QueryError,
    make_archive,
    parse_query,
)
from .server import EmulatorServer, HttpError, Request

__all__ = [
    "BEHAVIOURS",
    "LICENSES",
    "PAGE_MODES",
    "Cursor",
    "EmulatorServer",
    "FakeImage",
    "FakeSegmentation",
    "HttpError",
    "ImageHost",
    "IsicV1Server",
    "IsicV2Server",
    "QueryError",
    "Request",
    "decode_cursor",
    "encode_cursor",
    "images",
    "make_archive",
    "parse_query",
    "serve_with_behaviour",
]
