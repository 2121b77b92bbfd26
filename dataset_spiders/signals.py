"""Signals of our own (sent with ``crawler.signals.send_catch_log``)."""

#: An image's outcome was recorded in the manifest. Arguments: ``item`` (an ImageItem).
image_recorded = object()
