"""Reusable in-process HTTP emulator base: routing, request log, failure modes.

An :class:`EmulatorServer` runs a ``ThreadingHTTPServer`` on ``127.0.0.1`` (or its
``bind_address``) with an ephemeral port in a background thread.  Subclasses register routes with
:meth:`EmulatorServer.route`; handlers receive a :class:`Request` that can send
JSON/bytes or simulate failures (truncated body, hang, connection reset, ...).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import socketserver
import struct
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

Handler = Callable[["Request"], None]


class HttpError(Exception):
    """Raise from a handler to answer ``status`` with a JSON ``payload``."""

    def __init__(self, status: int, payload: Any) -> None:
        super().__init__(status, payload)
        self.status = status
        self.payload = payload


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True
    emulator: EmulatorServer

    def server_bind(self) -> None:
        # Skip HTTPServer's getfqdn() reverse lookup, which can be slow.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def shutdown_request(self, request: Any) -> None:
        if request in self.emulator._reset_socks:
            self.emulator._reset_socks.discard(request)
            request.close()  # SO_LINGER 0 -> RST instead of FIN
            return
        super().shutdown_request(request)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.emulator._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emulator._track(self.connection, add=False)

    def _dispatch(self) -> None:
        self.server.emulator._dispatch(self)

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""


class Request:
    """One received request plus helpers to answer it (or fail on purpose)."""

    def __init__(self, server: EmulatorServer, handler: _RequestHandler, match: re.Match[str]) -> None:
        self.server = server
        self.handler = handler
        self.match = match
        self.method = handler.command
        split = urlsplit(handler.path)
        self.path = split.path
        self.raw_query = split.query
        self.query: dict[str, list[str]] = parse_qs(split.query, keep_blank_values=True)
        self.headers = handler.headers
        length = int(handler.headers.get("Content-Length") or 0)
        self.body = handler.rfile.read(length) if length else b""
        self.attempt = server._hit(self.path)  # 1 on the first request for this path

    # -- request accessors -------------------------------------------------
    def arg(self, name: str, default: str | None = None) -> str | None:
        """First value of query parameter ``name`` (``default`` if absent)."""
        values = self.query.get(name)
        return values[0] if values else default

    @property
    def base_url(self) -> str:
        """``http://host:port`` as the client addressed us (Host header)."""
        return f"http://{self.headers.get('Host') or self.server.url.split('://', 1)[1]}"

    # -- normal responses --------------------------------------------------
    def send(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        """Send a complete response with Content-Length."""
        h = self.handler
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(body)

    def send_json(self, obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self.send(status, json.dumps(obj).encode(), "application/json", headers)

    def send_text(self, text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send(status, text.encode(), content_type)

    def send_html(self, html: str | None = None, status: int = 200) -> None:
        """An HTML page (e.g. a captive portal or error page) where data was expected."""
        html = html or "<!DOCTYPE html><html><head><title>Error</title></head><body><h1>Oops</h1></body></html>"
        self.send(status, html.encode(), "text/html; charset=utf-8")

    def send_redirect(self, location: str, status: int = 302) -> None:
        self.send(status, b"", "text/plain", {"Location": location})

    def send_retry_after(self, status: int = 429, seconds: int = 1, body: bytes = b"Too Many Requests") -> None:
        self.send(status, body, "text/plain", {"Retry-After": str(seconds)})

    # -- failure modes -----------------------------------------------------
    def send_truncated(self, body: bytes, content_type: str, fraction: float = 0.6) -> None:
        """Declare ``len(body)`` as Content-Length, send only ``fraction`` of it, then close."""
        h = self.handler
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body[: int(len(body) * fraction)])
        h.wfile.flush()
        self._close()

    def hang(self, seconds: float | None = None) -> None:
        """Send nothing for ``seconds`` (default ``server.hang_seconds``), then close."""
        self.server._stopping.wait(self.server.hang_seconds if seconds is None else seconds)
        self._close()

    def reset(self) -> None:
        """Drop the connection without any response (TCP RST)."""
        self.handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.server._reset_socks.add(self.handler.connection)
        self.handler.close_connection = True

    def _close(self) -> None:
        self.handler.close_connection = True
        with contextlib.suppress(OSError):
            self.handler.connection.shutdown(socket.SHUT_RDWR)


class EmulatorServer:
    """Threaded HTTP server on 127.0.0.1:<ephemeral>; use as a context manager."""

    def __init__(self) -> None:
        self.hang_seconds: float = 30.0
        self.errors: list[str] = []  # tracebacks of handler exceptions
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._lock = threading.Lock()
        self._log: list[tuple[str, str]] = []
        self.times: list[tuple[float, str]] = []  # (time.monotonic(), path) of every request, in order
        self._headers: list[tuple[str, dict[str, str]]] = []  # (path_with_query, lower-cased headers)
        self._hits: Counter[str] = Counter()
        self._conns: set[socket.socket] = set()
        self._reset_socks: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        # where start() listens; subclasses may bind another loopback address (127.0.0.2, ...),
        # so the crawler sees another host, or a fixed port, to come back on the same one
        self.bind_address: tuple[str, int] = ("127.0.0.1", 0)

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> Self:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _HTTPServer(self.bind_address, _RequestHandler)
        self._httpd.emulator = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name=type(self).__name__, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()  # wakes handlers in hang()
        self._httpd.shutdown()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:43121`` (server must be started)."""
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- request log -------------------------------------------------------
    @property
    def log(self) -> list[tuple[str, str]]:
        """Snapshot of ``(method, path_with_query)`` for every request received."""
        with self._lock:
            return list(self._log)

    def requests_for(self, prefix: str) -> list[str]:
        """Paths (with query) of logged requests whose path starts with ``prefix``."""
        return [p for _, p in self.log if p.startswith(prefix)]

    def headers_for(self, prefix: str) -> list[dict[str, str]]:
        """Request headers (names lower-cased) of logged requests whose path starts with ``prefix``."""
        with self._lock:
            return [dict(h) for p, h in self._headers if urlsplit(p).path.startswith(prefix)]

    def hits(self, path: str) -> int:
        """Number of requests received for ``path`` (query string ignored)."""
        with self._lock:
            return self._hits[path]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()
            self._headers.clear()
            self._hits.clear()

    # -- routing -----------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Register ``handler`` for ``method`` and a full-match regex on the path."""
        self._routes.append((method.upper(), re.compile(pattern), handler))

    def not_found(self, req: Request) -> None:
        """Fallback for unmatched paths; subclasses may override."""
        req.send_json({"detail": "Not Found"}, 404)

    def _dispatch(self, handler: _RequestHandler) -> None:
        with self._lock:
            self._log.append((handler.command, handler.path))
            self.times.append((time.monotonic(), handler.path))
            self._headers.append((handler.path, {k.lower(): v for k, v in handler.headers.items()}))
        path = urlsplit(handler.path).path
        func, match = self.not_found, re.compile("").match("")
        for method, pattern, route_func in self._routes:
            found = pattern.fullmatch(path)
            if found and method == handler.command:
                func, match = route_func, found
                break
        req = Request(self, handler, match)
        try:
            func(req)
        except HttpError as exc:
            req.send_json(exc.payload, exc.status)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True
        except Exception:  # report any handler bug as HTTP 500
            self.errors.append(traceback.format_exc())
            handler.close_connection = True
            req.send_text("emulator handler crashed", 500)

    def _hit(self, path: str) -> int:
        with self._lock:
            self._hits[path] += 1
            return self._hits[path]

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)
