"""Signals of our own (sent with ``crawler.signals.send_catch_log``)."""

#: An image's outcome was recorded in the manifest. Arguments: ``item`` (an ImageItem).
image_recorded = object()

#: The run is over: its lines written, its end recorded, the dataset still locked (sent by the
#: dataset core). Arguments: ``core`` (the DatasetCore). The summary and report.html follow it.
dataset_finished = object()
