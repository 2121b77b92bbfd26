r"""Text from disk made safe for the page: HTML-escaped, and never able to reorder what is around it.

A bidirectional control character (U+202E RIGHT-TO-LEFT OVERRIDE and its kin) in a manifest
string would flip the text after it on the page, so ``evil\u202egpj.exe`` reads as ``evilexe.jpg``;
each one is shown as its escape (``\u202e``) instead.
"""

from __future__ import annotations

import html
import re

BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape(text: str) -> str:
    r"""``text`` HTML-escaped (quotes too), its bidi controls shown as ``\u202e`` and the like."""
    return BIDI_CONTROLS.sub(lambda m: f"\\u{ord(m[0]):04x}", html.escape(text))
