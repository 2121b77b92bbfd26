"""``report.html``: a self-contained page of what a dataset holds and why, made from its disk.

``summarize(root)`` gives the numbers (JSON-able); ``write_report(root)`` writes the page and
returns its path. ``scrapy report DIR`` runs the latter.
"""

from .build import REPORT_NAME, summarize, write_report
from .gather import NotADataset

__all__ = ["REPORT_NAME", "NotADataset", "summarize", "write_report"]
