"""The suite's warm starts (tests/zygote.py) give what a new interpreter gives: the same output,
exit code, working folder, environment and stdin, and a process that a signal ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, ZYGOTE, clean_env, run_scrapy, start_scrapy

SHOW = "import os, sys; print(os.getcwd(), os.environ.get('WARM_PROBE'), sys.stdin.read(), sep='|'); sys.exit(3)"


def cold(command: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, **kwargs)


def test_a_warm_scrapy_command_says_and_exits_as_a_cold_one(tmp_path: Path):
    for words in (["version", "-v"], ["crawl", "nosuchspider"], ["list"]):
        command = [sys.executable, "-m", "scrapy", *words]
        assert ZYGOTE.serves(command, clean_env())
        warm, new = run_scrapy(command), cold(command, cwd=ROOT, env=clean_env())
        assert (warm.returncode, warm.stdout) == (new.returncode, new.stdout), words
        assert warm.stderr.splitlines()[-1:] == new.stderr.splitlines()[-1:], words


def test_a_warm_start_has_its_own_folder_environment_stdin_and_pid(tmp_path: Path):
    script = tmp_path / "show.py"
    script.write_text(SHOW)
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "scrapy.cfg").write_text("[settings]\ndefault = dataset_spiders.settings\n")
    command = [sys.executable, "-m", "scrapy", "runspider", str(script)]
    done = run_scrapy(command, env=clean_env({"WARM_PROBE": "yes"}), cwd=probe, input="typed")
    assert done.returncode == 3 and done.stdout.strip() == f"{probe}|yes|typed", done.stderr[-2000:]
    sleeper = tmp_path / "sleep.py"
    sleeper.write_text("import time\ntime.sleep(60)\n")
    child = start_scrapy([sys.executable, "-m", "scrapy", "runspider", str(sleeper)], env=clean_env())
    assert child.pid != os.getpid() and child.poll() is None
    child.send_signal(signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL
