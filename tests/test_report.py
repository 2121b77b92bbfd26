"""`scrapy report DIR`: report.html shows what the manifest says, embeds only kept files of the
dataset, escapes what it shows, references nothing outside itself, and renders in a browser."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from dataset_spiders.report import summarize
from tests.conftest import crawl, run_scrapy, user_run
from tests.emulators import GeturlsServer, ImageHost, IsicV2Server, PhotoHosts, images, make_archive, make_classes
from tests.test_imagenet_crawl import imagenet
from tests.test_tool import SlowImageHost

LABELS = {"n00000000": "tench", "n00000001": "goldfish", "n00000002": "great white shark", "n00000003": "tiger shark"}
SHORT = "n00000003"  # only 3 good URLs for 5 wanted
REFERENCES = {"src", "href", "xlink:href", "srcset", "action", "formaction", "poster", "data", "background",
              "cite", "longdesc", "manifest", "ping", "codebase", "archive", "profile", "usemap", "lowsrc", "dynsrc"}
FORBIDDEN_TAGS = {"script", "link", "iframe", "frame", "object", "embed", "base", "audio", "video", "source", "track"}
CHROMIUM = "/usr/bin/chromium"


def report(out: Path, *settings: str) -> tuple[int, str, str]:
    flags = [arg for name in settings for arg in ("-s", name)]
    proc = run_scrapy([sys.executable, "-m", "scrapy", "report", *flags, str(out)], timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


class Page(HTMLParser):
    """What a reader sees: per section (the h2's id), the tables' cell texts (without the SVG
    inside them), the charts' <text>s and the images under each h3; and every tag's attributes."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.section, self.h3 = "", ""
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.tables: defaultdict[str, list[list[str]]] = defaultdict(list)
        self.svg_texts: defaultdict[str, list[str]] = defaultdict(list)
        self.images: list[tuple[str, str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._svg, self._row, self._cell, self._svg_text, self._in_h3, self._in_pre = 0, None, None, None, False, False
        self.pre: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))
        if tag == "h2":
            self.section = dict(attrs).get("id") or ""
        elif tag == "h3":
            self._in_h3, self.h3 = True, ""
        elif tag == "svg":
            self._svg += 1
        elif tag == "text":
            self._svg_text = ""
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.images.append((self.section, self.h3, dict(attrs)))
        elif tag == "pre":
            self._in_pre = True
            self.pre.append("")

    def handle_endtag(self, tag):
        if tag == "h3":
            self._in_h3 = False
        elif tag == "svg":
            self._svg -= 1
        elif tag == "text" and self._svg_text is not None:
            self.svg_texts[self.section].append(self._svg_text)
            self._svg_text = None
        elif tag in ("td", "th") and self._row is not None:
            self._row.append((self._cell or "").strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self.section].append(self._row)
            self._row = None
        elif tag == "pre":
            self._in_pre = False

    def handle_data(self, data):
        self.text.append(data)
        if self._svg_text is not None:
            self._svg_text += data
        if self._cell is not None and not self._svg:
            self._cell += data
        if self._in_h3:
            self.h3 += data
        if self._in_pre:
            self.pre[-1] += data

    def rows(self, section: str) -> list[list[str]]:
        """The data rows of the section's last table (its header row dropped)."""
        return [row for row in self.tables[section] if row][1:]


def number(text: str) -> int:
    return int(text.replace(",", ""))


def last_lines(out: Path) -> dict[tuple[str, str], dict]:
    last = {}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        last[(record.get("kind") or "image", record["id"])] = record
    return last


def host_of(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or "(no url)"


def decode_data_uri(uri: str) -> Image.Image:
    head, _, data = uri.partition(",")
    assert head == "data:image/jpeg;base64", head
    im = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
    im.load()
    return im


def assert_self_contained(html: str, page: Page) -> None:
    """Nothing in the page reaches outside it: no external tag, attribute or CSS url()."""
    for tag, attrs in page.tags:
        assert tag not in FORBIDDEN_TAGS, tag
        for name, value in attrs:
            value = (value or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "file:", "ftp:", "javascript:")), (tag, name, value)
            if name in REFERENCES:
                assert value.startswith(("data:", "#")), (tag, name, value)  # no relative path either
    lowered = html.lower()
    assert "@import" not in lowered
    at = lowered.find("url(")
    while at != -1:
        assert lowered[at + 4:].lstrip(" '\"").startswith("data:"), lowered[at: at + 60]
        at = lowered.find("url(", at + 1)


def assert_thumbnails_are_their_files(out: Path, page: Page, groups: dict[str, str]) -> Counter[str]:
    """Every <img> decodes, sits under its own class or label, and looks like its own kept file
    more than like any other kept file (each file shrunk to the thumbnail's size)."""
    last = last_lines(out)
    kept = {i: r for (kind, i), r in last.items() if kind == "image" and r["outcome"] in ("kept", "present")}
    files = {i: Image.open(out / r["path"]).convert("RGB") for i, r in kept.items()}
    shown: Counter[str] = Counter()
    for section, h3, attrs in page.images:
        assert section == "sheet"
        thumb = decode_data_uri(attrs["src"] or "").convert("RGB")
        image_id = attrs["alt"] or ""
        assert image_id in kept, image_id
        assert h3.split()[0] == groups[image_id], (h3, image_id)
        assert (int(attrs["width"] or 0), int(attrs["height"] or 0)) == thumb.size

        def distance(other: Image.Image, thumb: Image.Image = thumb) -> float:
            diff = ImageChops.difference(other.resize(thumb.size), thumb)
            return sum(ImageStat.Stat(diff).mean)

        nearest = min(files, key=lambda i: distance(files[i]))
        assert nearest == image_id, f"the thumbnail of {image_id} looks like {nearest}"
        shown[groups[image_id]] += 1
    return shown


@pytest.fixture(scope="module")
def imagenet_out(tmp_path_factory) -> Path:
    """A real crawl: 4 labelled classes of 5 from 10 URLs each (30% failing, on 3 hosts); one
    class has only 3 good URLs, the others answer 404."""
    base = tmp_path_factory.mktemp("imagenet")
    classes = make_classes(4, 10, seed=11, failure_rate=0.3)
    for i, photo in enumerate(classes[SHORT]):
        photo.behaviour = "ok" if i in (1, 4, 8) else "404"
    wnids = base / "classes.csv"
    wnids.write_text("".join(f"{label},{wnid}\n" for wnid, label in LABELS.items()))
    with PhotoHosts(classes) as hosts, GeturlsServer(classes) as api:
        run = imagenet(base / "Data", hosts, api, f"wnids_file={wnids}", "per_class=5")
    assert run.code == 0, run.stderr
    return run.out


@pytest.fixture(scope="module")
def isic_out(tmp_path_factory) -> Path:
    """A real ISIC crawl by label: 3 labels, 20 images of two sizes, a 404 and an HTML page among them."""
    records = make_archive(26, diagnoses=["Benign", "Malignant", "Indeterminate"])
    for record in records[::4]:
        record.body = images.jpeg(300, 200, seed=int(record.isic_id[5:]))
    records[2].behaviour = "404"
    records[5].behaviour = "html"
    out = tmp_path_factory.mktemp("isic") / "Data"
    with ImageHost(records) as host, IsicV2Server(records, host) as api:
        run = crawl("isic", out, f"api_url={api.url}/api/v2", "num_images=20", "layout=by_label")
    assert run.code == 0, run.stderr
    return out


def test_the_imagenet_report_shows_the_manifests_numbers_and_each_class_its_own_photos(imagenet_out):
    out = imagenet_out
    code, stdout, stderr = report(out)
    assert (code, stdout.strip()) == (0, str(out / "report.html")), stderr
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]  # written through a renamed temporary file
    html = (out / "report.html").read_text()
    page = Page(html)
    assert_self_contained(html, page)

    last = {key: r for key, r in last_lines(out).items() if key[0] == "image"}
    outcomes = Counter(r["outcome"] for r in last.values())
    assert outcomes["http_404"] >= 7 and outcomes["kept"] == 3 * 5 + 3
    chart = page.svg_texts["outcomes"]
    assert dict(zip(chart[0::2], map(number, chart[1::2]), strict=True)) == outcomes

    assert "scrapy crawl imagenet" in page.pre[0] and "per_class=5" in page.pre[0]
    asked = {row[0]: row[1] for row in page.tables["asked"]}
    assert asked["exit status"].startswith("0") and asked["target"] == "5 images per class"

    rows = {row[0]: row for row in page.rows("groups")}
    assert list(rows) == list(LABELS)
    for wnid, label in LABELS.items():
        mine = [r for r in last.values() if r["group"] == wnid]
        kept = sum(r["outcome"] == "kept" for r in mine)
        _, words, kept_target, _, tried, why = rows[wnid]
        assert (words, kept_target, number(tried)) == (label, f"{kept} / 5", len(mine))
        if wnid == SHORT:
            # the run's own words for why it is short: its candidates ran out, after these failures
            assert kept == 3 and why == f"out of candidates after {len(mine)} URLs; http_404 {len(mine) - 3}"

    by_host: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for r in last.values():
        by_host[host_of(r["url"])][r["outcome"]] += 1
    hosts = {row[0]: row for row in page.rows("hosts")}
    assert set(hosts) == set(by_host) and len(hosts) == 3
    for host, counts in by_host.items():
        _, tried, kept, failures = hosts[host]
        assert (number(tried), number(kept)) == (sum(counts.values()), counts["kept"])
        shown = dict(part.rsplit(" ", 1) for part in failures.split(", ")) if failures else {}
        assert {o: number(n) for o, n in shown.items()} == {o: n for o, n in counts.items() if o != "kept"}

    groups = {r["id"]: r["group"] for r in last.values()}
    shown = assert_thumbnails_are_their_files(out, page, groups)
    assert shown == Counter({w: 3 if w == SHORT else 5 for w in LABELS})
    assert any(h3.startswith("n00000000 · tench") for _, h3, _ in page.images)
    assert len(page.svg_texts["sizes"]) >= 6  # three histograms, each a count and a bound per bin

    summary = summarize(out)
    json.dumps(summary)
    assert summary["outcomes"] == dict(outcomes)
    assert {g["name"]: (g["kept"], g["target"]) for g in summary["groups"]} == {
        w: (3 if w == SHORT else 5, 5) for w in LABELS}
    assert next(g for g in summary["groups"] if g["name"] == SHORT)["short_reasons"] == [
        ["http_404", len([r for r in last.values() if r["group"] == SHORT]) - 3]]
    assert all(g["short_reasons"] == [] for g in summary["groups"] if g["name"] != SHORT)


def test_the_isic_report_counts_per_label_and_host(isic_out):
    out = isic_out
    code, _, stderr = report(out)
    assert code == 0, stderr
    html = (out / "report.html").read_text()
    page = Page(html)
    assert_self_contained(html, page)
    last = {key: r for key, r in last_lines(out).items() if key[0] == "image"}
    outcomes = Counter(r["outcome"] for r in last.values())
    assert (outcomes["kept"], outcomes["http_404"], outcomes["not_image"]) == (20, 1, 1)
    chart = page.svg_texts["outcomes"]
    assert dict(zip(chart[0::2], map(number, chart[1::2]), strict=True)) == outcomes
    by_label = Counter(r["label"] for r in last.values() if r["outcome"] == "kept")
    tried = Counter(r["label"] for r in last.values())
    rows = {row[0]: row for row in page.rows("groups")}
    assert {label: (number(row[1]), number(row[3])) for label, row in rows.items()} == {
        label: (by_label[label], tried[label]) for label in tried}
    assert set(rows) == {"benign", "malignant", "indeterminate"}
    (host,) = page.rows("hosts")
    assert (host[0], number(host[1]), number(host[2])) == ("127.0.0.1", len(last), 20)
    assert "20 image(s) in the dataset of 20 asked" in " ".join(" ".join(page.text).split())
    shown = assert_thumbnails_are_their_files(out, page, {r["id"]: r["label"] for r in last.values()})
    assert shown == by_label
    sizes = summarize(out)["sizes"]["width"]
    assert (sizes["min"], sizes["max"]) == (64, 300)


def test_the_contact_sheet_is_capped_per_class_and_in_all(imagenet_out, tmp_path):
    out = tmp_path / "Data"
    shutil.copytree(imagenet_out, out, symlinks=True)
    code, _, stderr = report(out, "REPORT_THUMBNAILS_PER_GROUP=2", "REPORT_THUMBNAILS_MAX=3")
    assert code == 0, stderr
    page = Page((out / "report.html").read_text())
    per_class = Counter(h3.split()[0] for _, h3, _ in page.images)
    assert sum(per_class.values()) <= 3 and max(per_class.values()) <= 2 and len(per_class) == 3
    assert "1 more class(es) with kept images are not sampled" in " ".join(" ".join(page.text).split())


def test_a_hostile_manifest_never_leaks_out_of_the_dataset_or_into_the_markup(imagenet_out, tmp_path):
    out = tmp_path / "Data"
    shutil.copytree(imagenet_out, out, symlinks=True)
    secret = tmp_path / "secret.jpg"  # a valid image outside the dataset, all red
    Image.new("RGB", (64, 64), (255, 0, 0)).save(secret)
    folder = out / "Images" / "n00000000"
    (folder / "link.jpg").symlink_to(secret)
    os.mkfifo(folder / "fifo.jpg")  # opening it for reading would wait for a writer forever
    evil = "<script>alert(1)</script>"
    size = secret.stat().st_size
    lines = [
        {"id": "n00000000_outside", "outcome": "kept", "group": "n00000000", "path": "../secret.jpg", "bytes": size},
        {"id": "n00000000_abs", "outcome": "kept", "group": "n00000000", "path": str(secret), "bytes": size},
        {"id": "n00000000_link", "outcome": "kept", "group": "n00000000", "path": "Images/n00000000/link.jpg",
         "bytes": size, "url": "http://farm3.static.flickr.com/1/a.jpg"},
        {"id": "n00000000_fifo", "outcome": "kept", "group": "n00000000", "path": "Images/n00000000/fifo.jpg"},
        {"id": "n99999999_1", "outcome": "http_404", "group": evil, "label": evil,
         "url": "http://<i>evil</i>/a.jpg", "detail": evil},
        {"id": "ISIC_x", "kind": "mask", "outcome": "http_404", "group": "n00000000"},
    ]
    with (out / "manifest.jsonl").open("a") as f:
        f.write("".join(json.dumps(line) + "\n" for line in lines) + '{"id": "torn", "outc\n')
    code, _, stderr = report(out)
    assert code == 0, stderr
    assert stderr.count("skipping a line: not JSON") == 1, stderr  # warned once, though read twice
    html = (out / "report.html").read_text()
    page = Page(html)
    assert_self_contained(html, page)
    assert "<script" not in html.lower() and "<i>evil" not in html
    assert evil in "".join(page.text)  # shown as text, escaped in the markup
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 1
    alts = {attrs["alt"] for _, _, attrs in page.images}
    assert not alts & {"n00000000_outside", "n00000000_abs", "n00000000_link", "n00000000_fifo"}
    for _, _, attrs in page.images:  # nothing red, the secret's colour, is embedded
        r, g, b = ImageStat.Stat(decode_data_uri(attrs["src"] or "").convert("RGB")).mean
        assert not (r > 200 and g < 60 and b < 60)
    text = " ".join(" ".join(page.text).split())
    assert "2 manifest line(s) name a path outside the dataset" in text  # ../secret.jpg and the absolute path
    assert "Masks: http_404 1." in text
    rows = {row[0]: row for row in page.rows("groups")}
    assert rows["n00000000"][2] == "7 / 5"  # the link and the FIFO are counted (the manifest says kept)...
    assert sum(1 for _, h3, _ in page.images if h3.startswith("n00000000")) == 5  # ...but never shown
    assert rows[evil][2] == "0 / 5"


def test_scrapy_report_without_a_manifest_is_a_one_line_error(tmp_path):
    code, stdout, stderr = report(tmp_path)
    assert (code, stdout) == (2, "")
    assert stderr.strip() == f"error: no manifest.jsonl in {tmp_path}"
    assert not (tmp_path / "report.html").exists()


def test_the_report_renders_in_a_headless_browser(imagenet_out, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium): the page is not rendered")
    assert report(imagenet_out)[0] == 0
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,5000",
         (imagenet_out / "report.html").as_uri()],
        capture_output=True, timeout=90, check=False,
    )
    assert shot.exists(), "chromium wrote no screenshot"
    with Image.open(shot) as png:
        assert png.format == "PNG" and png.size == (1280, 5000)  # tall enough for the contact sheet
        im = png.convert("RGB")
    colours = Counter({colour: n for n, colour in im.getcolors(maxcolors=1280 * 5000) or []})
    white = sum(n for c, n in colours.items() if min(c) > 245)
    assert white < 0.97 * 1280 * 5000, "the page is blank"
    kept_colour = (0x2E, 0x7D, 0x32)  # the kept bar's
    green = sum(n for c, n in colours.items() if all(abs(a - b) < 12 for a, b in zip(c, kept_colour, strict=True)))
    assert green > 500, "the outcome chart's kept bar is not drawn"
    assert len(colours) > 2000, "no photo thumbnails (too few colours)"


def test_the_report_names_the_first_failures_of_each_kind_and_the_runs_duration_and_rate(installed, tmp_path):
    """Seven 404s and an HTML page: the page names the first five 404s (id and URL) and says two
    more, names the HTML page, and says how long the run took and how many images a second it
    kept; summarize() gives the same numbers."""
    archive = make_archive(32)
    gone = [3, 5, 8, 11, 14, 17, 20]
    for i in gone:
        archive[i].behaviour = "404"
    archive[7].behaviour = "html"
    where = tmp_path / "user"
    where.mkdir()
    with SlowImageHost(archive, delay=0.1) as host, IsicV2Server(archive, host) as api:
        run = user_run(installed, "isic", "--num-images", "20", "--api-url", f"{api.url}/api/v2", cwd=where)
        crawled = user_run(installed, "report", "ISIC", cwd=where)
    assert run.returncode == 0 and crawled.returncode == 0, run.stderr + crawled.stderr
    manifest = [json.loads(line) for line in (where / "ISIC" / "manifest.jsonl").read_text().splitlines()]
    failed = [line for line in manifest if line["outcome"] == "http_404"]  # in manifest order
    assert sorted(line["id"] for line in failed) == [archive[i].isic_id for i in gone]
    page = (where / "ISIC" / "report.html").read_text()
    section = page[page.index("Failed images, by kind"):]
    section = section[:section.index("</table>")]
    for line in failed[:5]:
        assert line["id"] in section and line["url"] in section, line
    for line in failed[5:]:
        assert line["id"] not in section
    assert "and 2 more" in section and archive[7].isic_id in section
    numbers = summarize(where / "ISIC")
    took = numbers["run"]
    assert took["downloaded"] == 20 and took["seconds"] > 0
    assert abs(took["images_per_second"] - 20 / took["seconds"]) < 0.01
    assert numbers["failed"]["http_404"] == [{"id": line["id"], "url": line["url"]} for line in failed[:5]]
    assert re.search(r"it took <b>[\d.]+ s</b> and downloaded 20 image\(s\), <b>[\d.]+ images/s</b>", page)
