"""Shared helpers: run the real `scrapy crawl` in a subprocess and read what it left on disk."""

from __future__ import annotations

import atexit
import compileall
import contextlib
import fcntl
import json
import os
import pty
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import sysconfig
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """Compile the package once, before the first test (in the controller only, under xdist):
    the suite runs `scrapy crawl` a few hundred times, and where ``PYTHONDONTWRITEBYTECODE`` is
    set (as on CI here) each run would compile every module again (about 0.25 s of CPU each)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        compileall.compile_dir(ROOT / "dataset_spiders", quiet=1)


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
    done = run_scrapy(crawl_command(spider, out, *args, settings=settings), env=clean_env(env), input=stdin,
                      timeout=timeout)
    return Run(done.returncode, done.stderr, out)


def run_scrapy(command: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT, input: str | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(command, capture_output=True, text=True, ...)`` for ``python -m scrapy ...``,
    started warm (tests/zygote.py) where it can be: the same process, exit code and output."""
    environment = clean_env() if env is None else env
    if not zygote_for(command).serves(command, environment):
        return subprocess.run(command, cwd=cwd, env=environment, input=input, capture_output=True, text=True,
                              timeout=timeout)
    with tempfile.TemporaryFile() as given:
        given.write((input or "").encode())
        given.seek(0)
        child = start_scrapy(command, cwd=cwd, env=environment, stdin=given, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        code = child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(10)
        raise
    assert child.stdout is not None and child.stderr is not None
    return subprocess.CompletedProcess(command, code, child.stdout.read(), child.stderr.read())


Stream = IO[Any] | int | None


def start_scrapy(command: list[str], *, cwd: Path = ROOT, env: dict[str, str], stdin: Stream = subprocess.DEVNULL,
                 stdout: Stream = subprocess.DEVNULL, stderr: Stream = subprocess.DEVNULL) -> Any:
    """``subprocess.Popen(command, ...)`` for ``python -m scrapy ...`` (text mode where PIPE is
    asked), started warm where it can be; what it returns has ``pid``, ``returncode``, ``wait``,
    ``poll``, ``send_signal``, ``kill`` and, for PIPE, a ``stdout``/``stderr`` read once it ended."""
    zygote = zygote_for(command)
    if not zygote.serves(command, env):
        return subprocess.Popen(command, cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr,
                                text=subprocess.PIPE in (stdout, stderr))
    with contextlib.ExitStack() as opened:
        captured: list[Captured | None] = []
        fds = []
        for stream, mode in ((stdin, "rb"), (stdout, "wb"), (stderr, "wb")):
            captured.append(None)
            if stream == subprocess.PIPE:
                captured[-1] = Captured()
                fds.append(captured[-1].file.fileno())
            elif stream in (subprocess.DEVNULL, None):
                fds.append(opened.enter_context(open(os.devnull, mode)).fileno())
            elif isinstance(stream, int):
                fds.append(stream)
            else:
                fds.append(stream.fileno())
        return zygote.spawn(command, cwd, env, fds, captured[1], captured[2])


class Captured:
    """A child's stdout or stderr, kept in a temporary file; ``read()`` gives all of it as text."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 (read after the child ends, closed with this)

    def read(self) -> str:
        self.file.seek(0)
        return self.file.read().decode("utf-8", "replace")


class WarmChild:
    """A ``python -m scrapy`` forked by the zygote (tests/zygote.py): a process of its own."""

    def __init__(self, conn: socket.socket, command: list[str], stdout: Captured | None, stderr: Captured | None):
        self.conn, self.args, self.stdout, self.stderr = conn, command, stdout, stderr
        self.pid: int = json.loads(conn.recv(4096))["pid"]
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.conn.settimeout(timeout)
            try:
                reply = self.conn.recv(4096)
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout or 0) from None
            ended = json.loads(reply)
            self.returncode = ended["code"]
            WARM_CPU[0] += ended["cpu"]  # seconds, for a profile of the suite
            self.conn.close()
        return self.returncode

    def poll(self) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.wait(0.0001)
        return None

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class Zygote:
    """One per interpreter per test process, started at its first run: see tests/zygote.py."""

    def __init__(self, python: str = sys.executable, bin_folder: Path | None = None) -> None:
        self.python, self.bin_folder = python, bin_folder
        self.proc: subprocess.Popen[str] | None = None
        self.env: dict[str, str] = {}
        self.path = ""

    def serves(self, command: list[str], env: dict[str, str]) -> bool:
        """Whether ``command`` can start from this zygote: this Python's ``-m scrapy`` (the
        checkout's), or a console script of its bin folder (an installed copy's); and the
        variables Python reads at its start are the zygote's."""
        if os.environ.get("TESTS_COLD_START") or COLD_START:
            return False  # TESTS_COLD_START=1: every run a new interpreter
        if self.bin_folder is None:
            if command[:3] != [self.python, "-m", "scrapy"]:
                return False
        elif Path(command[0]).parent != self.bin_folder:
            return False
        if self.proc is None:
            self.start()

        def startup(environment: dict[str, str]) -> dict[str, str]:
            return {k: v for k, v in environment.items() if k.startswith("PYTHON")}

        return startup(env) == startup(self.env)

    def start(self) -> None:
        self.path = tempfile.mktemp(prefix="zygote-", suffix=".sock", dir="/tmp")
        command = [self.python, str(ROOT / "tests" / "zygote.py"), self.path]
        if self.bin_folder is None:
            self.env, cwd = clean_env(), ROOT
        else:
            self.env = {k: v for k, v in clean_env().items() if k != "PYTHONPATH"}
            cwd = self.bin_folder
            command.append(str(self.bin_folder))
        self.proc = subprocess.Popen(command, cwd=cwd, env=self.env, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "ready\n"
        atexit.register(self.stop)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def spawn(self, command: list[str], cwd: Path, env: dict[str, str], fds: list[int],
              stdout: Captured | None, stderr: Captured | None) -> WarmChild:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.connect(self.path)
        argv = command[1:] if self.bin_folder is None else command
        request = {"argv": argv, "cwd": str(cwd), "env": env}
        socket.send_fds(conn, [json.dumps(request).encode()], fds)
        return WarmChild(conn, command, stdout, stderr)


WARM_CPU = [0.0]  # CPU seconds of the warm starts ended so far in this process
COLD_START = False  # set by the cold_start marker, for one test
ZYGOTE = Zygote()
INSTALLED_ZYGOTES: dict[Path, Zygote] = {}


def zygote_for(command: list[str]) -> Zygote:
    """The checkout's zygote, or the one of the installed copy whose console script ``command`` runs."""
    first = Path(command[0])
    if first.name == "dataset-spiders" and (first.parent / "python").exists():
        if first.parent not in INSTALLED_ZYGOTES:
            INSTALLED_ZYGOTES[first.parent] = Zygote(str(first.parent / "python"), first.parent)
        return INSTALLED_ZYGOTES[first.parent]
    return ZYGOTE


# The files whose tests take longest (each over 20 s of wall time in all on this machine), run
# first: under xdist a long test started last would be the suite's tail, one core idle.
SLOW_FILES = ("test_scale_out", "test_api_script", "test_folder_safety", "test_resume", "test_tool",
              "test_trust_folders", "test_progress", "test_dead_hosts", "test_loading", "test_secrets_and_api")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    order = {name: rank for rank, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: order.get(item.path.stem, len(order)))


@pytest.fixture(autouse=True)
def cold_start(request: pytest.FixtureRequest) -> Iterator[None]:
    """Under the ``cold_start`` marker, no warm starts: a test that reads the command lines of
    the processes it started sees theirs, not the zygote's."""
    global COLD_START
    COLD_START = request.node.get_closest_marker("cold_start") is not None
    yield
    COLD_START = False


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
    """The ``dataset-spiders`` command of an installed copy of the checkout: installed once per
    session, by the first test process that needs it (the others wait, then use it)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if "PYTEST_XDIST_WORKER" in os.environ else base
    where = root / "installed"
    with open(root / "installed.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        exe = where / "venv" / "bin" / "dataset-spiders"
        if not exe.exists():
            shutil.rmtree(where, ignore_errors=True)
            install_copy(where)
    return exe


def user_run(exe: Path, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The installed command as a user runs it: from ``cwd`` (a folder outside the checkout),
    without the machine's proxy variables and without the checkout on the path."""
    environment = {k: v for k, v in clean_env(env).items() if k != "PYTHONPATH"}
    return run_scrapy([str(exe), *args], env=environment, cwd=cwd, input=stdin, timeout=timeout)


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

