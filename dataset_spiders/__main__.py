"""``python -m dataset_spiders``: the console command (``cli.py``)."""

from .cli import main

main()
