"""Per-resource failure behaviours for download endpoints (shared by all emulators)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .server import Request

ErrorRenderer = Callable[[Request, int, Mapping[str, str]], None]

BEHAVIOURS = ("ok", "404", "410", "500", "500_once", "429_once", "html", "truncated", "hang", "reset")
"""``ok``; ``404``/``410``/``500`` (always); ``500_once``/``429_once`` (first request for
the path fails, 429 with ``Retry-After: 1``); ``html`` (200 text/html); ``truncated``
(Content-Length larger than the bytes sent, then close); ``hang`` (nothing for
``server.hang_seconds``, then close); ``reset`` (TCP RST, no response)."""


def serve_with_behaviour(
    req: Request,
    behaviour: str,
    body: bytes,
    content_type: str,
    headers: Mapping[str, str] | None = None,
    error: ErrorRenderer | None = None,
) -> None:
    """Answer a download request according to ``behaviour`` (see ``BEHAVIOURS``).

    ``*_once`` behaviours fail only on the first request for this path.
    ``error(req, status, extra_headers)`` renders error statuses in the emulated
    service's style (default: plain text).
    """

    def fail(status: int, extra: Mapping[str, str] | None = None) -> None:
        if error is not None:
            error(req, status, extra or {})
        else:
            req.send(status, f"HTTP {status}".encode(), "text/plain", extra)

    if behaviour in ("404", "410", "500"):
        fail(int(behaviour))
    elif behaviour == "500_once" and req.attempt == 1:
        fail(500)
    elif behaviour == "429_once" and req.attempt == 1:
        fail(429, {"Retry-After": "1"})
    elif behaviour == "html":
        req.send_html()
    elif behaviour == "truncated":
        req.send_truncated(body, content_type)
    elif behaviour == "hang":
        req.hang()
    elif behaviour == "reset":
        req.reset()
    elif behaviour in ("ok", "500_once", "429_once"):
        req.send(200, body, content_type, headers)
    else:
        raise ValueError(f"unknown behaviour {behaviour!r}")
