"""Processes we start end when the caller is interrupted: nothing outlives the call.

A child (the Python API's crawl, the dry run the console runs before asking) starts in a
session of its own, so a Ctrl-C on a terminal reaches only the caller, and a notebook's
interrupt (SIGINT to the kernel alone) is no different: either way the caller, on
KeyboardInterrupt or SIGTERM, sends the child's process group SIGINT (a crawl stops gracefully,
recording its run), waits ``STOP_GRACE`` seconds, sends SIGINT again (Scrapy's stop at once,
still leaving no partial file), waits ``FORCE_GRACE``, then kills the group; it waits for the
child, then re-raises. SIGTERM is taken over only while a child runs and only in the main
thread, then delivered again as it would have come (the caller ends as it would have). Without
this, an interrupted notebook cell left its crawl running under PID 1, holding the dataset's
lock, and the next call failed with "ISIC is in use by process ...". What no code of the caller
sees (SIGKILL, a kernel restarted) the child sees itself: it asks for SIGINT when its parent
dies (``end_with_the_parent``).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any

STOP_GRACE = 10.0  # seconds a crawl has after SIGINT to finish or drop what is in flight
FORCE_GRACE = 5.0  # then after a second SIGINT, before the process group is killed


PARENT_ENV = "DATASET_SPIDERS_PARENT"  # the pid of the process that started this console command


def package_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment for a child that runs this package's console command: the package as this
    process imported it (an install, or a checkout on sys.path) first on its path, output
    unbuffered, this process's pid (``end_with_the_parent``), ``extra``."""
    home = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (home, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, PARENT_ENV: str(os.getpid()), **(extra or {})}


def end_with_the_parent() -> None:
    """In a console command started by ``package_env``'s caller: SIGINT (a graceful stop) when
    that process dies, even by SIGKILL, when no code of it can stop us (a notebook's kernel
    restarted, a ``kill -9``). Linux (prctl PR_SET_PDEATHSIG); elsewhere nothing."""
    parent = os.environ.pop(PARENT_ENV, "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
        if os.getppid() != int(parent):  # it died before we asked
            os.kill(os.getpid(), signal.SIGINT)


class Terminated(BaseException):
    """SIGTERM arrived while a child ran (raised in the main thread, so the child is stopped);
    the caller gets the signal again once the child is gone."""


class Child:
    """A process in a session of its own whose stderr is read line by line (by a thread, so that
    waiting for it can have a deadline and a full pipe never blocks it)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None, *, capture_stdout: bool = False,
                 stderr: bool = True):
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE if stderr else None, text=True, errors="replace", env=env,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stderr, self.lines), daemon=True)
                         if stderr else None,
                         threading.Thread(target=self._read_all, daemon=True) if capture_stdout else None]
        for reader in self._readers:
            if reader is not None:
                reader.start()
        if not stderr:
            self.lines.put(None)
        self._exited = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    @staticmethod
    def _read(stream: Any, lines: queue.Queue[str | None]) -> None:
        try:
            for line in stream:
                lines.put(line)
        except (OSError, ValueError):  # closed under us
            pass
        finally:
            lines.put(None)

    def _read_all(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(OSError, ValueError):
            self.stdout.append(self.proc.stdout.read())

    def stderr_lines(self) -> Iterator[str]:
        """Each line the child writes to stderr, until it closes it."""
        while True:
            try:
                line = self.lines.get(timeout=0.5)  # (a signal handler runs between two waits at the latest)
            except queue.Empty:
                continue
            if line is None:
                return
            yield line

    def wait(self) -> int:
        """The child's exit status, once it and every process left in its group are gone."""
        self._wait_exit(None)
        return self._reap()

    def stop(self, on_line: Callable[[str], None] | None = None) -> int:
        """SIGINT, a bounded wait, SIGINT again, a bounded wait, then SIGKILL; what the child says
        meanwhile goes to ``on_line``. A second interrupt while it stops kills at once."""
        try:
            for grace in (STOP_GRACE, FORCE_GRACE):
                self._signal(signal.SIGINT)
                if self._drain_until_exit(time.monotonic() + grace, on_line):
                    break
        finally:  # (also when interrupted again: nothing outlives the call)
            if not self._exited:
                self._signal(signal.SIGKILL)
                self._wait_exit(None)
            code = self._reap()
        return code

    def _drain_until_exit(self, deadline: float, on_line: Callable[[str], None] | None) -> bool:
        """Pass on the child's lines until it has exited (True) or ``deadline`` (False)."""
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                line = ""
            if line is None:  # stderr closed: the child is going
                self.lines.put(None)
                return self._wait_exit(deadline)
            if line and on_line is not None:
                on_line(line)
            if self._wait_exit(0):
                return True
        return self._wait_exit(0)

    def _wait_exit(self, deadline: float | None) -> bool:
        """Whether the child has exited by ``deadline`` (None: wait for it; 0: just look). It stays
        a zombie, unreaped, so its process group id cannot be taken by another while we kill what
        is left in the group."""
        while not self._exited:
            try:
                done = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None
            except ChildProcessError:  # (reaped already)
                done = True
            if done:
                self._exited = True
                break
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def _reap(self) -> int:
        self._signal(signal.SIGKILL)  # any process the child started and left behind in its group
        code = self.proc.wait()
        for reader in self._readers:  # (at the end of their pipes now: nobody holds them open)
            if reader is not None:
                reader.join(timeout=2)
        for stream in (self.proc.stderr, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
        return code

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)


@contextlib.contextmanager
def running(argv: Sequence[str], env: dict[str, str] | None = None, on_line: Callable[[str], None] | None = None,
            **options: Any) -> Iterator[Child]:
    """A ``Child`` for the body; on KeyboardInterrupt or SIGTERM in the caller (or any exception
    of the body) it is stopped (``Child.stop``, its last lines to ``on_line``), then the exception
    goes on. SIGTERM is delivered again under the caller's own handling (by default the process
    ends by it, as it would have); if that handling returns, ``Terminated`` is raised."""
    previous = _take_sigterm()
    child = None
    try:
        child = Child(argv, env, **options)
        yield child
    except Terminated:
        if child is not None:
            child.stop(on_line)
        _give_back_sigterm(previous)
        previous = _NOT_OURS
        os.kill(os.getpid(), signal.SIGTERM)  # as it came, now that the child is gone
        raise
    except BaseException:
        if child is not None:
            child.stop(on_line)
        raise
    finally:
        _give_back_sigterm(previous)


_NOT_OURS = object()


def _take_sigterm() -> Any:
    """Our SIGTERM handler for the call, where Python lets us (the main thread) and the caller
    has not chosen to ignore SIGTERM; what was there before, or _NOT_OURS."""
    if threading.current_thread() is not threading.main_thread():
        return _NOT_OURS
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN or previous is None:
        return _NOT_OURS

    def terminated(signum: int, frame: FrameType | None) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, terminated)
    return previous


def _give_back_sigterm(previous: Any) -> None:
    if previous is not _NOT_OURS and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)
