"""RSS/Atom feeds: `rag ingest --feed URL_OR_FILE` reads each feed and adds its entries' pages to the index.

A feed is read by feedparser, from an http(s) URL or a local file; each entry's linked page is fetched
by a polite client (``PoliteClient``) and its article extracted by trafilatura, the same way a saved
``.html`` file is (``rag.ingest.documents.html_document``). Politeness, per request:

- a User-Agent naming the product (``RAG_FEED_USER_AGENT``); robots.txt rules are matched on its first word;
- robots.txt read once per host (scheme and port included) per run with the same client and timeouts.
  RFC 9309's rules for an unreadable one: a 4xx answer (none there) allows everything; a 5xx answer,
  a timeout or a failed connection disallows the whole host for this run (the page is reported);
- connect and read timeouts, a total time per download, and a size cap (``RAG_FEED_MAX_PAGE_BYTES``:
  a larger Content-Length is refused unread, a larger body abandoned as it streams past the cap);
- redirects followed by hand, at most ``RAG_FEED_MAX_REDIRECTS``, each hop http/https only and checked
  against its own host's robots.txt;
- at least ``RAG_FEED_HOST_DELAY_S`` between two requests to one host (more when robots.txt asks a
  Crawl-delay, up to 30 s).

A page that cannot be fetched or yields no article text falls back to the entry's own content or
summary when it has text (a warning says so); an entry with neither is skipped with the reason.

Incremental: ``<index>/feeds.json`` records, per feed, the entries ingested (entry id → doc_id) and the
feed's ETag/Last-Modified. A re-run fetches no page of an entry whose document is still in the index,
and sends a conditional GET for a feed whose entries were all ingested last time (a feed with a skipped
entry is read in full, so the entry is tried again). The file is written only after the new generation
is published; documents are only ever added (``rag.ingest.pipeline.add_documents``), never removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import httpx

from rag.durable import write_durably
from rag.embedding.model import Embedder
from rag.errors import UserError
from rag.filters import normalise_source
from rag.ingest.chunking import Chunker
from rag.ingest.dates import parse_published
from rag.ingest.documents import DEFAULT_LIMITS, UnreadableFile, decode_bytes, html_document, make_document, normalise_text
from rag.ingest.pipeline import IngestReport, add_documents, build_chunker
from rag.ingest.vectors import ProgressFn
from rag.records import Document, Skipped
from rag.settings import Settings
from rag.store.vectors import VectorPolicy

STATE_FILE = "feeds.json"  # beside the index's generations, like feedback.sqlite
ROBOTS_MAX_BYTES = 500_000  # RFC 9309: crawlers must parse at least 500 KiB
MAX_CRAWL_DELAY_S = 30.0  # a robots.txt Crawl-delay is honoured up to this
MAX_DOC_ID_CHARS = 150
HTML_TYPES = ("text/html", "application/xhtml+xml")
_REDIRECTS = {301, 302, 303, 307, 308}
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:(//)?", re.I)
_UNSAFE = re.compile(r"[^A-Za-z0-9._~/-]+|\.{2,}|/{2,}")


class FetchError(Exception):
    """A feed, robots.txt or page that could not be fetched; the message is the reason."""


@dataclass(frozen=True)
class FetchPolicy:
    """How ``PoliteClient`` fetches (``Settings.feed_*``)."""

    user_agent: str
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    total_timeout_s: float = 60.0
    max_bytes: int = 5_000_000
    max_redirects: int = 5
    host_delay_s: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        return cls(settings.feed_user_agent, settings.feed_connect_timeout_s, settings.feed_read_timeout_s,
                   settings.feed_page_timeout_s, settings.feed_max_page_bytes, settings.feed_max_redirects,
                   settings.feed_host_delay_s)


class Fetched(NamedTuple):
    """One response: the URL it came from (after redirects), status, headers and (for a 2xx) body."""

    url: str
    status: int
    headers: httpx.Headers
    body: bytes
    charset: str | None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class PoliteClient:
    """GET with robots.txt, a per-host delay, timeouts, a size cap and hand-followed redirects (module doc)."""

    def __init__(self, policy: FetchPolicy):
        self.policy = policy
        timeout = httpx.Timeout(policy.read_timeout_s, connect=policy.connect_timeout_s)
        self._client = httpx.Client(timeout=timeout, follow_redirects=False,
                                    headers={"User-Agent": policy.user_agent})
        self._robots: dict[str, tuple[RobotFileParser, str]] = {}  # origin → rules, why everything is refused
        self._last: dict[str, float] = {}  # origin → when its last request ended (monotonic)
        self._delay: dict[str, float] = {}

    def __enter__(self) -> PoliteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def get(self, url: str, headers: dict[str, str] | None = None) -> Fetched:
        """``url`` as the policy allows; raises ``FetchError`` (robots.txt, scheme, size, time, network)."""
        return self._follow(url, headers or {}, self.policy.max_bytes, robots=True)

    def _follow(self, url: str, headers: dict[str, str], cap: int, robots: bool) -> Fetched:
        for _ in range(self.policy.max_redirects + 1):
            if urlsplit(url).scheme not in ("http", "https"):
                raise FetchError(f"only http and https are fetched, not {url}")
            if robots:
                self._check_robots(url)
            fetched = self._download(url, headers, cap)
            location = fetched.headers.get("location")
            if fetched.status not in _REDIRECTS or not location:
                return fetched
            url = urljoin(url, location)
        raise FetchError(f"more than {self.policy.max_redirects} redirects (RAG_FEED_MAX_REDIRECTS)")

    def _check_robots(self, url: str) -> None:
        origin = _origin(url)
        if origin not in self._robots:
            self._robots[origin] = self._read_robots(origin)
        rules, refusal = self._robots[origin]
        if not rules.can_fetch(self.policy.user_agent, url):
            raise FetchError(f"disallowed by {origin}/robots.txt" + (f" ({refusal})" if refusal else ""))

    def _read_robots(self, origin: str) -> tuple[RobotFileParser, str]:
        rules = RobotFileParser(f"{origin}/robots.txt")
        try:
            fetched = self._follow(rules.url, {}, ROBOTS_MAX_BYTES, robots=False)
        except FetchError as exc:
            rules.disallow_all = True
            return rules, f"robots.txt unreachable: {exc}"
        if 200 <= fetched.status < 300:
            rules.parse(fetched.body.decode("utf-8", errors="replace").splitlines())
            delay = rules.crawl_delay(self.policy.user_agent)
            if delay:
                self._delay[origin] = min(float(delay), MAX_CRAWL_DELAY_S)
        elif 400 <= fetched.status < 500:
            rules.allow_all = True
        else:
            rules.disallow_all = True
            return rules, f"robots.txt answered HTTP {fetched.status}"
        return rules, ""

    def _wait(self, origin: str) -> None:
        delay = max(self.policy.host_delay_s, self._delay.get(origin, 0.0))
        last = self._last.get(origin)
        if last is not None and (pause := last + delay - time.monotonic()) > 0:
            time.sleep(pause)

    def _download(self, url: str, headers: dict[str, str], cap: int) -> Fetched:
        """One request, no redirect followed; a 2xx body is read up to ``cap`` bytes."""
        origin = _origin(url)
        self._wait(origin)
        started = time.monotonic()
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                body = self._read_body(response, cap, started) if response.is_success else b""
                return Fetched(str(response.url), response.status_code, response.headers, body,
                               response.charset_encoding)
        except httpx.TimeoutException as exc:
            raise FetchError(f"timed out ({type(exc).__name__}: RAG_FEED_CONNECT_TIMEOUT_S / "
                             "RAG_FEED_READ_TIMEOUT_S)") from exc
        except httpx.HTTPError as exc:
            raise FetchError(f"cannot be fetched ({type(exc).__name__}: {exc})") from exc
        finally:
            self._last[origin] = time.monotonic()

    def _read_body(self, response: httpx.Response, cap: int, started: float) -> bytes:
        over = f"over the {cap:,}-byte limit (RAG_FEED_MAX_PAGE_BYTES)"
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > cap:
            raise FetchError(f"{int(length):,} bytes, {over}: not read")
        body = bytearray()
        for piece in response.iter_bytes():
            body += piece
            if len(body) > cap:
                raise FetchError(f"{over}: stopped reading")
            if time.monotonic() - started > self.policy.total_timeout_s:
                raise FetchError(f"took over {self.policy.total_timeout_s:g} s (RAG_FEED_PAGE_TIMEOUT_S)")
        return bytes(body)


def entry_doc_id(key: str) -> str:
    """A stable doc_id from an entry's id or link: the scheme dropped, unsafe characters replaced; when
    that changed anything (or it is long), a hash of the whole key keeps two keys apart.

    Example:
        >>> entry_doc_id("https://news.example.org/2005/03/budget.html")
        'news.example.org/2005/03/budget.html'
        >>> entry_doc_id("tag:example.org,2005:story 7")
        'example.org-2005-story-7-97152865'
    """
    text = _SCHEME.sub("", key.strip()).strip("/")
    clean = _UNSAFE.sub("-", text).strip("-./")
    if clean == text and 0 < len(clean) <= MAX_DOC_ID_CHARS:
        return clean
    return f"{clean[:MAX_DOC_ID_CHARS]}-{hashlib.sha1(key.encode('utf-8')).hexdigest()[:8]}".lstrip("-")


class Entry(NamedTuple):
    """A feed entry as ingest reads it."""

    key: str  # id/guid, else link: what the state file remembers
    doc_id: str
    link: str
    title: str
    published: Any  # the raw text, or a datetime from feedparser's parsed struct when only that reads
    summary: str  # the entry's content or summary as plain text ("" when it has none)


def _html_text(value: str) -> str:
    """Plain text of a feed's (sanitised) HTML fragment."""
    import lxml.html

    if not value.strip():
        return ""
    try:
        text = lxml.html.fragment_fromstring(value, create_parent="div").text_content()
    except Exception:  # noqa: BLE001 - lxml raises several kinds on odd fragments; then it is text
        text = value
    return normalise_text(re.sub(r"[ \t]+", " ", text))


def _published(entry: Any) -> Any:
    raw = entry.get("published") or entry.get("updated") or ""
    struct = entry.get("published_parsed") or entry.get("updated_parsed")
    if raw and parse_published(raw).iso is None and struct:  # feedparser read a date dateutil is not let guess
        return datetime(*struct[:6], tzinfo=UTC)
    return raw


def _entry(item: Any) -> Entry | None:
    link = item.get("link") or ""
    key = item.get("id") or link
    if not key:
        return None
    content = item.get("content") or []
    summary = content[0].get("value", "") if content else item.get("summary", "")
    return Entry(key, entry_doc_id(key), link, (item.get("title") or "").strip(), _published(item), _html_text(summary))


@dataclass
class FeedSummary:
    """One feed's part of a run, for the report."""

    feed: str
    entries: int = 0
    new: int = 0  # entries added (from their page or their summary)
    known: int = 0  # entries ingested by an earlier run, their pages not fetched
    not_modified: bool = False
    error: str = ""

    def line(self) -> str:
        if self.error:
            return f"feed {self.feed}: not read ({self.error})"
        if self.not_modified:
            return f"feed {self.feed}: not modified since the last run"
        return f"feed {self.feed}: {self.entries} entries, {self.new} new, {self.known} ingested before"


@dataclass
class FeedReport:
    """What `rag ingest --feed` did: the ingest report (its ``skipped`` and ``warnings`` hold the
    entries' fetch problems) and one summary per feed."""

    ingest: IngestReport
    feeds: list[FeedSummary] = field(default_factory=list)


class FeedState:
    """``<index>/feeds.json``: per feed, ``etag``, ``last_modified``, ``entries`` (key → doc_id), ``complete``."""

    def __init__(self, path: Path, feeds: dict[str, dict[str, Any]]):
        self.path, self.feeds = path, feeds

    @classmethod
    def load(cls, index_dir: Path) -> FeedState:
        path = index_dir / STATE_FILE
        if not path.is_file():
            return cls(path, {})
        try:
            return cls(path, json.loads(path.read_text(encoding="utf-8"))["feeds"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{path} is damaged ({exc}); delete it to fetch every feed entry again") from exc

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staged = self.path.with_suffix(".json.tmp")
        write_durably(staged, json.dumps({"version": 1, "feeds": self.feeds}, indent=1).encode("utf-8"))
        os.replace(staged, self.path)


def _feed_key(feed: str) -> str:
    return feed if _is_url(feed) else str(Path(feed).resolve())


def _is_url(feed: str) -> bool:
    return feed.lower().startswith(("http://", "https://"))


def _read_feed(feed: str, client: PoliteClient, record: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    """The parsed feed (None: not modified) and its validators; raises ``FetchError``."""
    import feedparser

    if _is_url(feed):
        conditional = {}
        if record.get("complete"):
            conditional = {k: v for k, v in (("If-None-Match", record.get("etag")),
                                             ("If-Modified-Since", record.get("last_modified"))) if v}
        fetched = client.get(feed, conditional)
        if fetched.status == 304:
            return None, {}
        if not 200 <= fetched.status < 300:
            raise FetchError(f"HTTP {fetched.status}")
        data, base = fetched.body, fetched.url
        validators = {"etag": fetched.headers.get("etag", ""), "last_modified": fetched.headers.get("last-modified", "")}
    else:
        path = Path(feed)
        if path.stat().st_size > client.policy.max_bytes:
            raise FetchError(f"over the {client.policy.max_bytes:,}-byte limit (RAG_FEED_MAX_PAGE_BYTES)")
        data, base, validators = path.read_bytes(), "", {}  # a local feed's relative links lead nowhere
    # Given bytes, feedparser parses them and never fetches anything itself.
    parsed = feedparser.parse(data, response_headers={"content-location": base} if base else None)
    if not parsed.entries and not parsed.version:
        raise FetchError(f"not an RSS or Atom feed ({parsed.get('bozo_exception') or 'no feed element'})")
    return parsed, validators


def _page_document(entry: Entry, client: PoliteClient, source: str, record_bytes: int) -> Document:
    """The entry's page as a Document; raises ``FetchError``/``UnreadableFile`` with the reason."""
    fetched = client.get(entry.link)
    if not 200 <= fetched.status < 300:
        raise FetchError(f"HTTP {fetched.status}")
    kind = fetched.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind and kind not in HTML_TYPES:
        raise FetchError(f"not an HTML page ({kind})")
    html = ""
    if fetched.charset:
        try:
            html = fetched.body.decode(fetched.charset, errors="replace")
        except LookupError:  # an encoding Python does not know: detect it
            pass
    known = {"title": entry.title, "published": entry.published, "source": source or fetched.url,
             "url": fetched.url}
    doc = html_document(html or decode_bytes(fetched.body), entry.doc_id, url=fetched.url, known=known)
    if not doc.text.strip():
        raise UnreadableFile("no article text found in HTML")
    if len(doc.text.encode("utf-8")) > record_bytes:
        raise UnreadableFile("article text over RAG_MAX_RECORD_BYTES")
    return doc


def _entry_document(entry: Entry, client: PoliteClient, source: str, record_bytes: int) -> tuple[Document | None, str]:
    """The entry's document (its page's, else its summary's, else None) and what went wrong with the page."""
    problem = "the entry has no link"
    if entry.link:
        try:
            return _page_document(entry, client, source, record_bytes), ""
        except (FetchError, UnreadableFile) as exc:
            problem = str(exc)
    if not entry.summary:
        return None, problem
    meta = {"published": entry.published, "source": source or (entry.link if _is_url(entry.link) else ""),
            "url": entry.link}
    return make_document(entry.doc_id, entry.title or entry.doc_id, entry.summary, {k: v for k, v in meta.items() if v}), problem


def _collect(feed: str, record: dict[str, Any], client: PoliteClient, indexed: set[str], report: IngestReport,
             record_bytes: int) -> tuple[FeedSummary, list[Document], dict[str, Any] | None]:
    """One feed's new documents and its next state record (None: leave the state as it is)."""
    summary = FeedSummary(feed)
    try:
        parsed, validators = _read_feed(feed, client, record)
    except (FetchError, OSError) as exc:
        summary.error = str(exc)
        report.skipped.append(Skipped(feed, f"feed not read: {exc}"))
        return summary, [], None
    if parsed is None:
        summary.not_modified = True
        return summary, [], None
    source = normalise_source(parsed.feed.get("link", ""))
    known: dict[str, str] = dict(record.get("entries", {}))
    documents: list[Document] = []
    complete = True
    for number, item in enumerate(parsed.entries, start=1):
        summary.entries += 1
        if (entry := _entry(item)) is None:
            report.skipped.append(Skipped(feed, f"entry {number} has neither an id nor a link"))
            continue
        if known.get(entry.key) in indexed:
            summary.known += 1
            continue
        doc, problem = _entry_document(entry, client, source, record_bytes)
        where = entry.link or entry.key
        if doc is None:
            report.skipped.append(Skipped(where, problem))
            complete = False
            continue
        if problem:
            report.warnings.append(f"{doc.doc_id}: page {where} not used ({problem}); ingested from the feed's summary")
        documents.append(doc)
        known[entry.key] = doc.doc_id
        summary.new += 1
    return summary, documents, {**validators, "entries": known, "complete": complete}


def _indexed(index_dir: Path) -> tuple[set[str], int]:
    """The doc_ids in the live index and its chunk count (none yet: empty)."""
    from rag.store.index import Index, IndexNotFound

    try:
        index = Index.open(index_dir)
    except IndexNotFound:
        return set(), 0
    try:
        return set(index.hashes()), index.counts()[1]
    finally:
        index.close()


def add_feeds(feeds: list[str], root: Path, embedder: Embedder, chunker: Chunker, policy: FetchPolicy, *,
              batch_size: int = 16, progress: ProgressFn | None = None, sentence_embedder: Embedder | None = None,
              vector_policy: VectorPolicy = VectorPolicy(), record_bytes: int = DEFAULT_LIMITS.record_bytes) -> FeedReport:
    """Add the new entries of ``feeds`` (http(s) URLs or files) to the index at ``root`` (module doc).

    Raises:
        UserError: a feed that is neither a URL nor a file, a damaged state file, an index to rebuild first.
    """
    for feed in feeds:
        if not _is_url(feed) and not Path(feed).is_file():
            raise UserError(f"no such feed file {feed}, and not an http(s) URL")
    # feeds.json is read before the fetch and written after the publish (the ingest lock covers only the
    # publish): a second feed ingest of this index waits here, so neither overwrites the other's records.
    with _state_lock(root):
        return _add_feeds(feeds, root, embedder, chunker, policy, batch_size=batch_size, progress=progress,
                          sentence_embedder=sentence_embedder, vector_policy=vector_policy, record_bytes=record_bytes)


@contextmanager
def _state_lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".feeds.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _add_feeds(feeds: list[str], root: Path, embedder: Embedder, chunker: Chunker, policy: FetchPolicy, *,
               batch_size: int, progress: ProgressFn | None, sentence_embedder: Embedder | None,
               vector_policy: VectorPolicy, record_bytes: int) -> FeedReport:
    state = FeedState.load(root)
    indexed, chunks = _indexed(root)
    report = FeedReport(IngestReport(index=str(root)))
    documents: list[Document] = []
    records: dict[str, dict[str, Any]] = {}
    with PoliteClient(policy) as client:
        for feed in dict.fromkeys(feeds):
            key = _feed_key(feed)
            summary, docs, record = _collect(feed, state.feeds.get(key, {}), client, indexed, report.ingest, record_bytes)
            report.feeds.append(summary)
            documents += docs
            if record is not None:
                records[key] = record
    if documents:
        unique: dict[str, Document] = {}
        for doc in documents:  # an entry in two feeds: the first feed's
            unique.setdefault(doc.doc_id, doc)
        added = add_documents(list(unique.values()), root, embedder, chunker, batch_size=batch_size,
                              progress=progress, sentence_embedder=sentence_embedder, vector_policy=vector_policy)
        added.skipped, added.warnings = report.ingest.skipped, report.ingest.warnings + added.warnings
        report.ingest = added
    else:
        report.ingest.documents_total, report.ingest.chunks_total = len(indexed), chunks
    state.feeds.update(records)  # only now: the documents these records name are published
    state.save()
    return report


def ingest_feeds(settings: Settings, feeds: list[str], *, progress: ProgressFn | None = None) -> FeedReport:
    """`rag ingest --feed`: ``add_feeds`` with the parts and limits ``settings`` names."""
    from rag.embedding.factory import build_embedder, build_sentence_embedder

    embedder = build_embedder(settings)
    sentence_embedder = build_sentence_embedder(settings) if settings.sentence_vectors else None
    return add_feeds(feeds, settings.index_dir, embedder, build_chunker(settings, embedder),
                     FetchPolicy.from_settings(settings), batch_size=settings.embedding_batch_size,
                     progress=progress, sentence_embedder=sentence_embedder,
                     vector_policy=VectorPolicy.from_settings(settings), record_bytes=settings.max_record_bytes)
