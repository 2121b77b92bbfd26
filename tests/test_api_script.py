"""The Python API as a user's script meets it (issue 19): an interrupted call ends the crawl it
started and the next call works; a call without a count does not start on the whole archive.

A user's script is run by the installed venv's python from a folder outside the checkout. It is
interrupted (SIGINT, as a notebook's interrupt button or Ctrl-C sends; SIGTERM, as a process
manager sends; SIGKILL, as a restarted kernel gets) while its crawl downloads; then no process
whose command line names the dataset is left (``/proc`` is walked), the script ended by the
signal, and a second call finishes the dataset.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.conftest import clean_env, looking_every
from tests.emulators import IsicV2Server, make_archive
from tests.test_tool import SlowImageHost, terminal_session

pytestmark = pytest.mark.cold_start  # it reads the command lines of the processes it starts

SCRIPT = """
import sys
from dataset_spiders import download_isic

summary = download_isic(num_images=int(sys.argv[1]), api_url=sys.argv[2], out_dir=sys.argv[3],
                        CONCURRENT_REQUESTS=2)
print("images", summary.images, summary.outcomes)
"""


@pytest.fixture(scope="module")
def archive():
    return make_archive(8)


@pytest.fixture(scope="module")
def slow_world(archive) -> Iterator[tuple[SlowImageHost, str]]:
    with SlowImageHost(archive, delay=0.4) as host, IsicV2Server(archive, host) as api:
        yield host, f"{api.url}/api/v2"


@pytest.fixture
def slow_api(slow_world) -> Iterator[str]:
    """The v2 API with an image host that takes 0.4 s per image: a run long enough to interrupt."""
    host, url = slow_world
    host.delay = 0.4
    yield url
    host.delay = 0.4


def user_env() -> dict[str, str]:
    return {k: v for k, v in clean_env().items() if k not in ("PYTHONPATH", "ISIC_TOKEN")}


def processes_naming(folder: Path) -> dict[int, str]:
    """Every live process whose command line names ``folder``, by pid (zombies have none)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            words = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        if any(str(folder).encode() in word for word in words):
            found[int(entry)] = b" ".join(words).decode(errors="replace")
    return found


def run_script(installed: Path, home: Path, *args: str) -> subprocess.Popen[str]:
    script = home / "get.py"
    script.write_text(SCRIPT)
    return subprocess.Popen([str(installed.parent / "python"), str(script), *args], cwd=home, env=user_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_call_ends_its_crawl_and_the_next_call_works(signum, installed, slow_api, tmp_path):
    """SIGINT and SIGTERM are caught: the crawl is stopped and waited for before the script ends."""
    home = tmp_path / "user"
    home.mkdir()
    out = home / "Lesions"
    err = interrupt_mid_crawl(installed, home, slow_api, out, signum)
    left = processes_naming(out)
    end_all(left)
    assert left == {}, left
    assert "error: interrupted; run the same command again" in err, err[-3000:]  # it stopped gracefully
    assert ("KeyboardInterrupt" in err) == (signum == signal.SIGINT)
    second_call_finishes(installed, home, slow_api, out)


def test_a_killed_caller_s_crawl_stops_by_itself(installed, slow_world, slow_api, tmp_path):
    """SIGKILL cannot be caught (a notebook's kernel restarted, a ``kill -9``): the crawl gets
    SIGINT as its parent dies (PR_SET_PDEATHSIG) and stops gracefully by itself, long before the
    40 s its downloads would take (the wait below only bounds a hang)."""
    home = tmp_path / "user"
    home.mkdir()
    out = home / "Lesions"
    slow_world[0].delay = 10.0
    interrupt_mid_crawl(installed, home, slow_api, out, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while processes_naming(out) and time.monotonic() < deadline:
        time.sleep(0.1)  # nobody waits for the crawl: it stops on its own
    left = processes_naming(out)
    end_all(left)
    assert left == {}, left
    slow_world[0].delay = 0.4
    second_call_finishes(installed, home, slow_api, out)


def interrupt_mid_crawl(installed: Path, home: Path, api: str, out: Path, signum: int) -> str:
    """Start the user's script, send it ``signum`` once its crawl runs (its process is up and it
    has begun its manifest); what the script wrote on stderr. It must end by the signal."""
    script = run_script(installed, home, "8", api, str(out))
    try:
        deadline = time.monotonic() + 60
        while not (out / "manifest.jsonl").exists() or not [
                pid for pid, line in processes_naming(out).items() if pid != script.pid]:
            assert script.poll() is None and time.monotonic() < deadline, script.communicate()
            time.sleep(0.05)
        os.kill(script.pid, signum)
        _, err = script.communicate(timeout=60)
    finally:
        if script.poll() is None:
            script.kill()
    assert script.returncode == -signum, err[-3000:]  # the script ended by the signal, as it would have
    return err


def end_all(pids: dict[int, str]) -> None:
    """(No stray crawl for the other tests to trip on.)"""
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def second_call_finishes(installed: Path, home: Path, api: str, out: Path) -> None:
    again = run_script(installed, home, "8", api, str(out))
    stdout, err = again.communicate(timeout=90)
    assert again.returncode == 0, err[-3000:]
    assert stdout.startswith("images 8 "), stdout
    assert "in use by process" not in err
    assert len(list((out / "Images").glob("*.jpg"))) == 8


COUNTLESS = """
import sys
from dataset_spiders import DownloadError, download_isic

for narrowed in ({}, {"splits": ["train:80", "test:20"], "filter": "benign"}):  # (values as Python gives them)
    try:
        download_isic(api_url=sys.argv[1], out_dir="Whole", echo=False, **narrowed)
    except DownloadError as exc:
        print("DownloadError:", exc)
summary = download_isic(api_url=sys.argv[1], out_dir="Whole", all=True, echo=False)
print("images", summary.images)
"""


def test_a_call_without_a_count_wants_all_true(installed, slow_api, tmp_path):
    """The API is never on a terminal, so it cannot ask: without ``num_images`` or ``per_label``
    it raises, before starting anything, unless ``all=True`` says the whole selection is meant."""
    home = tmp_path / "user"
    home.mkdir()
    (home / "get.py").write_text(COUNTLESS)
    done = subprocess.run([str(installed.parent / "python"), str(home / "get.py"), slow_api], cwd=home,
                          env=user_env(), capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == lines[1] == (
        "DownloadError: isic: no num_images or per_label: this call would download every matching image (without "
        "filter, query or collections, the whole archive); give all=True to mean it, or num_images=N (dry_run=True "
        "says how many match)")
    assert lines[2] == "images 8"


def test_the_api_asks_its_crawl_for_progress_numbers_only_where_it_can_draw_them(installed, slow_api, tmp_path):
    """A user's script at a terminal: its crawl is given ``DATASET_SPIDERS_PROGRESS=json`` (the
    numbers the API draws as a bar) and no ``progress-json:`` line reaches the screen; the same
    script writing to a file: the crawl is not asked (its own ``Progress:`` lines pass through)."""
    home = tmp_path / "user"
    home.mkdir()
    (home / "get.py").write_text(SCRIPT)
    python = str(installed.parent / "python")
    with progress_asked_of(home / "Tty") as terminal:
        session = terminal_session([python, str(home / "get.py"), "8", slow_api, str(home / "Tty")], home,
                                   user_env())
    assert session.code == 0, session.screen[-3000:]
    assert terminal == ["json"] and "progress-json" not in session.screen
    assert "Summary: 8 image(s)" in session.screen
    with progress_asked_of(home / "Piped") as piped:
        run = subprocess.run([python, str(home / "get.py"), "8", slow_api, str(home / "Piped")], cwd=home,
                             env=user_env(), capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr[-3000:]
    assert piped == [None] and "progress-json" not in run.stderr


@contextmanager
def progress_asked_of(out: Path) -> Iterator[list[str | None]]:
    """While the block runs, the DATASET_SPIDERS_PROGRESS in the environment of the first crawl
    process whose command line names ``out`` (in the list yielded, once seen)."""
    seen: list[str | None] = []

    def look() -> None:
        for pid, line in processes_naming(out).items() if not seen else ():
            if "dataset_spiders" in line:
                with suppress(OSError):
                    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
                    seen.append(dict(p.partition("=")[::2] for p in pairs if "=" in p).get("DATASET_SPIDERS_PROGRESS"))
                    return

    with looking_every(0.02, look):
        yield seen
