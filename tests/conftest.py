"""Shared helpers: run the real `scrapy crawl` in a subprocess and read what it left on disk."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import select
import shutil
import struct
import subprocess
import sys
import sysconfig
import termios
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    code: int
    stderr: str
    out: Path

    def manifest(self) -> list[dict]:
        path = self.out / "manifest.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def outcomes(self, kind: str = "image") -> dict[str, int]:
        counts: dict[str, int] = {}
        for line in self.manifest():
            if line["kind"] == kind:
                counts[line["outcome"]] = counts.get(line["outcome"], 0) + 1
        return counts

    def files(self, sub: str = "Images") -> dict[str, bytes]:
        """Every file under ``out/sub``, by path relative to it; not the files the runs write there
        for the loaders (tests/test_loading.py): ``classes.txt`` and ``classes_given.txt`` at its
        top, ``metadata.jsonl`` there or in a split folder."""
        base = self.out / sub
        return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*"))
                if p.is_file() and not _for_the_loaders(p.relative_to(base).parts)}


def _for_the_loaders(parts: tuple[str, ...]) -> bool:
    return parts in (("classes.txt",), ("classes_given.txt",)) or (len(parts) <= 2 and parts[-1] == "metadata.jsonl")


def crawl_command(spider: str, out: Path, *args: str, settings: dict[str, str] | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "scrapy", "crawl", spider, "-a", f"out_dir={out}"]
    for arg in args:
        cmd += ["-a", arg]
    for name, value in (settings or {}).items():
        cmd += ["-s", f"{name}={value}"]
    return cmd


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without the machine's proxy variables, plus ``extra``."""
    return {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")} | (extra or {})


def crawl(
    spider: str,
    out: Path,
    *args: str,
    settings: dict[str, str] | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> Run:
    """``scrapy crawl SPIDER -a out_dir=OUT -a ARG...`` from the project root.

    The machine's proxy variables are dropped; ``env`` adds variables (e.g. ``http_proxy``).
    """
    proc = subprocess.run(
        crawl_command(spider, out, *args, settings=settings), cwd=ROOT, env=clean_env(env), input=stdin,
        capture_output=True, text=True, timeout=timeout,
    )
    return Run(proc.returncode, proc.stderr, out)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "Data"


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real tmpfs at ``mount`` (another file system; full or read-only for real). Mounting
    needs root: the test is skipped, saying why, where it is refused."""
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def install_copy(where: Path) -> Path:
    """``pip install`` of a copy of the checkout into a fresh virtualenv under ``where``, as a user
    installs it (the project's dependencies seen through a .pth, so nothing is downloaded); the
    installed ``dataset-spiders`` command."""
    source = where / "src"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "dataset_spiders", source / "dataset_spiders", ignore=shutil.ignore_patterns("__pycache__"))
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    where_site = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = subprocess.run([str(venv / "bin" / "python"), "-c", where_site], capture_output=True, text=True,
                          check=True).stdout.strip()
    Path(site, "outer.pth").write_text(sysconfig.get_path("purelib") + "\n")  # scrapy, pillow, pip...
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps",
                           "--no-build-isolation", str(source)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return venv / "bin" / "dataset-spiders"


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``dataset-spiders`` command of an installed copy of the checkout (once per session)."""
    return install_copy(tmp_path_factory.mktemp("installed"))


def user_run(exe: Path, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The installed command as a user runs it: from ``cwd`` (a folder outside the checkout),
    without the machine's proxy variables and without the checkout on the path."""
    environment = {k: v for k, v in clean_env(env).items() if k != "PYTHONPATH"}
    return subprocess.run([str(exe), *args], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=timeout, input=stdin)


@contextlib.contextmanager
def looking_every(seconds: float, look: Callable[[], None]) -> Iterator[None]:
    """``look()`` in a thread every ``seconds`` while the block runs: a run watched from outside."""
    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            look()
            done.wait(seconds)

    watcher = threading.Thread(target=loop, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def terminal_run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 90,
                 columns: int = 0, answer: str | None = None) -> tuple[int, str]:
    """Run ``command`` with a pseudo-terminal as its stderr (``columns`` wide; 0: a new terminal's
    0 by 0), and as its stdin when it is to be answered (``answer`` is typed when it asks
    ``[y/N]``); its exit status and everything written to the terminal (the answer's echo too)."""
    leader, follower = pty.openpty()
    if columns:
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL if answer is None else follower,
                            stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
            if answer is not None and b"[y/N] " in b"".join(chunks):
                os.write(leader, answer.encode() + b"\n")
                answer = None
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=10)
    os.close(leader)
    return code, b"".join(chunks).decode("utf-8", "replace")

