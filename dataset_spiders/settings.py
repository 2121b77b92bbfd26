"""Settings of the dataset spiders; override any of them with ``-s NAME=VALUE``.

Ours (not Scrapy's) are marked "ours"; the rest are Scrapy's, set for downloading images.
"""

BOT_NAME = "dataset_spiders"
SPIDER_MODULES = ["dataset_spiders.spiders"]
NEWSPIDER_MODULE = "dataset_spiders.spiders"
COMMANDS_MODULE = "dataset_spiders.commands"  # our `crawl`: one-line errors, honest exit codes

USER_AGENT = "dataset-spiders/0.1 (research image downloader; +https://pypi.org/project/dataset-spiders/)"
DATASET_CONTACT = ""  # ours: fill in (a URL or e-mail): added to the User-Agent so hosts can reach you
ROBOTSTXT_OBEY = False  # API endpoints and image buckets, fetched one URL each
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False  # Scrapy 2.19 would otherwise listen on a local port
LOG_LEVEL = "INFO"
PROGRESS = "auto"  # ours: `auto` (a bar on a terminal, else lines), `bar`, `lines` or `off`; always on stderr
PROGRESS_INTERVAL = 5  # ours: seconds between progress lines when stderr is not a terminal
PROGRESS_STALL_AFTER = 5  # ours: seconds without an image recorded before progress says what the run waits on
REPORT_HTML = True  # ours: write out_dir/report.html at the end of every run
DISK_SPACE_CHECK = True  # ours: stop at start, with one line, when what the run expects to write will not fit
IMAGENET_AVERAGE_IMAGE_BYTES = 110_000  # ours: the bytes an ImageNet image is expected to take (disk check, dry run)

# --- Where the sources are (ours); each spider also takes an `api_url` argument --------------
ISIC_API_URL = "https://api.isic-archive.com/api/v2"
ISIC_V1_API_URL = "https://isic-archive.com/api/v1"
IMAGENET_API_URL = "https://www.image-net.org/api/imagenet.synset.geturls"
FLICKR_DOMAINS = ["flickr.com", "staticflickr.com"]  # ours: flickr_only keeps URLs on these hosts
IMAGENET_ACTIVE_CLASSES = 32  # ours: classes downloaded at the same time

# --- Concurrency and politeness ------------------------------------------------------------
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 8
DOWNLOAD_DELAY = 0
DATASET_MAX_IN_FLIGHT = 32  # ours: images listed but not yet recorded, at most (per class)
DATASET_EXTRA_IN_FLIGHT = 0  # ours: candidates in flight beyond what a class still needs

# --- Many workers on one dataset (ours; docs/scaling-out.md) --------------------------------
REDIS_URL = None  # e.g. redis://host:6379/0: every crawl given the same URL and out_dir works on one dataset
# ours: the decisions in Redis behind the core's one seam (dataset/decisions.py says what they are); with REDIS_URL
DATASET_WORKER_MODE = "dataset_spiders.scaleout.decisions.WorkerMode"
DATASET_LEASE = 5.0  # seconds: a worker that stops renewing its lease for this long has its share given back
REDIS_RETRY_FOR = 60.0  # seconds Redis may be out of reach (workers pause and retry) before a worker stops, exit 1

# --- Failures -----------------------------------------------------------------------------
DOWNLOAD_TIMEOUT = 60  # API pages
IMAGES_DOWNLOAD_TIMEOUT = 60  # ours: per image request, the whole download; 0 means DOWNLOAD_TIMEOUT
IMAGES_CONNECT_TIMEOUT = 10  # ours: seconds to connect to an image host (per attempt, after DNS); 0: the above
IMAGES_FIRST_BYTE_TIMEOUT = 30  # ours: seconds from the start to the first byte of the answer; 0: none
DNS_TIMEOUT = 10  # a name that does not resolve in 10 s is as dead as a refused connection (Scrapy's: 60)
# Scrapy's CachingThreadedResolver, its lookups in daemon threads (downloader/resolver.py): none holds the exit
TWISTED_DNS_RESOLVER = "dataset_spiders.downloader.resolver.DaemonThreadResolver"
# ours: host health (dataset/hosts.py). A host whose connections fail this many times in a row (no
# answer at all: DNS, refused, connect or first-byte timeout, a proxy's 502/504) is down: its
# candidates are recorded host_down without a request until a probe, HOSTS_DOWN_FOR seconds later,
# finds it back (the wait doubles after each failed probe). 0: off (isic, one host); imagenet: 3
HOSTS_DOWN_AFTER = 0
HOSTS_DOWN_FOR = 60.0
HOSTS_UNPROVEN_CONCURRENCY = 2  # ours: requests at once to a host that has not answered yet; 0: no cap
HOSTS_SHORT_PROBE_AFTER = 2.0  # ours: a class about to end short probes a host down this long (not its cool-down)
HOSTS_STALL_AFTER = 3.0  # ours: a class whose downloads wait this long for a first byte may start more; 0: never
IMAGES_RETRY_TIMES = None  # ours: retries per image request; None means RETRY_TIMES
RETRY_TIMES = 2  # retries after the first try: bounded, never forever
RETRY_HTTP_CODES = [500, 502, 503, 504, 522, 524, 408, 429]
RETRY_AFTER_MAX = 60  # ours: the longest Retry-After we wait, in seconds
RETRY_BACKOFF_BASE = 1.0  # ours: a 429/503 without Retry-After pauses its host this long x 2^n (jittered); 0: off
RETRY_BACKOFF_MAX = 60.0  # ours: the longest such back-off, in seconds
ISIC_MAX_IDLE_PAGES = 3  # ours: listing pages in a row with no new record end the listing (exit 1); 0: never
DOWNLOADER_MIDDLEWARES = {
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "dataset_spiders.downloader.retries.RetryAfterMiddleware": 550,
    # images ask for no transfer encoding; sees an encoded body before HttpCompression (590) inflates it
    "dataset_spiders.downloader.encoded_images.EncodedImagesMiddleware": 595,
}
DOWNLOAD_MAXSIZE = 1024 * 1024 * 1024  # bytes; a larger body is `too_large`
DOWNLOAD_WARNSIZE = 0  # ISIC TIFFs are large by nature; no warning per file

# --- Memory -------------------------------------------------------------------------------
# ours: bytes an image sent with Content-Encoding (gzip, ...) despite our "identity" may inflate
# to; larger is `too_large`, found without inflating it (a gzip bomb: 2 MB in, 2 GiB out). 0: off
IMAGES_ENCODED_MAXSIZE = 64 * 1024 * 1024
# ours: bytes of image bodies being received at once, at most (Scrapy holds each body in memory
# until it is complete); a download that does not fit waits for room, never fails. 0: off
IMAGES_MEMORY_BUDGET = 2 * 1024 * 1024 * 1024
DOWNLOAD_HANDLERS = {  # keeps image downloads within that budget; also cancels surplus downloads
    "http": "dataset_spiders.downloader.handler.CancelWhenFullDownloadHandler",
    "https": "dataset_spiders.downloader.handler.CancelWhenFullDownloadHandler",
}

# --- Images -------------------------------------------------------------------------------
ITEM_PIPELINES = {
    "dataset_spiders.pipelines.images.DatasetImagesPipeline": 100,  # fetch, check, keep or reject, commit
    "dataset_spiders.pipelines.describe.SaveDescriptionsPipeline": 500,
    "dataset_spiders.pipelines.record.RecordOutcomesPipeline": 900,  # manifest line, stats, quota slot
}
EXTENSIONS = {
    "dataset_spiders.dataset.DatasetCore": 0,  # the dataset's state, handed to every stage
    "dataset_spiders.extensions.report.RunReport": 500,  # at the end: report.html and the summary on stderr
    "dataset_spiders.extensions.progress.Progress": 550,  # a bar on a terminal, a line every few seconds elsewhere
    "dataset_spiders.extensions.isic_catalog.IsicCatalog": 600,  # isic runs only
    "dataset_spiders.extensions.drain.FinishClosingWhenDrained": 700,  # Ctrl-C with items in flight
}
IMAGES_STORE = "Data"  # each spider sets it to its `out_dir` (over -s); staging files live under it
DATASET_COMMIT_BATCH = 64  # ours: images renamed into place and made durable together, at most
DATASET_COMMIT_DELAY = 0.05  # ours: seconds an image waits for its batch to fill, at most
DATASET_FLUSH_INTERVAL = 0.5  # ours: seconds between writes of the other manifest lines, at most
MEDIA_ALLOW_REDIRECTS = True  # old image URLs redirect (http to https, moved buckets)
IMAGES_MIN_WIDTH = 0
IMAGES_MIN_HEIGHT = 0
IMAGES_MAX_PIXELS = 178_956_970  # ours: larger is `too_large`, checked before decoding
PLACEHOLDER_URL_PATTERNS = [  # ours: a redirect hop or final URL matching one is a placeholder
    r"yimg\.com/.*photo_unavailable",
    r"//i\.imgur\.com/removed\.png",
]
IMAGES_HONOUR_NOAI = True  # ours: an image served with X-Robots-Tag noai/noimageai is not kept (`opted_out`)
PLACEHOLDER_LEARN_THRESHOLD = 0  # ours: the same bytes for this many URLs of a site: a placeholder (0: off)
PLACEHOLDER_LEARN_IN_CLASS = 0  # ours: ... or for this many photo URLs of a site within one class (0: off; imagenet: 2)
DEDUPLICATE_IMAGES = False  # ours: refuse a byte- or pixel-identical copy of a kept image
NEAR_DUPLICATES = False  # ours: refuse a near-copy (resized, re-encoded) of a kept image, by perceptual hash
NEAR_DUPLICATE_DISTANCE = 4  # ours: at most this many of the 64 hash bits differ in a near-copy (0 to 15)
PLACEHOLDER_DIGESTS = [  # ours: "sha256:", "sha1:" or "md5:" + hex of known placeholder bytes, or "size:<bytes>"
    "sha1:10f3f7f79e6528aa9d828316248997568ac0d833",  # Flickr "photo unavailable" (ImageNet gatherer scripts)
    "size:2051",  # Flickr "photo unavailable": 108,034 of 961,148 files of that size (jetson-inference #124)
    "md5:e60b98765d26e34bfbb797c1a5f378f2",  # Flickr "temporarily unavailable" (JDownloader's plugin)
]

HTTPCACHE_ENABLED = False
FEED_EXPORT_ENCODING = "utf-8"

# -- the report (dataset_spiders/report/) ---------------------------------------------------
REPORT_THUMBNAILS_PER_GROUP = 12  # ours: thumbnails of kept images per class or label in report.html, at most
REPORT_THUMBNAILS_MAX = 600  # ours: thumbnails in report.html in all, at most (shared out among the classes)
REPORT_THUMBNAIL_SIZE = 96  # ours: pixels on a thumbnail's longer side

# -- isic v2 masks (dataset_spiders/spiders/isic_masks.py; docs/isic.md "Masks for v2 images") ------
# ours: the challenge ground-truth ZIP archives whose members `ISIC_nnnnnnn…segmentation.png` are the masks of
# segmentation=true on v2, first listed first: an id in two archives takes its mask from the first. Read by HTTP
# Range (the central directories are cached in out_dir/.cache/isic-masks); `-s ISIC_MASK_ARCHIVES=URL1,URL2`
ISIC_MASK_ARCHIVES = [
    "https://isic-challenge-data.s3.amazonaws.com/2018/ISIC2018_Task1_Training_GroundTruth.zip",
    "https://isic-challenge-data.s3.amazonaws.com/2018/ISIC2018_Task1_Validation_GroundTruth.zip",
    "https://isic-challenge-data.s3.amazonaws.com/2018/ISIC2018_Task1_Test_GroundTruth.zip",
    "https://isic-challenge-data.s3.amazonaws.com/2017/ISIC-2017_Training_Part1_GroundTruth.zip",
    "https://isic-challenge-data.s3.amazonaws.com/2017/ISIC-2017_Validation_Part1_GroundTruth.zip",
    "https://isic-challenge-data.s3.amazonaws.com/2017/ISIC-2017_Test_v2_Part1_GroundTruth.zip",
    "https://isic-challenge-data.s3.amazonaws.com/2016/ISBI2016_ISIC_Part1_Training_GroundTruth.zip",
    "https://isic-challenge-data.s3.amazonaws.com/2016/ISBI2016_ISIC_Part1_Test_GroundTruth.zip",
]
