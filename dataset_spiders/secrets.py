"""What never leaves the process: secret arguments and settings (an API token) are hidden in
every record a run writes (dataset.json's command line, arguments and settings) and in the log."""

from __future__ import annotations

import re

SECRET_ARGUMENTS = frozenset({"token"})
SECRET_SETTINGS = frozenset({"ISIC_TOKEN"})
HIDDEN = "(given; not recorded)"
_ON_COMMAND_LINE = re.compile(r"^(token=|--token=|ISIC_TOKEN=)(.+)$")


def redacted_command(words: list[str]) -> list[str]:
    """A command line with secret values hidden (``-a token=…``, ``-s ISIC_TOKEN=…``, ``--token …``)."""
    out = []
    hide_next = False
    for word in words:
        match = _ON_COMMAND_LINE.match(word)
        if hide_next:
            out.append(HIDDEN)
        else:
            out.append(f"{match.group(1)}{HIDDEN}" if match else word)
        hide_next = word == "--token"
    return out
