"""Shared helpers: run the real `scrapy crawl` in a subprocess and read what it left on disk."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
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
        """Every file under ``out/sub``, by path relative to it; not the ``metadata.jsonl`` at its
        top, which ISIC runs write there for Hugging Face's imagefolder (tests/test_loading.py)."""
        base = self.out / sub
        return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*"))
                if p.is_file() and p.relative_to(base).as_posix() != "metadata.jsonl"}


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
