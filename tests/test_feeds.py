"""`rag ingest --feed`: RSS and Atom feeds read from a real HTTP server on loopback (``http.server`` in a
thread) that serves the feeds, the entries' pages, a robots.txt, and counts every request it answers."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli import app
from rag.ingest.feeds import STATE_FILE, FetchError, FetchPolicy, PoliteClient, add_feeds, entry_doc_id
from rag.ingest.pipeline import ingest
from rag.store.index import Index
from tests.conftest import TOPICS, write_corpus

USER_AGENT = "grounded-news-qa-test/1.0 (+mailto:desk@example.org)"
CAP = 20_000  # bytes; the huge page is over it
READ_TIMEOUT_S = 0.3
SLOW_S = 1.5  # the slow page answers after this, past the read timeout


def page(title: str, *paragraphs: str) -> bytes:
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (f"<html><head><title>{title}</title></head><body><nav>Home | World | Business</nav>"
            f"<article><h1>{title}</h1>{body}</article><footer>Copyright Harbour News</footer></body></html>").encode()


BUDGET = ("The finance minister raised fuel duty by two cents a litre in the spring budget announced on Monday. "
          "Hauliers warned that the rise would push up the price of food in rural shops within weeks.",
          "The budget also doubled the grant for harbour dredging, which the port authority had requested for "
          "three years running, and cut the tax on small fishing boats.")
RAIL = ("The river railway reopened to passenger trains after eleven years, carrying commuters between the "
        "old town and the new ferry terminal in under twenty minutes.",
        "Engineers replaced every sleeper on the line and rebuilt the bridge over the estuary with steel "
        "beams shipped from the northern yards.")
FERRY = ("A second ferry began sailing to the outer islands on Friday, halving the wait for islanders who "
         "travel to the mainland hospital.",
         "The operator said the new vessel burns a third less fuel than the one it joins on the route.")


class Site:
    """The test server's content and what it saw: a request count per path and every User-Agent."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.agents: set[str] = set()
        self.conditional: list[str] = []  # paths asked with If-None-Match
        self.robots_status = 200
        self.rss_items = [
            ("budget-2005", "/news/budget.html", "Budget raises fuel duty", "Mon, 14 Mar 2005 09:30:00 GMT", ""),
            ("terminal-2005", "/news/huge.html", "Container terminal approved", "Tue, 15 Mar 2005 10:00:00 +0100",
             "The harbour authority approved a container terminal on the eastern quay after a two-year inquiry."),
            ("missing-2005", "/news/missing.html", "Page that vanished", "Wed, 16 Mar 2005 08:00:00 GMT", ""),
            ("secret-2005", "/private/secret.html", "Members only", "Thu, 17 Mar 2005 08:00:00 GMT", ""),
        ]
        self.pages = {"/news/budget.html": page("Budget: fuel duty up", *BUDGET),
                      "/news/rail.html": page("River railway reopens", *RAIL),
                      "/news/ferry.html": page("Second island ferry", *FERRY),
                      "/news/huge.html": page("Terminal", "x " * CAP),
                      "/private/secret.html": page("Secret", *BUDGET)}

    def rss(self, base: str) -> bytes:
        items = "".join(f"<item><title>{title}</title><link>{base}{path}</link><guid isPermaLink=\"false\">{guid}</guid>"
                        f"<pubDate>{date}</pubDate>" + (f"<description>{summary}</description>" if summary else "")
                        + "</item>" for guid, path, title, date, summary in self.rss_items)
        return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>Harbour News</title>'
                f"<link>https://www.harbour-news.example/</link><description>d</description>{items}</channel></rss>").encode()

    def atom(self, base: str) -> bytes:
        return (f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
                f'<title>River Times</title><link href="https://river-times.example/"/><id>urn:river</id>'
                f"<updated>2005-04-02T08:00:00+02:00</updated>"
                f'<entry><title>Railway reopens</title><link href="{base}/news/rail.html"/>'
                f"<id>tag:river-times.example,2005:rail</id><published>2005-04-02T08:00:00+02:00</published>"
                f"<updated>2005-04-03T08:00:00+02:00</updated></entry>"
                f'<entry><title>Slow page</title><link href="{base}/news/slow.html"/>'
                f"<id>tag:river-times.example,2005:slow</id><updated>2005-04-04T12:00:00Z</updated>"
                f"<summary>Lock keepers on the river went on strike for a day over pay.</summary></entry>"
                f"</feed>").encode()


REDIRECTS = {"/go/budget": "/news/budget.html", "/go/private": "/private/secret.html",
             "/go/ftp": "ftp://127.0.0.1/x.html", "/go/loop": "/go/loop"}


def _handler(site: Site):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes = b"", kind: str = "text/html; charset=utf-8",
                  headers: dict[str, str] | None = None, length: bool = True) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path, base = self.path, f"http://{self.headers['Host']}"
            site.hits[path] += 1
            site.agents.add(self.headers.get("User-Agent", ""))
            if path == "/robots.txt":
                self._send(site.robots_status, b"User-agent: *\nDisallow: /private/\n", "text/plain")
            elif path in REDIRECTS:
                self._send(302, headers={"Location": REDIRECTS[path]})
            elif path in ("/rss.xml", "/atom.xml"):
                body = site.rss(base) if path == "/rss.xml" else site.atom(base)
                etag = f'"{hash(body) & 0xFFFFFFFF:x}"'
                if self.headers.get("If-None-Match"):
                    site.conditional.append(path)
                if self.headers.get("If-None-Match") == etag:
                    self._send(304, length=False)
                else:
                    self._send(200, body, "application/xml", {"ETag": etag})
            elif path == "/news/slow.html":
                time.sleep(SLOW_S)
                self._send(200, site.pages["/news/budget.html"])
            elif path == "/news/huge.html":  # no Content-Length: the cap is met while streaming
                self.close_connection = True
                self._send(200, site.pages[path], length=False)
            elif path in site.pages:
                self._send(200, site.pages[path])
            else:
                self._send(404, b"<html><body>Not found</body></html>")

    return Handler


@pytest.fixture
def site():
    content = Site()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(content))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    content.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield content
    server.shutdown()
    server.server_close()


POLICY = FetchPolicy(USER_AGENT, connect_timeout_s=1.0, read_timeout_s=READ_TIMEOUT_S, total_timeout_s=5.0,
                     max_bytes=CAP, max_redirects=3, host_delay_s=0.0)


def _run(site: Site, root: Path, embedder, chunker, feeds=("/rss.xml", "/atom.xml")):
    return add_feeds([f if "://" in f or not f.startswith("/") else site.base + f for f in feeds], root, embedder,
                     chunker, POLICY)


def _documents(root: Path) -> dict:
    index = Index.open(root)
    try:
        return {doc_id: index.document(doc_id) for doc_id in index.hashes()}
    finally:
        index.close()


def test_feed_pages_land_in_the_index_politely_and_a_rerun_fetches_only_new_items(site, tmp_path, embedder, chunker):
    root = tmp_path / "index"
    ingest([write_corpus(tmp_path / "articles")], root, embedder, chunker)

    report = _run(site, root, embedder, chunker)
    docs = _documents(root)
    budget, rail = docs["budget-2005"], docs[entry_doc_id("tag:river-times.example,2005:rail")]
    assert "fuel duty by two cents" in budget.text and "harbour dredging" in budget.text
    assert "Home | World" not in budget.text and "Copyright" not in budget.text
    assert (budget.title, budget.published, budget.source) == ("Budget raises fuel duty", "2005-03-14T09:30:00+00:00",
                                                             "harbour-news.example")
    assert budget.metadata["url"] == site.base + "/news/budget.html"
    assert "eleven years" in rail.text
    assert (rail.title, rail.published, rail.source) == ("Railway reopens", "2005-04-02T08:00:00+02:00",
                                                         "river-times.example")
    # Over the size cap (streamed, no Content-Length) and timed out: the entries' summaries stand in.
    terminal, slow = docs["terminal-2005"], docs[entry_doc_id("tag:river-times.example,2005:slow")]
    assert terminal.text.startswith("The harbour authority approved") and terminal.published == "2005-03-15T10:00:00+01:00"
    assert slow.text == "Lock keepers on the river went on strike for a day over pay."
    assert slow.published == "2005-04-04T12:00:00+00:00"
    warnings = "\n".join(report.ingest.warnings)
    assert "terminal-2005: page" in warnings and "RAG_FEED_MAX_PAGE_BYTES" in warnings and "feed's summary" in warnings
    assert "timed out" in warnings
    # 404 and robots.txt-disallowed entries have no summary: skipped, with the reason.
    skipped = {s.path.removeprefix(site.base): s.reason for s in report.ingest.skipped}
    assert skipped == {"/news/missing.html": "HTTP 404",
                       "/private/secret.html": f"disallowed by {site.base}/robots.txt"}
    assert site.hits["/private/secret.html"] == 0 and site.hits["/robots.txt"] == 1
    assert site.agents == {USER_AGENT}
    # The rest of the corpus is still there.
    assert set(TOPICS) <= set(docs) and len(docs) == len(TOPICS) + 4
    assert [(f.entries, f.new, f.known) for f in report.feeds] == [(4, 2, 0), (2, 2, 0)]
    assert sorted(report.ingest.added) == sorted(set(docs) - set(TOPICS))
    assert (root / STATE_FILE).is_file() and not any(p.name == STATE_FILE for p in root.glob("*/*"))

    site.rss_items.append(("ferry-2005", "/news/ferry.html", "Island ferry", "Fri, 18 Mar 2005 07:00:00 GMT", ""))
    before = Counter(site.hits)
    report = _run(site, root, embedder, chunker)
    fetched = {path: n for path, n in (site.hits - before).items()}
    # Only the new entry's page, the feeds, robots.txt once, and the 404 (skipped, so tried again).
    assert fetched == {"/rss.xml": 1, "/atom.xml": 1, "/robots.txt": 1, "/news/ferry.html": 1,
                       "/news/missing.html": 1}
    assert site.conditional == ["/atom.xml"]  # every Atom entry was ingested: a conditional GET, answered 304
    assert report.ingest.added == ["ferry-2005"] and not report.ingest.removed
    assert [(f.entries, f.new, f.known, f.not_modified) for f in report.feeds] == [(5, 1, 2, False), (0, 0, 0, True)]
    docs = _documents(root)
    assert "outer islands" in docs["ferry-2005"].text and set(TOPICS) <= set(docs) and len(docs) == len(TOPICS) + 5


def test_two_feed_ingests_at_once_keep_both_feeds_records(site, tmp_path, embedder, chunker, monkeypatch):
    """feeds.json is read before the fetch and written after the publish: a second feed ingest of the same
    index, started meanwhile, must neither fail on the ingest lock nor overwrite the first one's records."""
    import json

    from rag.ingest import feeds

    root = tmp_path / "index"
    ingest([write_corpus(tmp_path / "articles")], root, embedder, chunker)
    real = feeds.add_documents

    def slow(*args, **kwargs):  # holds the first run between its fetch and its publish
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(feeds, "add_documents", slow)
    results, errors = [], []

    def run(feed: str) -> None:
        try:
            results.append(_run(site, root, embedder, chunker, feeds=(feed,)))
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(feed,)) for feed in ("/rss.xml", "/atom.xml")]
    for t in threads:
        t.start()
        time.sleep(0.2)
    for t in threads:
        t.join(timeout=300)
    assert not errors and len(results) == 2
    recorded = json.loads((root / STATE_FILE).read_text())["feeds"]
    assert len(recorded) == 2 and all(r["entries"] for r in recorded.values())
    before = Counter(site.hits)
    _run(site, root, embedder, chunker)
    assert not {p for p in site.hits - before if p.startswith("/news/")} - {"/news/missing.html"}


def test_a_local_feed_file_through_the_cli(site, tmp_path):
    feed = tmp_path / "harbour.xml"
    site.rss_items = site.rss_items[:1]
    feed.write_bytes(site.rss(site.base))
    index = tmp_path / "index"
    env = {"RAG_SENTENCE_VECTORS": "false", "RAG_FEED_HOST_DELAY_S": "0", "RAG_FEED_USER_AGENT": USER_AGENT}
    result = CliRunner().invoke(app, ["ingest", "--feed", str(feed), "--index", str(index)], env=env)
    assert result.exit_code == 0, result.output
    assert "1 entries, 1 new" in result.output and "1 added" in result.output
    assert "harbour dredging" in _documents(index)["budget-2005"].text
    assert site.hits["/news/budget.html"] == 1

    result = CliRunner().invoke(app, ["ingest", "--feed", str(feed), "--index", str(index)], env=env)
    assert result.exit_code == 0 and "1 ingested before" in result.output and site.hits["/news/budget.html"] == 1

    result = CliRunner().invoke(app, ["ingest", "--feed", str(tmp_path / "none.xml"), "--index", str(index)], env=env)
    assert result.exit_code == 1 and "no such feed file" in result.output


@pytest.mark.parametrize(("key", "doc_id"), [
    ("https://news.example.org/2005/03/budget.html", "news.example.org/2005/03/budget.html"),
    ("https://news.example.org/story/7/", "news.example.org/story/7"),
    ("budget-2005", "budget-2005"),
])
def test_doc_ids_are_the_entry_id_made_safe(key, doc_id):
    assert entry_doc_id(key) == doc_id


def test_doc_ids_that_had_to_change_keep_two_keys_apart():
    assert entry_doc_id("https://x.org/a?id=1") != entry_doc_id("https://x.org/a?id=1&")
    assert entry_doc_id("https://x.org/../etc").startswith("x.org/-/etc-")
    assert len(entry_doc_id("https://x.org/" + "a" * 500)) <= 160


class TestPoliteClient:
    def test_redirects_are_followed_by_hand_within_the_rules(self, site):
        with PoliteClient(POLICY) as client:
            assert client.get(site.base + "/go/budget").url == site.base + "/news/budget.html"
            for path, reason in [("/go/private", "disallowed by"), ("/go/ftp", "only http and https"),
                                 ("/go/loop", "more than 3 redirects")]:
                with pytest.raises(FetchError, match=reason):
                    client.get(site.base + path)
        assert site.hits["/private/secret.html"] == 0 and site.hits["/go/loop"] == 4

    def test_a_content_length_over_the_cap_is_not_read(self, site):
        with PoliteClient(replace(POLICY, max_bytes=100)) as client, pytest.raises(FetchError, match="not read"):
            client.get(site.base + "/news/budget.html")

    @pytest.mark.parametrize(("status", "allowed"), [(404, True), (403, True), (500, False), (503, False)])
    def test_robots_txt_that_cannot_be_read_follows_rfc_9309(self, site, status, allowed):
        """4xx: no rules, everything allowed; 5xx (or no answer): the host is off limits for the run."""
        site.robots_status = status
        with PoliteClient(POLICY) as client:
            if allowed:
                assert client.get(site.base + "/private/secret.html").status == 200
            else:
                with pytest.raises(FetchError, match=f"robots.txt answered HTTP {status}"):
                    client.get(site.base + "/news/budget.html")
        assert site.hits["/robots.txt"] == 1

    def test_requests_to_one_host_are_spaced(self, site):
        with PoliteClient(replace(POLICY, host_delay_s=0.25)) as client:
            started = time.monotonic()
            for _ in range(3):  # robots.txt, then two pages
                client.get(site.base + "/news/budget.html")
            assert time.monotonic() - started >= 0.5
