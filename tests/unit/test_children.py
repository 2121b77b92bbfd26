"""A child that will not stop on SIGINT is killed after the bounded waits, with every process it
started; one that stops is waited for, and what it says meanwhile is passed on."""

from __future__ import annotations

import os
import sys
import time

import pytest

from dataset_spiders import children

STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGINT, lambda *a: print("SIGINT ignored", file=sys.stderr, flush=True))
grandchild = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                               "signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)"])
print(grandchild.pid, file=sys.stderr, flush=True)
while True:
    time.sleep(0.05)
"""

POLITE = """
import sys, time
try:
    print("ready", file=sys.stderr, flush=True)
    time.sleep(60)
except KeyboardInterrupt:
    print("stopping cleanly", file=sys.stderr, flush=True)
    sys.exit(1)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"  # a zombie is gone but for its parent's wait
    except OSError:
        return False


def test_a_child_deaf_to_sigint_is_killed_with_what_it_started(monkeypatch):
    monkeypatch.setattr(children, "STOP_GRACE", 0.4)
    monkeypatch.setattr(children, "FORCE_GRACE", 0.3)
    said: list[str] = []
    started = time.monotonic()
    stubborn = [sys.executable, "-c", STUBBORN]
    with pytest.raises(KeyboardInterrupt), children.running(stubborn, on_line=said.append) as child:
        grandchild = int(next(child.stderr_lines()))
        assert alive(grandchild)
        started = time.monotonic()
        raise KeyboardInterrupt  # as the caller's Ctrl-C would
    took = time.monotonic() - started
    assert took > 0.6, took  # both waits, then the kill
    assert said.count("SIGINT ignored\n") == 2
    assert not alive(child.pid) and not alive(grandchild)
    with pytest.raises(ChildProcessError):
        os.waitpid(child.pid, os.WNOHANG)  # reaped, not left a zombie


def test_a_child_that_stops_on_sigint_is_waited_for():
    said: list[str] = []
    polite = [sys.executable, "-c", POLITE]
    with pytest.raises(KeyboardInterrupt), children.running(polite, on_line=said.append) as child:
        assert next(child.stderr_lines()) == "ready\n"
        raise KeyboardInterrupt
    assert said == ["stopping cleanly\n"] and child.proc.returncode == 1
