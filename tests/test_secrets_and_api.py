"""Secrets that stay secret, and a Python API its values cannot steer (issue 18).

A token or a password, in every form it can be given, is in no file a run writes (``.lock``,
``dataset.json``, ``report.html``, anything else), not in its log and not on a command line the
API starts; ``.lock`` is private (0600) while a run holds the dataset and gone after. Each value
the API is given reaches the command as the value of its own option, so none becomes an option,
and a value the command rejects is a ``DownloadError`` with the command's reason.

The runs are the installed command (the ``installed`` fixture), started from a folder outside
the checkout, as a user starts them.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dataset_spiders import DownloadError, download_isic
from tests.conftest import clean_env, looking_every, user_run
from tests.emulators import ImageHost, IsicV2Server, make_archive
from tests.redis_server import RedisServer
from tests.test_tool import SlowImageHost

pytestmark = pytest.mark.cold_start  # it reads the command lines of the processes it starts

TOKEN = "tok-5ecret-0a1b2c3d4e"
PASSWORD = "pw-5ecret-9f8e7d6c"  # the Redis password (and the one in a URL given as api_url)
USER_PASSWORD = "pw-0f-alice-31415"  # the password of a Redis ACL user
HIDDEN = "(given; not recorded)"


class PrivateRedis(RedisServer):
    """A redis-server that wants a password (``requirepass``), and an ACL user ``alice`` with one."""

    def command(self) -> list[str]:
        return [*super().command(), "--requirepass", PASSWORD,
                "--user", "alice", "on", f">{USER_PASSWORD}", "~*", "&*", "+@all"]

    def client(self, timeout: float = 1.0):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, db=0, password=PASSWORD, socket_timeout=timeout,
                           socket_connect_timeout=timeout)


@pytest.fixture(scope="module")
def archive():
    return make_archive(6)


@pytest.fixture(scope="module")
def slow_api(archive) -> Iterator[str]:
    """The v2 API (which knows TOKEN) with an image host that takes 0.6 s per image."""
    with SlowImageHost(archive, delay=0.6) as host, IsicV2Server(archive, host, tokens={TOKEN}) as api:
        yield f"{api.url}/api/v2"


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


def files_holding(root: Path, *secrets: str) -> list[str]:
    """Every file under ``root`` (any name, any content: bytes) that holds one of ``secrets``."""
    found = []
    for path in sorted(root.rglob("*")) if root.exists() else []:
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path.relative_to(root)}: {s}" for s in secrets if s.encode() in data]
    return found


@dataclass
class Watched:
    """What a watcher saw while runs went on: each ``.lock`` (its mode and text) and the command
    line of every process the watched one started."""

    locks: dict[Path, list[tuple[int, str]]] = field(default_factory=dict)
    command_lines: list[str] = field(default_factory=list)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@contextmanager
def watching(roots: list[Path], parent: int | None = None) -> Iterator[Watched]:
    """Look every 10 ms at ``root/.lock`` of each root and at the command lines of the processes
    below ``parent`` (this process by default), until the block ends."""
    seen = Watched()

    def look() -> None:
        for root in roots:
            lock = root / ".lock"
            try:
                mode, text = stat.S_IMODE(lock.lstat().st_mode), lock.read_text(errors="replace")
            except OSError:
                continue
            seen.locks.setdefault(root, []).append((mode, text))
        for pid in descendants(parent or os.getpid()):
            with suppress(OSError):
                seen.command_lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                                          .decode(errors="replace"))

    with looking_every(0.01, look):
        yield seen


def user_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a user's shell gives the installed command (no ISIC_TOKEN unless asked)."""
    return {k: v for k, v in clean_env(extra).items() if k != "PYTHONPATH"
            and (k != "ISIC_TOKEN" or k in (extra or {}))}


def test_a_token_or_a_password_in_any_form_is_in_no_file_no_log_and_no_lock_left(
        installed, slow_api, redis_with_password, tmp_path):
    """Every way a token (and a password in REDIS_URL) can be given, each in a run of its own,
    the runs side by side."""
    home = tmp_path / "user"
    home.mkdir()
    port = redis_with_password.port
    forms: dict[str, tuple[str, list[str], dict[str, str]]] = {  # the command, its words, its environment
        "-a token=X": ("scrapy", ["-a", f"token={TOKEN}"], {}),
        "-atoken=X": ("scrapy", [f"-atoken={TOKEN}", "-L", "DEBUG", "--logfile", str(home / "crawl.log")], {}),
        "-s ISIC_TOKEN=X": ("scrapy", ["-s", f"ISIC_TOKEN={TOKEN}"], {}),
        "-sISIC_TOKEN=X": ("scrapy", [f"-sISIC_TOKEN={TOKEN}"], {}),
        "--set=ISIC_TOKEN=X": ("scrapy", [f"--set=ISIC_TOKEN={TOKEN}"], {}),
        "--token X": ("console", ["--token", TOKEN], {}),
        "--token=X": ("console", [f"--token={TOKEN}"], {}),
        "--set ISIC_TOKEN=X": ("console", ["--set", f"ISIC_TOKEN={TOKEN}"], {}),
        "ISIC_TOKEN in the environment": ("console", [], {"ISIC_TOKEN": TOKEN}),
        "REDIS_URL redis://:pw@": ("console", ["--verbose", "--token", TOKEN, "-s",
                                               f"REDIS_URL=redis://:{PASSWORD}@127.0.0.1:{port}/0"], {}),
        "REDIS_URL redis://user:pw@": ("scrapy", ["-a", f"token={TOKEN}",
                                                  f"--set=REDIS_URL=redis://alice:{USER_PASSWORD}@127.0.0.1:{port}/1"],
                                       {}),
    }
    runs: dict[str, tuple[subprocess.Popen[str], Path]] = {}
    roots = [home / f"D{i}" for i in range(len(forms))]
    with watching(roots) as seen:
        for (name, (kind, words, env)), root in zip(forms.items(), roots, strict=True):
            if kind == "scrapy":  # `scrapy crawl`, the project's own command, with the installed package
                command = [str(installed.parent / "python"), "-m", "scrapy", "crawl", "isic", *words,
                           "-a", f"out_dir={root}", "-a", f"api_url={slow_api}", "-a", "num_images=2"]
                env = {**env, "SCRAPY_SETTINGS_MODULE": "dataset_spiders.settings"}
            else:
                command = [str(installed), "isic", *words, "--out-dir", str(root), "--api-url", slow_api,
                           "--num-images", "2"]
            runs[name] = subprocess.Popen([*command, "-s", "CONCURRENT_REQUESTS=4"], cwd=home, env=user_env(env),
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True), root
        logs = {name: proc.communicate(timeout=120)[1] for name, (proc, _) in runs.items()}
    secrets = (TOKEN, PASSWORD, USER_PASSWORD)
    problems = []  # every form's, at once
    for name, (proc, root) in runs.items():
        log = logs[name]
        if proc.returncode != 0 or len(list((root / "Images").glob("*.jpg"))) != 2:
            problems.append(f"{name}: exit {proc.returncode}: {log[-2000:]}")
            continue
        problems += [f"{name}: {where}" for where in files_holding(root, *secrets)]
        problems += [f"{name}: in the log: {line}" for line in log.splitlines() if any(s in line for s in secrets)]
        if (root / ".lock").exists():
            problems.append(f"{name}: .lock is left after the run")
        if "REDIS_URL" in name:
            if "Worker " not in log:
                problems.append(f"{name}: the run did not work through Redis: {log}")
            continue  # workers share the dataset's lock and write no .lock
        notes = seen.locks.get(root) or []
        if not notes or {mode for mode, _ in notes} != {0o600}:
            problems.append(f"{name}: .lock while the run holds the dataset: {sorted({oct(m) for m, _ in notes})}")
        problems += [f"{name}: in .lock: {note}" for _, note in notes[:1] if any(s in note for s in secrets)]
        run = json.loads((root / "dataset.json").read_text())["runs"][-1]
        if "ISIC_TOKEN" not in name and run["arguments"]["token"] != HIDDEN:  # (the setting leaves it empty)
            problems.append(f"{name}: the token argument is recorded as {run['arguments']['token']!r}")
        if "environment" not in name and not any(HIDDEN in word for word in run["command"]):
            problems.append(f"{name}: the command recorded has no hidden value: {run['command']}")
    log_file = (home / "crawl.log").read_text()
    assert "Overridden settings" in log_file and "Crawled (200)" in log_file  # (-L DEBUG)
    problems += [f"--logfile: {line}" for line in log_file.splitlines() if any(s in line for s in secrets)]
    assert not problems, "\n".join(problems)


def test_the_python_api_passes_no_secret_on_a_command_line(installed, slow_api, redis_with_password, tmp_path):
    """A user's script calls download_isic with a token, with the token as a setting and a
    REDIS_URL holding a password, and with an api_url holding one: while each child runs, no
    process below the script has either on its command line."""
    home = tmp_path / "user"
    home.mkdir()
    redis_url = f"redis://:{PASSWORD}@127.0.0.1:{redis_with_password.port}/2"
    script = home / "get.py"
    script.write_text(f"""
from dataset_spiders import DownloadError, download_isic

first = download_isic(num_images=2, token={TOKEN!r}, api_url={slow_api!r}, out_dir="A", CONCURRENT_REQUESTS=4)
second = download_isic(num_images=2, api_url={slow_api!r}, out_dir="B",
                       settings={{"ISIC_TOKEN": {TOKEN!r}, "REDIS_URL": {redis_url!r}}})
print(first.images, second.images)
try:
    download_isic(num_images=1, api_url="http://alice:{PASSWORD}@127.0.0.1:9/api/v2", out_dir="C", RETRY_TIMES=0)
except DownloadError as exc:
    print("DownloadError:", exc)
""")
    python = installed.parent / "python"
    proc = subprocess.Popen([str(python), str(script)], cwd=home, env=user_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with watching([home / "A", home / "B"], parent=proc.pid) as seen:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    children = {line for line in seen.command_lines if "dataset_spiders" in line}
    assert len(children) >= 3, seen.command_lines  # each call's child was seen
    assert not [line for line in children if TOKEN in line or PASSWORD in line], children
    lines = out.splitlines()
    assert lines[0] == "2 2", out
    assert lines[1].startswith("DownloadError: cannot fetch the search page http://alice:***@127.0.0.1:9/"), out
    assert files_holding(home / "A", TOKEN, PASSWORD) == [] and files_holding(home / "B", TOKEN, PASSWORD) == []
    assert TOKEN not in out + err and PASSWORD not in out + err
    assert "Worker " in err  # the second run worked through the Redis that wants the password
    assert not (home / "A" / ".lock").exists() and not (home / "C").exists()
    assert {mode for mode, _ in seen.locks[home / "A"]} == {0o600}
    assert not [note for _, note in seen.locks[home / "A"] if TOKEN in note]


def test_the_report_hides_secrets_an_earlier_version_recorded(installed, slow_api, tmp_path):
    """dataset.json written by an earlier version may hold a token (``-atoken=…``) or a password
    (REDIS_URL): report.html shows neither."""
    home = tmp_path / "user"
    home.mkdir()
    run = user_run(installed, "isic", "--num-images", "1", "--api-url", slow_api, cwd=home)
    assert run.returncode == 0, run.stderr
    path = home / "ISIC" / "dataset.json"
    data = json.loads(path.read_text())
    redis_url = f"redis://:{PASSWORD}@10.0.0.1:6379/0"
    data["runs"][-1].update(
        command=["scrapy", "crawl", "isic", f"-atoken={TOKEN}", "-a", f"token={TOKEN}", f"-sISIC_TOKEN={TOKEN}",
                 "--set", f"ISIC_TOKEN={TOKEN}", "-s", f"REDIS_URL={redis_url}", "--token", TOKEN],
        arguments={**data["runs"][-1]["arguments"], "token": TOKEN, "api_url": f"https://u:{PASSWORD}@api.example"},
        settings={"ISIC_TOKEN": TOKEN, "REDIS_URL": redis_url},
        exit_status=1, error=f"Redis at {redis_url} refused this worker: invalid password",
    )
    path.write_text(json.dumps(data))
    report = user_run(installed, "report", str(home / "ISIC"), cwd=home)
    assert report.returncode == 0, report.stderr
    page = (home / "ISIC" / "report.html").read_text()
    assert TOKEN not in page and PASSWORD not in page
    assert "-atoken=" in page and "redis://:***@10.0.0.1:6379/0" in page  # shown, without the secret


def test_python_api_values_cannot_become_options(isic_api, archive, installed, tmp_path, monkeypatch):
    """Each value is the value of its own option: one that looks like an option is refused by the
    command with its reason (DownloadError), a negated query is a query; setting names must look
    like settings, and a NUL byte is a DownloadError."""
    monkeypatch.chdir(tmp_path)
    for var in [k for k in os.environ if k.lower().endswith("_proxy")]:
        monkeypatch.delenv(var)
    elsewhere = tmp_path / "elsewhere"
    with pytest.raises(DownloadError, match=r"^isic: strict: expected true or false, got '--images-dir="):
        download_isic(num_images=2, api_url=isic_api, strict=f"--images-dir={elsewhere}", echo=False)
    with pytest.raises(DownloadError, match=r"^isic: no_images: expected true or false, got '-sredis_url="):
        download_isic(num_images=2, api_url=isic_api, no_images="-sREDIS_URL=redis://127.0.0.1:9/0", echo=False)
    assert not elsewhere.exists() and not (tmp_path / "ISIC").exists()
    benign = download_isic(api_url=isic_api, query="-diagnosis_1:Malignant", out_dir="Benign", all=True, echo=False)
    assert sorted(p.name for p in benign.images_dir.glob("*.jpg")) == sorted(
        f"{img.isic_id}.jpg" for img in archive if img.diagnosis_1 != "Malignant")
    for settings in ({"-L": "DEBUG"}, {"lower_case": "1"}, {"TWO WORDS": "1"}, {"OK=NOT": "1"}):
        with pytest.raises(DownloadError, match="not a setting name"):
            download_isic(num_images=1, api_url=isic_api, settings=settings, echo=False)
    with pytest.raises(DownloadError, match="NUL"):
        download_isic(num_images=1, api_url=isic_api, query="a\0b", echo=False)
    with pytest.raises(DownloadError, match="NUL"):
        download_isic(num_images=1, api_url=isic_api, RETRY_TIMES="1\0", echo=False)
    console = user_run(installed, "isic", "--num-images", cwd=tmp_path)
    assert console.returncode == 2
    assert console.stderr.splitlines() == ["error: isic: argument --num-images/--num_images: expected one argument"]


@pytest.fixture
def isic_api(archive) -> Iterator[str]:
    with ImageHost(archive) as host, IsicV2Server(archive, host) as api:
        yield f"{api.url}/api/v2"


def test_setting_names_and_values_reach_the_child_as_their_own_options():
    """The child's command line for a call (no process started): ``--name=value`` and
    ``--set=NAME=VALUE``; secrets go through its environment."""
    from dataset_spiders.api import child_command

    argv, env = child_command("isic", {"query": "-diagnosis_1:Malignant", "token": TOKEN, "num_images": 3,
                                       "RETRY_TIMES": 0}, {"REDIS_URL": f"redis://:{PASSWORD}@h:6379/0"})
    assert argv[1:] == ["-m", "dataset_spiders", "isic", "--query=-diagnosis_1:Malignant", "--num_images=3",
                        "--set=RETRY_TIMES=0"]
    assert env["ISIC_TOKEN"] == TOKEN
    assert json.loads(env["DATASET_SPIDERS_SETTINGS"]) == {"REDIS_URL": f"redis://:{PASSWORD}@h:6379/0"}
    assert argv[0] == sys.executable


def test_a_recorded_command_line_hides_every_form_of_a_secret():
    """The forms argparse also accepts (``--se=…``, ``--tok …``), other secret settings, and a URL's
    password however it is spelled; everything else is left as it was given."""
    from dataset_spiders.secrets import redacted_command

    given = ["scrapy", "crawl", "isic", "--se=ISIC_TOKEN=T1", "--tok", "T2", "-s", "AWS_SECRET_ACCESS_KEY=T3",
             "-a", "api_url=https://u:T4@h/api", "--set=REDIS_URL=redis://:T5@T5@h:6379/0", "https://T6@github.com/x",
             "-a", "query=-diagnosis_1:Malignant", "-a", "out_dir=a=b"]
    assert redacted_command(given) == [
        "scrapy", "crawl", "isic", f"--se=ISIC_TOKEN={HIDDEN}", "--tok", HIDDEN,
        "-s", f"AWS_SECRET_ACCESS_KEY={HIDDEN}",
        "-a", "api_url=https://u:***@h/api", "--set=REDIS_URL=redis://:***@h:6379/0", "https://***@github.com/x",
        "-a", "query=-diagnosis_1:Malignant", "-a", "out_dir=a=b"]
