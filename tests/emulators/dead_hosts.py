"""Dead and dying image hosts, real network peers on loopback, for issue 17 ("dead hosts cost one
timeout, not one per URL").

Each peer listens on a loopback address of its own (127.0.0.2, 127.0.0.3, ...: Linux answers on all
of 127/8), so the crawler sees a distinct host: host health is kept per (scheme, host, port), and
Scrapy's per-domain slots are keyed by host name alone, port left out, so a shared 127.0.0.1 would put
the dead and the good hosts into one slot. Every peer is a context manager (``with BlackHole() as h:
h.url_for("/1.jpg")``) running in threads of this process, as the other emulators do.

    BlackHole       accepts TCP connections, reads the requests, never sends a byte
    Unconnectable   connect() hangs: a listening socket whose accept queue is full (SYNs dropped)
    Refusing        a bound port nothing listens on: connection refused at once
    SilentNameServer  a name server that never answers (lookups wait out the resolver's timeout)
    DirectHost      serves images at its own address (no proxy); ``delay`` before each answer
    SlowHost        a DirectHost whose answers (headers included) come after ``delay`` seconds
    FlappingHost    a DirectHost that refuses connections while down (``down()``/``up()``, ``down_for``)
    GatewayProxy    an HTTP proxy answering 502/504 for "unreachable" upstream hosts, images for the rest
    unresolvable_urls()  URLs on a name that cannot resolve (``.invalid``)

None of them knows the crawler's internals: they count what reaches them, and tests read the rest from
the crawl's manifest. :class:`DeadHostsWorld` puts the issue's scenario together and
:func:`write_url_list` writes it as a fall11-style URL list.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import selectors
import shlex
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from . import images
from .imagenet import FakePhoto, PhotoHosts
from .server import Request

UNRESOLVABLE_HOST = "photos-gone.invalid"
_NEXT_ADDRESS = itertools.count()


def loopback_address() -> str:
    """A loopback address not handed out before in this process (127.0.0.2 to 127.0.0.254, then again
    from the start): each peer a host of its own for the crawler."""
    return f"127.0.0.{2 + next(_NEXT_ADDRESS) % 253}"


def loopback_names() -> str:
    """Every loopback address plus ``localhost``, comma-separated: a ``no_proxy`` value, since Python's
    (and so Scrapy's) ``no_proxy`` matching knows names and suffixes, not 127.0.0.0/8."""
    return ",".join(["localhost", *(f"127.0.0.{i}" for i in range(1, 255))])


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big")


def image_body(url: str, size: tuple[int, int] = (48, 40)) -> bytes:
    """A distinct noise JPEG for ``url`` (seeded by it): over the imagenet spider's 32x32 minimum, never
    byte-identical to another URL's, so none is refused as too small or a duplicate."""
    return images.jpeg(*size, seed=_seed(url))


class _Peer:
    """A socket-level peer on a loopback address of its own: start/stop and the context manager."""

    def __init__(self, host: str | None = None) -> None:
        self.host = host or loopback_address()
        self.port = 0
        self._started = False

    @property
    def netloc(self) -> str:
        """``host:port`` (started peers only)."""
        if not self._started:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.netloc}"

    def url_for(self, path: str) -> str:
        return f"{self.url}/{path.lstrip('/')}"

    def urls(self, n: int, prefix: str = "") -> list[str]:
        """``n`` distinct image URLs on this peer (``/<prefix><i>_<host>.jpg``)."""
        tag = self.host.replace(".", "-")
        return [self.url_for(f"{prefix}{i}_{tag}.jpg") for i in range(n)]

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- black hole ---------------------------------------------------------------------------------
class BlackHole(_Peer):
    """Accepts every TCP connection, reads what the client sends, and never sends a byte: the host whose
    machine is up but whose server hangs (connect succeeds, the status line never comes). Connections
    are held until the client gives up or the peer stops.

    Counters: ``connections`` (accepted in all), ``open_connections`` (held now), ``peak_open`` (most
    held at once), ``requests`` (request lines received, ``GET /x.jpg HTTP/1.1``, in order) and
    ``closed_by_client`` (connections the client closed: it gave up waiting)."""

    def __init__(self, host: str | None = None) -> None:
        super().__init__(host)
        self.connections = 0
        self.closed_by_client = 0
        self.peak_open = 0
        self._requests: list[str] = []
        self._lock = threading.Lock()
        self._conns: dict[socket.socket, bytearray] = {}
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def requests(self) -> list[str]:
        with self._lock:
            return list(self._requests)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def start(self) -> Self:
        if self._started:
            return self
        listener = socket.create_server((self.host, 0), backlog=128)
        listener.setblocking(False)
        self._listener, self.port, self._started = listener, listener.getsockname()[1], True
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"BlackHole {self.host}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for conn in conns:
            conn.close()
        if self._listener is not None:
            self._listener.close()
        self._listener, self._thread, self._started = None, None, False

    def _run(self) -> None:
        assert self._listener is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in sel.select(timeout=0.05):
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    if sock is self._listener:
                        self._accept(sel)
                    else:
                        self._read(sel, sock)

    def _accept(self, sel: selectors.BaseSelector) -> None:
        assert self._listener is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                conn, _ = self._listener.accept()
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
                with self._lock:
                    self._conns[conn] = bytearray()
                    self.connections += 1
                    self.peak_open = max(self.peak_open, len(self._conns))

    def _read(self, sel: selectors.BaseSelector, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        with self._lock:
            if not data:
                sel.unregister(conn)
                self._conns.pop(conn, None)
                self.closed_by_client += 1
                conn.close()
                return
            buf = self._conns[conn]
            buf += data
            while (end := buf.find(b"\r\n\r\n")) >= 0:
                head = bytes(buf[:end])
                del buf[: end + 4]
                self._requests.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
            if len(buf) > 1 << 20:  # not HTTP: forget it, keep the connection
                buf.clear()


# -- unconnectable ------------------------------------------------------------------------------
class Unconnectable(_Peer):
    """A host:port where ``connect()`` hangs (the client's connect timeout decides), as for a machine
    that is gone or firewalled with DROP.

    The trick: a socket that listens with a backlog of 0 and never accepts. Linux queues one finished
    handshake in its accept queue (backlog + 1); once that queue is full it drops every new SYN without
    an answer (``tcp_conn_request``: ``sk_acceptq_is_full`` -> drop, counted as ListenOverflows), so a
    client's SYN gets no SYN-ACK and it retransmits until its own timeout. :meth:`start` fills the queue
    with connections of its own and checks that a further connect really hangs (~0.2 s); it raises
    RuntimeError if this kernel answers instead. On :meth:`stop` the socket closes: a client still
    retransmitting its SYN then gets a refusal.

    It cannot count anything: dropped SYNs never reach user space. Count attempts through the crawl's
    manifest (``timeout`` or ``connection`` lines for its URLs)."""

    PROBE_SECONDS = 0.2

    def __init__(self, host: str | None = None) -> None:
        super().__init__(host)
        self._listener: socket.socket | None = None
        self._fillers: list[socket.socket] = []

    def start(self) -> Self:
        if self._started:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((self.host, 0))
        listener.listen(0)
        self._listener, self.port, self._started = listener, listener.getsockname()[1], True
        try:
            self._fill()
        except BaseException:
            self.stop()
            raise
        return self

    def _fill(self) -> None:
        """Connect to ourselves until one connect does not complete: the queue is full from then on."""
        for _ in range(16):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            self._fillers.append(sock)
            code = sock.connect_ex((self.host, self.port))
            if code not in (0, errno.EINPROGRESS):
                why = errno.errorcode.get(code, str(code))
                raise RuntimeError(f"Unconnectable: connecting to {self.netloc} failed at once: {why}")
            with selectors.DefaultSelector() as sel:
                sel.register(sock, selectors.EVENT_WRITE)
                if not sel.select(timeout=self.PROBE_SECONDS):
                    sock.close()  # this one hangs: the accept queue is full and SYNs are dropped
                    self._fillers.pop()
                    return
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                raise RuntimeError(f"Unconnectable: connecting to {self.netloc} was answered with an error")
        raise RuntimeError("Unconnectable: this kernel keeps accepting handshakes; the SYN-drop trick does not work")

    def stop(self) -> None:
        for sock in self._fillers:
            sock.close()
        self._fillers.clear()
        if self._listener is not None:
            self._listener.close()
        self._listener, self._started = None, False


# -- refusing -----------------------------------------------------------------------------------
class Refusing(_Peer):
    """A host:port where every connection is refused at once (TCP RST to the SYN): a socket bound to it,
    never listening, so the port stays ours (nothing else can start listening there) for as long as the
    peer runs. It counts nothing (the kernel answers; no process sees the attempt): count through the
    crawl's manifest (``connection`` lines for its URLs)."""

    def __init__(self, host: str | None = None) -> None:
        super().__init__(host)
        self._sock: socket.socket | None = None

    def start(self) -> Self:
        if not self._started:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._sock.bind((self.host, 0))
            self.port, self._started = self._sock.getsockname()[1], True
        return self

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock, self._started = None, False


def refusing_url(path: str = "/photo.jpg") -> str:
    """A URL whose connections are refused at once, without a context manager: a port bound then closed,
    on a loopback address of its own, so nothing else is listening there. (Another process could in
    principle take the port later; :class:`Refusing` keeps it bound.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        host = loopback_address()
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    return f"http://{host}:{port}/{path.lstrip('/')}"


# -- unresolvable -------------------------------------------------------------------------------
DNS_ENV = {"RES_OPTIONS": "timeout:1 attempts:3"}
"""Environment for a crawl that looks up :data:`UNRESOLVABLE_HOST`: glibc waits 1 s, not 5, for a lost
DNS reply, then asks again (see :func:`unresolvable_urls`)."""


def unresolvable_urls(n: int, host: str = UNRESOLVABLE_HOST) -> list[str]:
    """``n`` URLs on ``host``, a name that does not resolve: ``.invalid`` is reserved (RFC 2606) and
    never delegated, so a resolver answers NXDOMAIN (no /etc/hosts line names it). On the machine these
    tests were written on (a gVisor sandbox, one nameserver) ``getent hosts x.invalid`` fails (exit 2)
    in ~3 ms, and Scrapy reports ``DNS lookup failed`` (outcome ``connection``) as fast; but about 1
    lookup in 30 loses its reply and waits out glibc's 5 s resolver timeout before asking again, one
    in a few with lookups in parallel. So a test must not time a single lookup tightly; run the crawl
    with :data:`DNS_ENV` (``RES_OPTIONS=timeout:1 attempts:3``) to cut that to 1 s. Behind an HTTP
    proxy the proxy resolves names, not the crawler: use these URLs without one (the
    :class:`GatewayProxy` stands in for a proxy's failures)."""
    return [f"http://{host}/{i}_{_seed(host) % 10**6}.jpg" for i in range(n)]


def resolves(host: str) -> bool:
    """Whether ``host`` resolves here (tests skip a DNS-failure case where a resolver answers ``.invalid``)."""
    try:
        socket.getaddrinfo(host, 80)
    except socket.gaierror:
        return False
    return True


# -- a name server that never answers ------------------------------------------------------------
class SilentNameServer(_Peer):
    """A name server that reads every query and answers none: a host whose name's servers are gone, so
    the system resolver waits out its timeout (``RES_OPTIONS``: ``timeout:6 attempts:1``, 6 s) before
    it gives up. UDP port 53 on a loopback address of its own, so it needs root. :meth:`command`
    runs a command in a mount namespace of its own whose ``/etc/resolv.conf`` names only this server
    (``unshare -m``, a bind mount: root too); :meth:`refusal` says why it cannot run here, or None.
    Counts ``queries`` (datagrams received)."""

    def __init__(self, folder: Path, host: str | None = None) -> None:
        super().__init__(host)
        self.resolv_conf = Path(folder) / "resolv.conf"
        self.queries = 0
        self._sock: socket.socket | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def refusal(self) -> str | None:
        """Why a command cannot be given this name server here (not root, no ``unshare``), or None."""
        try:
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe.bind((loopback_address(), 53))
            probe.close()
        except OSError as exc:
            return f"cannot listen on UDP port 53: {exc}"
        self.resolv_conf.parent.mkdir(parents=True, exist_ok=True)
        self.resolv_conf.write_text("nameserver 127.0.0.1\n")
        try:
            done = subprocess.run(self.command(["true"]), capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"cannot run in a mount namespace of its own: {exc}"
        return None if done.returncode == 0 else f"cannot bind-mount /etc/resolv.conf: {done.stderr.strip()}"

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run with this server as its only name server."""
        mount = f'mount --bind {shlex.quote(str(self.resolv_conf))} /etc/resolv.conf && exec "$@"'
        return ["unshare", "-m", "sh", "-c", mount, "sh", *argv]

    def start(self) -> Self:
        if not self._started:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock.bind((self.host, 53))
            self._sock.settimeout(0.1)
            self.port, self._started = 53, True
            self.resolv_conf.parent.mkdir(parents=True, exist_ok=True)
            self.resolv_conf.write_text(f"nameserver {self.host}\noptions timeout:6 attempts:1\n")
            self._stopping.clear()
            self._thread = threading.Thread(target=self._swallow, daemon=True)
            self._thread.start()
        return self

    def _swallow(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.queries += 1

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._sock is not None:
            self._sock.close()
        self._sock, self._thread, self._started = None, None, False


# -- photo hosts at their own address -----------------------------------------------------------
class DirectHost(PhotoHosts):
    """Images served at a loopback address of its own, asked for directly (no proxy): a live image host.

    ``bodies``: the image bytes to serve (URL ``i`` serves ``bodies[i]``), or how many to make (distinct
    48x40 noise JPEGs, see :func:`image_body`). ``delay``: seconds before each answer's headers.
    URLs exist once started: ``urls`` (in order), ``bodies`` (URL -> bytes); :meth:`add_image` serves one more;
    ``host``, ``port``, ``netloc``, ``url`` say where it listens.

    Counters (from :class:`PhotoHosts`): ``requests`` (answered or not), ``hits_for(url)``,
    ``url_log`` (URLs in arrival order), ``max_concurrent`` and ``concurrent_now`` (requests inside
    their delay or answer)."""

    def __init__(self, bodies: Sequence[bytes] | int = 0, *, delay: float = 0.0, host: str | None = None) -> None:
        super().__init__()
        self.host = host or loopback_address()
        self.bind_address = (self.host, 0)
        self.delay = delay
        self._initial: Sequence[bytes | None] = [None] * bodies if isinstance(bodies, int) else list(bodies)
        self.urls: list[str] = []
        self.bodies: dict[str, bytes] = {}

    def start(self) -> Self:
        fresh = self._httpd is None and not self.urls
        super().start()
        if fresh:
            for body in self._initial:
                self.add_image(body)
        return self

    def add_image(self, body: bytes | None = None, path: str | None = None) -> str:
        """Serve ``body`` (default: a fresh distinct JPEG) at ``path`` (default ``/<i>_<host>.jpg``); its URL."""
        tag = self.host.replace(".", "-")
        url = f"{self.url}/{(path or f'{len(self.urls)}_{tag}.jpg').lstrip('/')}"
        body = body if body is not None else image_body(url)
        self.add(FakePhoto(url, body, delay=self.delay))
        self.urls.append(url)
        self.bodies[url] = body
        return url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def netloc(self) -> str:
        """``host:port``, as in its URLs."""
        return self.url.split("://", 1)[1]

    @property
    def requests(self) -> int:
        """Requests received (each counted on arrival, answered or not)."""
        return len(self.url_log)


class SlowHost(DirectHost):
    """Slow but alive: each answer's status line and headers are sent only after ``delay`` seconds, then
    the body at once. Counts requests and concurrency (``requests``, ``max_concurrent``, ``concurrent_now``),
    so a test sees how many requests a cautious crawler keeps in flight to a host it has not heard from."""

    def __init__(self, bodies: Sequence[bytes] | int = 0, *, delay: float, host: str | None = None) -> None:
        super().__init__(bodies, delay=delay, host=host)


class FlappingHost(DirectHost):
    """Serves images, but refuses connections while down: :meth:`down` closes the listening socket (and
    the connections it has), keeping its port bound but not listening, so a connect is refused at once
    and no other program can take the port; :meth:`up` listens on the same address again. ``down_for``:
    start down and come up by itself that many seconds after :meth:`start`.

    Counters: ``served`` (requests received while up, over all up periods), ``downs`` (times it went
    down), ``is_up``; plus DirectHost's."""

    def __init__(
        self, bodies: Sequence[bytes] | int = 0, *, down_for: float | None = None, delay: float = 0.0,
        host: str | None = None,
    ) -> None:
        super().__init__(bodies, delay=delay, host=host)
        self.down_for = down_for
        self.downs = 0
        self._hold: socket.socket | None = None
        self._flap = threading.RLock()
        self._timer: threading.Timer | None = None
        self._port = 0

    @property
    def is_up(self) -> bool:
        return self._httpd is not None

    @property
    def url(self) -> str:
        """``http://host:port``, down or up."""
        return f"http://{self.host}:{self._port}" if self._port else super().url

    @property
    def served(self) -> int:
        return self.requests

    def start(self) -> Self:
        with self._flap:
            if self._port:
                return self
            super().start()
            self._port = self._httpd.server_address[1]  # type: ignore[union-attr]
            self.bind_address = (self.host, self._port)
            if self.down_for is not None:
                self.down()
                self._timer = threading.Timer(self.down_for, self.up)
                self._timer.daemon = True
                self._timer.start()
        return self

    def down(self) -> None:
        """Stop listening (connections refused from now on); open connections are closed."""
        with self._flap:
            if not self.is_up:
                return
            super().stop()
            hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            hold.bind(self.bind_address)  # bound, never listening: refused, and the port stays ours
            self._hold = hold
            self.downs += 1

    def up(self) -> None:
        """Listen again on the same address and port."""
        with self._flap:
            if self.is_up or not self._port:
                return
            if self._hold is not None:
                self._hold.close()
                self._hold = None
            super().start()

    def stop(self) -> None:
        with self._flap:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            super().stop()
            if self._hold is not None:
                self._hold.close()
                self._hold = None
            self._port = 0


# -- a proxy whose upstreams are gone ------------------------------------------------------------
class GatewayProxy(PhotoHosts):
    """An HTTP proxy (``http_proxy=``) that relays nothing real: for a request to a host in
    ``bad_gateway`` it answers ``502 Bad Gateway``, to a host in ``gateway_timeout`` ``504 Gateway
    Timeout`` (after ``timeout_after`` seconds, as a proxy waits out its own connect timeout first), as
    a corporate proxy does for upstreams it cannot reach; registered photos (``FakePhoto`` s, as for
    :class:`PhotoHosts`) are served under their real host names; anything else is 404.

    Counters: ``requests_by_host`` (a Counter of every request by upstream ``host`` or ``host:port``
    when a port is given), ``requests_to(host)``; plus PhotoHosts's (``url_log``, ``hits_for``, ...).
    Use :meth:`proxy_env` for the crawl's environment: every loopback address goes direct."""

    def __init__(
        self,
        photos: Mapping[str, Iterable[FakePhoto]] | Iterable[FakePhoto] = (),
        *,
        bad_gateway: Iterable[str] = (),
        gateway_timeout: Iterable[str] = (),
        timeout_after: float = 0.0,
    ) -> None:
        super().__init__(photos)
        self.bad_gateway = {h.lower() for h in bad_gateway}
        self.gateway_timeout = {h.lower() for h in gateway_timeout}
        self.timeout_after = timeout_after
        self.requests_by_host: Counter[str] = Counter()

    def proxy_env(self) -> dict[str, str]:
        names = loopback_names()
        return {"http_proxy": self.url, "HTTP_PROXY": self.url, "no_proxy": names, "NO_PROXY": names}

    def clear_log(self) -> None:
        super().clear_log()
        with self._lock:
            self.requests_by_host.clear()

    def requests_to(self, host: str) -> int:
        with self._lock:
            return self.requests_by_host[host.lower()]

    def photo_urls(self, host: str, n: int, wnid: str = "n00000000") -> list[str]:
        """Register ``n`` distinct photos on ``host`` (any name: the proxy serves it); their URLs."""
        urls = [f"http://{host}/{1000 + i}/{wnid}_{i}_{_seed(host + str(i)) % 16**10:010x}.jpg" for i in range(n)]
        for url in urls:
            self.add(FakePhoto(url, image_body(url)), wnid)
        return urls

    def _serve(self, req: Request) -> None:
        raw = req.handler.path
        url = raw if not raw.startswith("/") else f"http://{req.headers.get('Host', '')}{raw}"
        target = urlsplit(url)
        host = (target.hostname or "").lower()
        with self._lock:
            self.requests_by_host[f"{host}:{target.port}" if target.port else host] += 1
        if host in self.bad_gateway:
            body = b"<html><body><h1>502 Bad Gateway</h1><p>cannot connect to the upstream</p></body></html>"
            return req.send(502, body, "text/html")
        if host in self.gateway_timeout:
            self._stopping.wait(self.timeout_after)
            body = b"<html><body><h1>504 Gateway Timeout</h1><p>the upstream did not answer</p></body></html>"
            return req.send(504, body, "text/html")
        return super()._serve(req)


# -- the scenario ------------------------------------------------------------------------
def write_url_list(path: Path | str, classes: Mapping[str, Sequence[str]]) -> Path:
    """Write ``classes`` (wnid -> URLs, in the order to try them) as a fall11-style URL list: one
    ``<wnid>_<n>`` TAB URL line per URL, ``n`` from 1 in each class; the path."""
    path = Path(path)
    path.write_text("".join(f"{wnid}_{i}\t{url}\n" for wnid, urls in classes.items() for i, url in enumerate(urls, 1)))
    return path


BLACK_HOLED, REFUSED, ALL_GOOD = "n01440764", "n01443537", "n01484850"
UNCONNECTED, UNRESOLVED = "n01491361", "n01494475"


class DeadHostsWorld:
    """Issue 17's world, started and stopped as one context manager:

    * class ``BLACK_HOLED`` (n01440764): ``black_holed`` URLs on each of ``black_holes`` black-holed hosts
      (interleaved: host a, host b, a, b, ...), then ``good`` good URLs;
    * class ``REFUSED`` (n01443537): ``refused`` URLs on a refusing host, then ``good`` good URLs;
    * class ``ALL_GOOD`` (n01484850): ``good`` good URLs only;
    * with ``unconnectable`` > 0, class ``UNCONNECTED`` (n01491361): that many URLs on an
      :class:`Unconnectable` host (connect hangs), then ``good``;
    * with ``unresolvable`` > 0, class ``UNRESOLVED`` (n01494475): that many URLs on
      ``photos-gone.invalid``, then ``good``.

    The issue's sizes are the defaults (60 per black hole, 80 refused); tests pass small ones. Good URLs
    are spread over two live :class:`DirectHost` s (``delay`` seconds per answer); ``good`` must cover
    ``per_class`` plus whatever a run may lose. No proxy: run the crawl without proxy variables.

    After ``__enter__``: ``classes`` (wnid -> URLs in list order), ``bodies`` (good URL -> bytes),
    ``black_holes``, ``refusing``, ``unconnectable`` (or None), ``good_hosts``; :meth:`write` writes the
    URL list, :meth:`dead_host_requests` counts what reached each dead host, :meth:`check` checks a
    finished dataset folder."""

    def __init__(
        self, *, black_holed: int = 60, black_holes: int = 2, refused: int = 80, good: int = 10,
        unconnectable: int = 0, unresolvable: int = 0, delay: float = 0.0,
    ) -> None:
        self.sizes = {"black_holed": black_holed, "refused": refused, "good": good, "unconnectable": unconnectable,
                      "unresolvable": unresolvable}
        self.black_holes = [BlackHole() for _ in range(black_holes)]
        self.refusing = Refusing()
        self.unconnectable = Unconnectable() if unconnectable else None
        self.good_hosts = [DirectHost(delay=delay), DirectHost(delay=delay)]
        self.classes: dict[str, list[str]] = {}
        self.bodies: dict[str, bytes] = {}
        self._stack = contextlib.ExitStack()

    @property
    def wnids(self) -> list[str]:
        return list(self.classes)

    @property
    def dead_urls(self) -> int:
        """How many URLs in the list are on dead hosts."""
        return sum(1 for urls in self.classes.values() for url in urls if url not in self.bodies)

    def __enter__(self) -> Self:
        with contextlib.ExitStack() as stack:
            for peer in [*self.black_holes, self.refusing, *self.good_hosts]:
                stack.enter_context(peer)
            if self.unconnectable is not None:
                stack.enter_context(self.unconnectable)
            self._stack = stack.pop_all()
        s = self.sizes
        on_holes = [hole.urls(s["black_holed"], "bh") for hole in self.black_holes]
        self.classes[BLACK_HOLED] = [url for row in zip(*on_holes, strict=True) for url in row] + self._good(s["good"])
        self.classes[REFUSED] = self.refusing.urls(s["refused"], "re") + self._good(s["good"])
        self.classes[ALL_GOOD] = self._good(s["good"])
        if self.unconnectable is not None:
            self.classes[UNCONNECTED] = self.unconnectable.urls(s["unconnectable"], "uc") + self._good(s["good"])
        if s["unresolvable"]:
            self.classes[UNRESOLVED] = unresolvable_urls(s["unresolvable"]) + self._good(s["good"])
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _good(self, n: int) -> list[str]:
        urls = []
        for i in range(n):
            host = self.good_hosts[i % len(self.good_hosts)]
            url = host.add_image()
            self.bodies[url] = host.bodies[url]
            urls.append(url)
        return urls

    def write(self, path: Path | str) -> Path:
        return write_url_list(path, self.classes)

    def dead_host_requests(self) -> dict[str, dict[str, int]]:
        """What reached each dead host that can tell: black holes (``connections`` accepted, ``requests``
        received). The refusing and unconnectable hosts and the ``.invalid`` name see nothing (count
        their URLs' manifest lines)."""
        return {hole.netloc: {"connections": hole.connections, "requests": len(hole.requests)}
                for hole in self.black_holes}

    def good_requests(self) -> int:
        return sum(host.requests for host in self.good_hosts)

    def check(self, images_dir: Path | str, per_class: int) -> list[str]:
        """What is wrong with a finished run's image tree (``out_dir/Images``, one folder per wnid):
        each class must hold exactly ``per_class`` files, each byte for byte a body served for a good
        URL of that class, no two alike. An empty list: exact."""
        images_dir, problems = Path(images_dir), []
        for wnid, urls in self.classes.items():
            folder = images_dir / wnid
            files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
            if len(files) != per_class:
                problems.append(f"{wnid}: {len(files)} files, expected {per_class}")
            ours = {self.bodies[u] for u in urls if u in self.bodies}
            seen: set[bytes] = set()
            for file in files:
                data = file.read_bytes()
                if data not in ours:
                    problems.append(f"{wnid}/{file.name}: not a body served for this class")
                elif data in seen:
                    problems.append(f"{wnid}/{file.name}: a second copy")
                seen.add(data)
        return problems


def wait_until(predicate: Any, timeout: float = 5.0, step: float = 0.01) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while not (ok := predicate()) and time.monotonic() < deadline:
        time.sleep(step)
    return bool(ok)
