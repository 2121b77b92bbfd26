"""The tool as a new user meets it: installed with pip and run from an empty folder, its --help,
the Python API called twice in one process (and under a running asyncio loop, as in a
notebook), the progress bar on a terminal and plain progress lines elsewhere, and a quiet log."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataset_spiders import DownloadError, download_isic
from dataset_spiders.cli import build_parser, default_text, option_names, spider_models
from tests.conftest import ROOT, clean_env, terminal_run, user_run
from tests.emulators import ImageHost, IsicV2Server, make_archive


@pytest.fixture(scope="module")
def archive():
    records = make_archive(30)
    records[3].behaviour = "404"
    records[7].behaviour = "html"
    return records


@pytest.fixture
def isic(archive):
    with ImageHost(archive) as host, IsicV2Server(archive, host) as api:
        yield f"{api.url}/api/v2"


def console(*args: str, cwd: Path, exe: str | None = None, env: dict | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command = [exe] if exe else [sys.executable, "-m", "dataset_spiders"]
    env = (env or {}) | ({} if exe else {"PYTHONPATH": str(ROOT)})  # the checkout, not installed here
    return subprocess.run([*command, *args], cwd=cwd, env=clean_env(env), capture_output=True, text=True,
                          timeout=timeout)


def test_pip_install_gives_a_command_that_works_from_an_empty_folder(isic, installed, tmp_path):
    """A fresh virtualenv (the project's dependencies seen through a .pth, so nothing is
    downloaded), ``pip install --no-deps --no-build-isolation`` of a copy of the checkout
    (the ``installed`` fixture)."""
    exe = str(installed)
    where = _mkdir(tmp_path / "empty")
    run = console("isic", "--num-images", "4", "--api_url", isic, "-s", "CONCURRENT_REQUESTS=4", cwd=where, exe=exe)
    assert run.returncode == 0, run.stderr
    images = sorted(p.name for p in (where / "ISIC" / "Images").iterdir() if p.suffix == ".jpg")
    assert len(images) == 4 and (where / "ISIC" / "manifest.jsonl").exists()
    assert f"into {where / 'ISIC'}" in run.stderr and "no active project" not in run.stderr
    assert run.stdout == ""  # nothing on stdout: piping works
    verify = console("verify", str(where / "ISIC"), cwd=where, exe=exe)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("spider", ["isic", "imagenet"])
def test_help_lists_every_argument_with_its_meaning_and_default(spider, installed, tmp_path):
    """The installed command's help, from a folder outside the checkout: a description in words
    (it was the model's dataclass repr), and for every argument each spelling, what it takes
    (``N|all``, ``{benign,malignant,indeterminate}``, ``[true|false]``, not ``VALUE``), its
    meaning, the kind of value in words unless its choices say it, and its default."""
    run = user_run(installed, spider, "--help", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    text = " ".join(run.stdout.split())  # argparse wraps lines
    model = spider_models()[spider]
    assert " ".join(inspect.cleandoc(model.__doc__).split()) in text
    assert "Params(" not in text and "VALUE" not in text.replace("NAME=VALUE", "").replace("--NAME VALUE", "")
    for field in dataclasses.fields(model):
        parse = field.metadata["parse"]
        options = [o for n in (field.name, *field.metadata.get("aliases", ())) for o in option_names(n)]
        value = f"[{parse.metavar}]" if isinstance(field.default, bool) else parse.metavar
        assert f"{', '.join(options)} {value}" in text, field.name
        assert parse.metavar != "VALUE" and (not parse.choices or parse.metavar == "{" + ",".join(parse.choices) + "}")
        meaning = " ".join(field.metadata["help"].replace("`", "").split())
        kind = "" if parse.choices else f"{parse.kind}; "
        assert f"{meaning} ({kind}default: {default_text(field)})" in text, field.name
    assert "-s, --set NAME=VALUE" in text and "--verbose" in text and "examples: dataset-spiders " in text


def test_every_command_has_its_own_help_and_the_tool_a_version(installed, tmp_path):
    """``verify --help`` and ``report --help`` printed Scrapy's usage (``--pdb``, ``--profile``,
    ``scrapy verify``); there was no ``--version``. Now each command explains itself, a wrong
    option is one line naming the command, and the options still reach the same code."""
    from dataset_spiders import __version__

    where = _mkdir(tmp_path / "user")
    top = user_run(installed, "--help", cwd=where)
    assert top.returncode == 0 and all(name in top.stdout for name in ("isic", "imagenet", "verify", "report"))
    version = user_run(installed, "--version", cwd=where)
    assert version.returncode == 0 and version.stdout.startswith(f"dataset-spiders {__version__} (Scrapy 2.")
    bare = user_run(installed, cwd=where)
    assert bare.returncode == 2 and bare.stderr.startswith("error: give a command: isic, imagenet, verify, report")
    helps = {command: user_run(installed, command, "--help", cwd=where) for command in ("verify", "report")}
    for command, run in helps.items():
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith(f"usage: dataset-spiders {command} "), run.stdout
        for scrapys in ("--pdb", "--profile", "--pidfile", "--nolog", "scrapy ", "Global Options"):
            assert scrapys not in run.stdout, (command, scrapys)
        for ours in ("DIR", "--images-dir, --images_dir FOLDER", "--seg-dir", "-s, --set NAME=VALUE", "examples:"):
            assert ours in run.stdout, (command, ours)
    assert "--fix" in helps["verify"].stdout and "--fix" not in helps["report"].stdout
    wrong = user_run(installed, "verify", "--pdb", "ISIC", cwd=where)
    assert (wrong.returncode, wrong.stderr) == (2, "error: verify: unrecognized arguments: --pdb\n")
    none = user_run(installed, "report", cwd=where)
    assert (none.returncode, none.stderr) == (2, "error: report: the following arguments are required: DIR\n")
    bad = user_run(installed, "report", "-s", "REPORT_THUMBNAIL_SIZE=big", "ISIC", cwd=where)  # a setting read
    assert bad.returncode == 2 and bad.stderr.startswith("error: setting REPORT_THUMBNAIL_SIZE: expected a whole")
    odd = user_run(installed, "verify", "--fix", "--images-dir", str(where / "elsewhere"), "-L", "DEBUG", "--", "-x",
                   cwd=where)  # a folder named like an option, after --
    assert (odd.returncode, odd.stderr.strip()) == (2, "error: no manifest.jsonl in ./-x"), odd.stderr


def test_both_spellings_and_settings_reach_the_crawl_command():
    from dataset_spiders.cli import scrapy_argv

    parser = build_parser()
    for spelling in ("--num-images", "--num_images"):
        args = parser.parse_args(["isic", spelling, "7", "--filter", "benign", "-s", "RETRY_TIMES=0"])
        argv = scrapy_argv(args, spider_models()["isic"])
        assert argv == ["scrapy", "crawl", "isic", "-a", "num_images=7", "-a", "filter=benign", "-s", "RETRY_TIMES=0"]
    args = parser.parse_args(["isic", "--no-images"])  # a flag alone means true
    assert "no_images=true" in scrapy_argv(args, spider_models()["isic"])


def test_the_python_api_runs_twice_in_one_process_and_under_a_running_loop(isic, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in [k for k in os.environ if k.lower().endswith("_proxy")]:
        monkeypatch.delenv(var)
    first = download_isic(num_images=3, api_url=isic, out_dir="ISIC", echo=False)
    assert first.exit_status == 0 and first.images == 3 and first.outcomes == {"kept": 3}
    assert first.out_dir == tmp_path / "ISIC" and first.manifest.exists()
    assert len(list(first.images_dir.glob("*.jpg"))) == 3

    async def notebook_cell():  # a notebook's loop is running while the cell calls the API
        return download_isic(num_images=5, api_url=isic, out_dir="ISIC", echo=False, RETRY_TIMES=0)

    second = asyncio.run(notebook_cell())
    assert second.images == 5 and second.outcomes.get("present") == 3 and second.outcomes.get("kept") == 2
    with pytest.raises(DownloadError) as failed:
        download_isic(num_images=2, api_url="http://127.0.0.1:9/api/v2", out_dir="gone", echo=False,
                      settings={"RETRY_TIMES": 0})
    assert str(failed.value).startswith("cannot fetch the search page http://127.0.0.1:9/api/v2/")
    assert "\n" not in str(failed.value) and not (tmp_path / "gone").exists()
    with pytest.raises(DownloadError, match="unknown argument 'num_imgs'"):
        download_isic(num_imgs=2)


class SlowImageHost(ImageHost):
    """The image host, answering each image after ``delay`` seconds (a run long enough to watch)."""

    def __init__(self, fake_images, delay: float) -> None:
        self.delay = delay
        super().__init__(fake_images)

    def _image(self, req) -> None:
        self._stopping.wait(self.delay)
        super()._image(req)


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere(archive, tmp_path):
    with SlowImageHost(archive, delay=0.15) as host, IsicV2Server(archive, host) as api:
        args = ("isic", "--num-images", "12", "--api-url", f"{api.url}/api/v2", "-s", "CONCURRENT_REQUESTS=2",
                "-s", "PROGRESS_INTERVAL=0.3")
        piped = console(*args, "--out-dir", str(tmp_path / "piped"), cwd=tmp_path)
        assert piped.returncode == 0, piped.stderr
        lines = [line for line in piped.stderr.splitlines() if line.startswith("Progress: ")]
        assert len(lines) >= 2 and "/12 images" in lines[0] and " failed, " in lines[0] and "MB/s" in lines[0]
        assert "\r" not in piped.stderr
        screen = on_a_terminal([sys.executable, "-m", "dataset_spiders", *args, "--out-dir", str(tmp_path / "tty")],
                               cwd=tmp_path)
    assert "images:" in screen and "12/12" in screen and "\r" in screen  # tqdm redraws its line
    assert "Progress: " not in screen and "Summary: 12 image(s)" in screen


def on_a_terminal(command: list[str], cwd: Path, timeout: float = 90) -> str:
    """Run ``command`` with a pseudo-terminal as its stderr; everything it wrote there."""
    code, screen = terminal_run(command, cwd, clean_env({"COLUMNS": "120", "PYTHONPATH": str(ROOT)}), timeout)
    assert code == 0
    return screen


def test_the_default_log_is_quiet_and_the_summary_shows_at_any_level(isic, tmp_path):
    run = console("isic", "--num-images", "20", "--api-url", isic, "-s", "RETRY_TIMES=0", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    for chatter in ("Scrapy 2.", "Overridden settings", "Enabled extensions", "Dumping Scrapy stats",
                    "finish_reason", "Spider closed", "Crawled 0 pages", "Traceback"):
        assert chatter not in run.stderr, chatter
    assert " ERROR: " not in run.stderr  # a 404 and an HTML page are outcomes, not errors
    assert len(run.stderr.splitlines()) <= 12, run.stderr
    assert "Summary: 20 image(s) in the dataset of the 20 asked for" in run.stderr
    assert "Outcomes (images): http_404 1, kept 20, not_image 1" in run.stderr
    quiet = console("isic", "--num-images", "21", "--api-url", isic, "-L", "WARNING", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert ("Summary: 21 image(s) in the dataset of the 21 asked for (1 downloaded now, 20 already there)"
            in quiet.stderr)
    verbose = console("isic", "--num-images", "21", "--api-url", isic, "--verbose", cwd=tmp_path)
    assert "Dumping Scrapy stats" in verbose.stderr and "Enabled extensions" in verbose.stderr


def test_a_run_failing_before_its_first_image_leaves_nothing_behind(tmp_path):
    run = console("isic", "--all", "--api-url", "http://127.0.0.1:9/api/v2", "-s", "RETRY_TIMES=0", cwd=tmp_path)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith("error: cannot fetch the search page http://127.0.0.1:9/api/v2/")
    assert sum("cannot fetch" in line for line in lines) == 1, run.stderr  # said once
    assert os.listdir(tmp_path) == []


def test_a_dry_run_says_what_would_be_fetched_and_touches_nothing(isic, archive, tmp_path):
    from tests.emulators.imagenet import GeturlsServer, PhotoHosts, make_classes

    run = console("isic", "--num-images", "10", "--filter", "benign", "--api-url", isic, "--dry-run", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    benign = [r for r in archive if r.diagnosis_1 == "Benign"]
    size = sum(len(r.body) for r in benign)
    expected = round(size * 10 / len(benign))
    kb = f"{expected / 1024:.0f} KB"
    images = tmp_path / "ISIC" / "Images"
    assert run.stdout == (f"Dry run: isic: {len(benign)} image(s) match diagnosis_1:Benign ({size / 1024:.0f} KB for "
                          f"all {len(benign)}); the run would keep 10, about {kb}, into {images}\n")
    classes = make_classes(2, 5, seed=4, failure_rate=0.0)
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        dry = console("imagenet", "--wnids", ",".join(classes), "--per-class", "8", "--dry-run",
                      "--api-url", api.geturls_url("x").split("?")[0], cwd=tmp_path, env=hosts.proxy_env())
        assert hosts.url_log == []  # no image fetched
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[1:3] == [f"{wnid}: 5 candidate URL(s)" for wnid in classes]
    assert lines[3].startswith("In all: 10 candidate URL(s); at most 10 image(s) would be kept (2 class(es) have "
                               "fewer than 8 candidates), about 1.0 MB at 110 KB an image")
    assert os.listdir(tmp_path) == []  # no folder, no lock, no manifest


def test_a_run_that_will_not_fit_on_the_disk_stops_at_start(isic, tmp_path):
    from tests.conftest import tmpfs
    from tests.emulators.imagenet import GeturlsServer, PhotoHosts, make_classes

    with tmpfs(tmp_path / "small", "64k") as small:
        run = console("isic", "--num-images", "30", "--api-url", isic, "--out-dir", str(small / "Data"), cwd=tmp_path)
        assert run.returncode == 1
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith("error: not enough disk space: the run expects to write about ")
        assert f"into {small / 'Data' / 'Images'}, which has " in last and "DISK_SPACE_CHECK=false" in last
        classes = make_classes(2, 9, seed=5, failure_rate=0.0)
        with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
            too_big = console("imagenet", "--wnids", ",".join(classes), "--per-class", "8", "--out-dir",
                              str(small / "Data"), "--api-url", api.geturls_url("x").split("?")[0], cwd=tmp_path,
                              env=hosts.proxy_env())
            assert hosts.url_log == []
        assert too_big.returncode == 1
        assert "error: not enough disk space: the run expects to write about 1.7 MB into" in too_big.stderr
        assert os.listdir(small) == []  # it stopped before its first image: nothing left


@dataclasses.dataclass
class Session:
    code: int
    screen: str  # everything written to the terminal, the answer's echo included


def terminal_session(command: list[str], cwd: Path, env: dict[str, str], answer: str | None = None,
                     timeout: float = 90) -> Session:
    """Run ``command`` at a pseudo-terminal (``conftest.terminal_run``), answering ``answer``."""
    return Session(*terminal_run(command, cwd, env, timeout, answer=answer))


def answer_on_a_terminal(command: list[str], answer: str, cwd: Path) -> Session:
    """``command`` run as a user at a terminal (from ``cwd``, without the checkout on the path),
    who types ``answer`` when it asks."""
    env = {k: v for k, v in clean_env({"COLUMNS": "120"}).items() if k != "PYTHONPATH"}
    return terminal_session(command, cwd, env, answer)


def test_a_bare_isic_asks_before_the_whole_archive_on_a_terminal_and_refuses_elsewhere(installed, tmp_path):
    """``dataset-spiders isic`` with no count used to start on the whole archive without a word.
    Now, on a terminal, it says how many images and how many bytes (the dry run's numbers) and
    asks, default no; off a terminal (a script, CI) it refuses in one line without ``--all``."""
    records = make_archive(5)
    size = sum(len(r.body) for r in records)
    where = _mkdir(tmp_path / "user")
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        url = f"{api.url}/api/v2"
        piped = user_run(installed, "isic", "--api-url", url, cwd=where)
        assert piped.returncode == 2 and len(piped.stderr.splitlines()) == 1, piped.stderr
        assert piped.stderr.startswith("error: isic: no --num-images or --per-label: this run would download every "
                                       "matching image") and "give --all to mean it" in piped.stderr
        assert os.listdir(where) == [] and api.requests_for("/api/v2/") == []  # refused before anything
        no = answer_on_a_terminal([str(installed), "isic", "--api-url", url], "n", cwd=where)
        question = (f"isic: no --num-images or --per-label: 5 image(s) match everything.\r\n"
                    f"Download all 5 images (about {size / 1024:.0f} KB) into {where / 'ISIC' / 'Images'}? [y/N] ")
        assert question in no.screen, no.screen
        assert no.code == 1 and "Nothing downloaded" in no.screen and os.listdir(where) == []
        assert api.requests_for("/api/v2/images/search/") and host.log == []  # measured, no image fetched
        yes = answer_on_a_terminal([str(installed), "isic", "--api-url", url], "y", cwd=where)
        assert yes.code == 0 and question in yes.screen and "Summary: 5 image(s)" in yes.screen, yes.screen
        assert len(list((where / "ISIC" / "Images").glob("*.jpg"))) == 5
        said = user_run(installed, "isic", "--all", "--api-url", url, "--out-dir", "All", cwd=where)
        assert said.returncode == 0 and len(list((where / "All" / "Images").glob("*.jpg"))) == 5, said.stderr
        counted = user_run(installed, "isic", "--num-images", "all", "--api-url", url, "--out-dir", "All", cwd=where)
        assert counted.returncode == 0, counted.stderr  # num_images=all says it too
        dry = user_run(installed, "isic", "--dry-run", "--api-url", url, cwd=where)
        assert dry.returncode == 0 and dry.stdout.startswith("Dry run: isic: 5 image(s) match everything")
    both = user_run(installed, "isic", "--all", "--num-images", "2", cwd=where)
    assert (both.returncode, both.stderr) == (2, "error: isic: all: not with num_images or per_label (it asks for "
                                                 "every matching image)\n")
