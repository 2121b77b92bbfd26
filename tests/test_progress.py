"""Progress that tells the truth (issue 19, point 6), as a user meets it: the installed
``dataset-spiders`` command, run from a folder outside the checkout, its stderr a pseudo-terminal
(the bar) or a pipe (``Progress:`` lines, or the ``progress-json:`` lines the Python API's parent
reads in a notebook).
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import clean_env, terminal_run, user_run
from tests.emulators import FakePhoto, ImageHost, IsicV2Server, make_archive
from tests.emulators.dead_hosts import DirectHost, SilentNameServer, write_url_list
from tests.test_tool import SlowImageHost

LOG_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[[\w.]+\] [A-Z]+: ")
RATE = re.compile(r"([0-9.]+) ?img/s")
TENCH, GOLDFISH = "n01440764", "n01443537"
JSON_KEYS = {"kept": int, "target": (int, type(None)), "failed": int, "bytes": int, "groups_done": int,
             "groups": (int, type(None)), "hosts_down": int, "elapsed": float, "done": bool}


def on_a_terminal(exe: Path, *args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """The installed command as ``user_run`` runs it, with a 160-column pseudo-terminal as its
    stderr: its exit status and everything it wrote there."""
    environment = {k: v for k, v in clean_env(env).items() if k != "PYTHONPATH"}
    return terminal_run([str(exe), *args], cwd, environment, timeout=60, columns=160)


def frames(screen: str) -> list[str]:
    """Each state the bar was drawn in, in order (tqdm redraws its line after a carriage return)."""
    return [part for line in screen.split("\r\n") for part in line.split("\r") if part.startswith("images:")]


def outside(tmp_path: Path) -> Path:
    where = tmp_path / "user"
    where.mkdir()
    return where


def test_log_lines_print_above_the_bar_never_into_it(installed, tmp_path):
    """A record logged while the bar is shown (here the spider's "2 of 2 classes have 4 images")
    starts a line of its own, and the bar is drawn again below it."""
    with DirectHost(8, delay=0.3) as host:
        listed = write_url_list(tmp_path / "urls.txt", {TENCH: host.urls[:4], GOLDFISH: host.urls[4:]})
        code, screen = on_a_terminal(installed, "imagenet", "--urls-file", str(listed), "--wnids",
                                     f"{TENCH},{GOLDFISH}", "--per-class", "4", "--flickr-only=false",
                                     cwd=outside(tmp_path))
    assert code == 0, screen
    first_bar = screen.index("images:")
    records = [m.start() for m in LOG_RECORD.finditer(screen)]
    during = [at for at in records if at > first_bar]
    assert during, screen  # the run logged while its bar was shown
    for at in records:
        assert at == 0 or screen[at - 1] in "\r\n", repr(screen[max(0, at - 120):at + 60])
    assert "images:" in screen[during[-1]:]  # drawn again after it
    assert "Summary: 8 image(s) in the dataset of the 8 asked for" in screen


def test_rates_start_sane_and_count_only_this_runs_downloads(installed, tmp_path):
    """About ten images a second can come (two at a time, 0.2 s each): no rate on the bar says
    more, not its first, and not on a re-run whose first 20 images are already there."""
    archive = make_archive(30)
    where = outside(tmp_path)
    with SlowImageHost(archive, delay=0.2) as host, IsicV2Server(archive, host) as api:
        args = ("isic", "--api-url", f"{api.url}/api/v2", "-s", "CONCURRENT_REQUESTS=2")
        first = on_a_terminal(installed, *args, "--num-images", "10", cwd=where)
        again = on_a_terminal(installed, *args, "--num-images", "22", cwd=where)
    for code, screen in (first, again):
        assert code == 0, screen
        rates = [float(r) for r in RATE.findall(screen)]
        assert rates and max(rates) < 25, [f for f in frames(screen)]
    assert "(12 downloaded now, 10 already there)" in again[1]


def test_a_stall_says_what_it_waits_on(installed, tmp_path):
    """One image's host accepts and says nothing for 2.5 s while the run needs it: the bar says it
    waits on one download from that host, silent for so long (not "0.00 MB/s")."""
    archive = make_archive(10)
    archive[2].behaviour = "hang"
    with ImageHost(archive) as host, IsicV2Server(archive, host) as api:
        host.hang_seconds = 2.5
        code, screen = on_a_terminal(installed, "isic", "--num-images", "6", "--api-url", f"{api.url}/api/v2",
                                     "-s", "PROGRESS_STALL_AFTER=1", "-s", "RETRY_TIMES=0", cwd=outside(tmp_path))
        netloc = host.url.split("://")[1]
    assert code == 0, screen
    waiting = [f for f in frames(screen) if "waiting" in f]
    assert waiting, frames(screen)
    found = [re.search(r"waiting (\d+)s: 1 download on ([\d.:]+) \(no answer for (\d+)s\)", f) for f in waiting]
    said = next((m for m in found if m), None)  # (a loaded machine may draw more frames once it ended)
    assert said and said[2] == netloc and int(said[1]) >= 1 and int(said[3]) >= 1, waiting
    assert all("MB/s" not in f and "ETA" not in f for f in waiting)
    assert "Summary: 6 image(s) in the dataset of the 6 asked for" in screen


def test_a_run_that_ends_short_ends_its_bar_and_lines_at_the_final_count(installed, tmp_path):
    """goldfish has 2 good URLs for 4 wanted: the bar's last state is 6/8, with no ETA, saying the
    run ended short; piped, the last Progress line says the same."""
    with DirectHost(6, delay=0.3) as host:
        gone = [host.add(FakePhoto(f"{host.url}/gone{i}.jpg", behaviour="404")) for i in range(2)]
        listed = write_url_list(tmp_path / "urls.txt", {TENCH: host.urls[:4],
                                                        GOLDFISH: [*host.urls[4:], *(p.url for p in gone)]})
        args = ("imagenet", "--urls-file", str(listed), "--wnids", f"{TENCH},{GOLDFISH}", "--per-class", "4",
                "--flickr-only=false")
        where = outside(tmp_path)
        code, screen = on_a_terminal(installed, *args, "--out-dir", "tty", cwd=where)
        piped = user_run(installed, *args, "--out-dir", "piped", "-s", "PROGRESS_INTERVAL=0.3", cwd=where)
    assert code == 0 and piped.returncode == 0, screen + piped.stderr
    last = frames(screen)[-1]
    assert " 6/8 " in last and "ETA" not in last and "<" not in last, last
    assert "ended short (1 of 2 classes)" in last, last
    lines = [line for line in piped.stderr.splitlines() if line.startswith("Progress: ")]
    assert lines and lines[-1].startswith("Progress: 6/8 images, 2 failed, "), lines
    assert "ended short (1 of 2 classes)" in lines[-1] and "ETA" not in lines[-1], lines


def test_the_python_apis_child_reports_progress_as_json_lines(installed, tmp_path):
    """With DATASET_SPIDERS_PROGRESS=json the child writes, instead of the bar or Progress lines,
    a progress-json line about every 0.5 s and a last one with done and the final numbers."""
    archive = make_archive(20)
    archive[1].behaviour = "404"
    with SlowImageHost(archive, delay=0.2) as host, IsicV2Server(archive, host) as api:
        run = user_run(installed, "isic", "--num-images", "12", "--api-url", f"{api.url}/api/v2",
                       "-s", "CONCURRENT_REQUESTS=2", "-s", "PROGRESS_INTERVAL=0.3", cwd=outside(tmp_path),
                       env={"DATASET_SPIDERS_PROGRESS": "json"})
    assert run.returncode == 0, run.stderr
    assert "Progress: " not in run.stderr and "\r" not in run.stderr
    said = [json.loads(line.removeprefix("progress-json: ")) for line in run.stderr.splitlines()
            if line.startswith("progress-json: ")]
    assert len(said) >= 3, run.stderr
    for numbers in said:
        assert set(numbers) == set(JSON_KEYS), numbers
        assert all(isinstance(numbers[k], t) for k, t in JSON_KEYS.items()), numbers
    assert [n["done"] for n in said] == [False] * (len(said) - 1) + [True]
    times = [n["elapsed"] for n in said]
    assert times == sorted(times)
    gaps = sorted(b - a for a, b in itertools.pairwise(times[:-1]))  # the last comes when the run ends
    assert gaps and 0.3 <= gaps[len(gaps) // 2] <= 1.0, times  # about every 0.5 s
    last = said[-1]
    assert (last["kept"], last["target"], last["failed"], last["groups"]) == (12, 12, 1, None), last
    assert last["bytes"] > 0 and all(n["kept"] <= 12 for n in said)
    assert "Summary: 12 image(s) in the dataset of the 12 asked for" in run.stderr


def test_no_idle_tail_after_the_last_image(installed, tmp_path):
    """The class's first two candidates are on names whose name server never answers (the system
    resolver gives up after 6 s); the good ones fill the class meanwhile. Those lookups are no
    longer needed: the command ends right after its summary, not when the resolver gives up."""
    dns = SilentNameServer(tmp_path / "dns")
    if why := dns.refusal():
        pytest.skip(why)
    with dns, DirectHost(6, delay=0.1) as host:
        silent = [f"http://photos-{n}.silent-dns.example/{n}.jpg" for n in "ab"]
        listed = write_url_list(tmp_path / "urls.txt", {TENCH: [*silent, *host.urls]})
        command = dns.command([str(installed), "imagenet", "--urls-file", str(listed), "--wnids", TENCH,
                               "--per-class", "3", "--flickr-only=false"])
        environment = {k: v for k, v in clean_env().items() if k != "PYTHONPATH"}
        started = time.monotonic()
        proc = subprocess.Popen(command, cwd=outside(tmp_path), env=environment, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        said, summary_at = [], None
        for line in proc.stderr or ():
            said.append(line)
            if line.startswith("Summary: ") and summary_at is None:
                summary_at = time.monotonic()
        code = proc.wait(timeout=30)
        ended = time.monotonic()
        queries = dns.queries
    assert code == 0 and summary_at is not None, "".join(said)
    assert "Summary: 3 image(s) in the dataset of the 3 asked for" in "".join(said)
    assert queries >= 2  # the two names were looked up, and never answered
    lines = (tmp_path / "user" / "ImageNet" / "manifest.jsonl").read_text().splitlines()
    manifest = [json.loads(line) for line in lines]
    assert {line["url"] for line in manifest if line["outcome"] == "surplus"} >= set(silent)
    assert ended - summary_at < 1.5, f"{ended - summary_at:.1f} s after the summary ({ended - started:.1f} s in all)"
