"""Offline HTTP emulators (ISIC API v2, legacy v1 Girder, S3-like image host) for tests."""

from . import images
from .behaviours import BEHAVIOURS, serve_with_behaviour
from .cursor import Cursor, decode_cursor, encode_cursor
from .imagenet import (
    PLACEHOLDER_URL,
    FakePhoto,
    GeturlsServer,
    PhotoHosts,
    make_classes,
    placeholder_png,
    unknown_placeholder,
)
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
    "PLACEHOLDER_URL",
    "Cursor",
    "EmulatorServer",
    "FakeImage",
    "FakePhoto",
    "FakeSegmentation",
    "GeturlsServer",
    "HttpError",
    "ImageHost",
    "IsicV1Server",
    "IsicV2Server",
    "PhotoHosts",
    "QueryError",
    "Request",
    "decode_cursor",
    "encode_cursor",
    "images",
    "make_archive",
    "make_classes",
    "parse_query",
    "placeholder_png",
    "serve_with_behaviour",
    "unknown_placeholder",
]
