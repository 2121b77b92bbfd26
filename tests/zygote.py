"""A crawl process that starts warm: `scrapy crawl` forked from a process that has already
imported Scrapy, Twisted and the package.

Why: the suite runs `scrapy crawl` a few hundred times, and each start imports the same
modules again (about 0.6 s of CPU, as much as many of the crawls themselves). A fork of a
process that has imported them is still a process of its own, as `python -m scrapy` is: its own
pid, exit status, signals, stdin and stderr, working folder and environment, atexit handlers
and interpreter exit; nothing of the test process (its emulator threads, sockets or state) is
in it, since the zygote is started before any of them and never runs a crawl itself. Only the
interpreter's start (reading ``PYTHON*`` variables) is shared, so a run whose environment
changes one of those is started the usual way (``tests.conftest.crawl``).

The installed ``dataset-spiders`` command starts the same way, from a zygote of the installed
copy's own interpreter (``python tests/zygote.py SOCKET BIN``: BIN, the venv's bin folder, is
first on its path, as for a console script, and the checkout is not on it).

Run as ``python tests/zygote.py SOCKET [BIN]``: it listens on the Unix socket SOCKET; each
connection sends one request (argv, cwd, env, and the child's stdin, stdout and stderr as file
descriptors), is answered the child's pid, then its exit code when it ends. ``argv[0]`` is
``-m`` (``python -m scrapy ARGS``: argv is ``["-m", "scrapy", ARGS...]``) or a script to run
(a console script: argv is ``[SCRIPT, ARGS...]``).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sys
from typing import Any

WARM = (
    "scrapy.cmdline",
    "scrapy.crawler",
    "scrapy.commands.crawl",
    "scrapy.core.downloader.handlers.http11",
    "scrapy.pipelines.images",
    "twisted.internet.asyncioreactor",
    "PIL.Image",
    "PIL.PngImagePlugin",
    "PIL.JpegImagePlugin",
    "dataset_spiders.spiders.isic",
    "dataset_spiders.spiders.imagenet",
    "dataset_spiders.pipelines.images",
    "dataset_spiders.pipelines.describe",
    "dataset_spiders.pipelines.record",
    "dataset_spiders.extensions.report",
    "dataset_spiders.extensions.progress",
    "dataset_spiders.extensions.isic_catalog",
    "dataset_spiders.downloader.handler",
    "dataset_spiders.dataset",
    "dataset_spiders.commands.crawl",
    "dataset_spiders.commands.verify",
    "dataset_spiders.commands.report",
    "dataset_spiders.cli",
    "dataset_spiders.api",
)


class _Child(Exception):
    """Raised in a forked child to leave the zygote's loop and become the crawl."""

    def __init__(self, request: dict[str, Any]):
        self.request = request


def serve(path: str) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            if key.data == "accept":
                conn, _ = listener.accept()
                sel.register(conn, selectors.EVENT_READ, "request")
            elif key.data == "request":
                conn = key.fileobj  # type: ignore[assignment]
                sel.unregister(conn)
                message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                if not message:
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    for other in list(sel.get_map().values()):
                        if isinstance(other.fileobj, int):
                            os.close(other.fileobj)  # another child's pidfd
                        else:
                            other.fileobj.close()
                    sel.close()
                    conn.close()
                    for target, fd in enumerate(fds):
                        os.dup2(fd, target)
                        os.close(fd)
                    raise _Child(json.loads(message))
                for fd in fds:
                    os.close(fd)
                conn.send(json.dumps({"pid": pid}).encode())
                sel.register(os.pidfd_open(pid), selectors.EVENT_READ, (pid, conn))
            else:
                pid, conn = key.data
                sel.unregister(key.fileobj)
                os.close(key.fileobj)  # type: ignore[arg-type]
                _, status, usage = os.wait4(pid, 0)
                ended = {"code": os.waitstatus_to_exitcode(status), "cpu": usage.ru_utime + usage.ru_stime}
                with contextlib.suppress(OSError):  # the test went away
                    conn.send(json.dumps(ended).encode())
                conn.close()


def become(request: dict[str, Any]) -> None:
    """Be ``python -m scrapy ARGS`` in CWD with ENV, as far as a fork can."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    argv = request["argv"]
    import runpy

    if argv[0] == "-m":
        sys.path[0] = os.getcwd()
        sys.argv = ["-m", *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.path[0] = os.path.dirname(argv[0])
        sys.argv = list(argv)
        runpy.run_path(argv[0], run_name="__main__")


def warm_up() -> None:
    """Import what every crawl imports: ours, and each component Scrapy loads by default (it
    loads every one, even those its settings turn off)."""
    import importlib

    from scrapy.settings import default_settings

    names = list(WARM)
    for setting in ("EXTENSIONS_BASE", "DOWNLOADER_MIDDLEWARES_BASE", "SPIDER_MIDDLEWARES_BASE"):
        names += [path.rsplit(".", 1)[0] for path in getattr(default_settings, setting)]
    names += [path.rsplit(".", 1)[0] for path in default_settings.DOWNLOAD_HANDLERS_BASE.values() if path]
    for name in names:
        importlib.import_module(name)
    from PIL import Image

    Image.init()


def main() -> None:
    # as `python -m scrapy` in the checkout has it (the project first), or a console script
    sys.path[0] = sys.argv[2] if len(sys.argv) > 2 else os.getcwd()
    warm_up()
    try:
        serve(sys.argv[1])
    except _Child as child:
        become(child.request)  # its SystemExit is the process's exit status, after atexit as usual


if __name__ == "__main__":
    main()
