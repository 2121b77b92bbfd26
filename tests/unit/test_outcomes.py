"""Failure reasons: the real cause, found behind Scrapy's bare FileException."""

from scrapy.exceptions import DownloadCancelledError, DownloadTimeoutError, IgnoreRequest, ResponseDataLossError
from scrapy.pipelines.media import FileException

from dataset_spiders.downloader.retries import parse_retry_after
from dataset_spiders.outcomes import ImageRejected, classify, is_permanent, is_transient


def _wrapped(cause: BaseException) -> FileException:
    try:
        try:
            raise cause
        except Exception:
            raise FileException from None  # what media_failed does: a bare exception, cause in context
    except FileException as exc:
        exc.__context__ = cause
        return exc


def test_classify_finds_the_reason_in_the_context():
    assert classify(_wrapped(DownloadTimeoutError("took longer than 5 s")))[0] == "timeout"
    assert classify(_wrapped(ResponseDataLossError()))[0] == "truncated"
    assert classify(_wrapped(ImageRejected("http_404", "gone"))) == ("http_404", "gone")
    assert classify(ValueError("weird"))[0] == "error"
    assert classify(_wrapped(IgnoreRequest("max redirections reached")))[0] == "redirect"
    bomb = IgnoreRequest("Ignored response <200 http://x/b.jpg> because its body (1 B) exceeded DOWNLOAD_MAXSIZE")
    assert classify(_wrapped(bomb))[0] == "too_large"
    too_big = "Expected to receive 9 bytes which is larger than download max size (5) in request <GET http://x/>."
    assert classify(_wrapped(DownloadCancelledError(too_big)))[0] == "too_large"


def test_transient_outcomes_are_retried_on_a_rerun_and_permanent_ones_are_not():
    assert all(is_transient(o) for o in ("timeout", "connection", "http_503", "http_429", "truncated"))
    assert not any(is_transient(o) for o in ("http_404", "http_410", "not_image", "placeholder", "kept"))
    assert all(is_permanent(o) for o in ("http_404", "http_410", "http_403", "not_image", "placeholder", "empty"))
    assert not any(is_permanent(o) for o in ("timeout", "http_429", "http_503", "kept", "surplus", "duplicate"))


def test_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after(b"5") == 5.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after(b"soon") is None
    assert parse_retry_after("²") is None
    assert parse_retry_after(None) is None
