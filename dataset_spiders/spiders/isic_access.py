"""What an ISIC run may see and ask for: the API token for private images, and which file of a
record it fetches (``image_size``).

The token (``ISIC_TOKEN`` in the environment, preferred: arguments show in process lists and
shell history; else ``-a token=…`` or the setting) goes as ``Authorization: Bearer …`` to the
API's own origin only: never to image hosts (signed URLs need none), never to another host a
page links to, and never into the log, dataset.json, the manifest or the report.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .isic import IsicSpider

def resolve_token(argument: str | None, settings: Any) -> str | None:
    """The token to use: the argument, else the setting, else ``$ISIC_TOKEN``; None when none."""
    for value in (argument, settings.get("ISIC_TOKEN"), os.environ.get("ISIC_TOKEN")):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def headers_for(url: str, api_url: str, token: str | None) -> dict[str, str]:
    """The bearer header, for a URL of the API's own origin (scheme, host and port) only."""
    if token and origin(url) == origin(api_url):
        return {"Authorization": f"Bearer {token}"}
    return {}


def refused(status: int, token: str | None, what: str) -> str:
    """The one line for a 401/403 from the API."""
    if token:
        return (f"the ISIC API refused the token for {what} (HTTP {status}): it has expired or lacks access; "
                "get a new one (docs/isic.md: Private images) or unset ISIC_TOKEN")
    return (f"the ISIC API answered HTTP {status} for {what}: it needs a login; set ISIC_TOKEN to an API token "
            "(docs/isic.md: Private images)")


def size_problem(spider: IsicSpider) -> str | None:
    """Why this run may not fetch ``image_size``: v1 has no thumbnails. (The two sizes never mix
    in one folder: ``image_size`` is part of the selection, ``dataset/selection.py``.)"""
    p = spider.params
    if p.image_size != "full" and p.api_version == 1:
        return "image_size: the v1 API serves no thumbnails; use api_version=2 or image_size=full"
    return None
