"""Load article files into normalised ``Document`` records.

Formats (README "Corpus formats"): ``.md``/``.txt`` with optional YAML front matter or a
first-line title, ``.html`` through trafilatura, ``.json``/``.jsonl`` records (``id`` or BEIR ``_id``).
A file, record or symlink that cannot be read is reported as a ``Skipped`` entry and the load goes on.
``published`` is stored as ISO 8601 and ``source`` as a site name or domain (``rag.ingest.dates``); a
date that cannot be read leaves the document without one, its raw value in ``metadata["published_raw"]``,
and ``document_warnings`` says so.
Memory: a ``.jsonl`` is streamed line by line (``iter_documents`` yields as it reads); every other
format is read whole, which ``Limits.file_bytes`` bounds.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol, TypeVar

import yaml

from rag.filters import normalise_source
from rag.ingest.dates import parse_published
from rag.records import Document, Skipped
from rag.settings import Settings

TEXT_SUFFIXES = {".md", ".markdown", ".txt"}
HTML_SUFFIXES = {".html", ".htm"}
# A corpus folder's own README/LICENSE describes the folder; it is not an article.
FOLDER_DOC_STEMS = {"readme", "license", "licence", "changelog"}
MAX_TITLE_CHARS = 200
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*\r?\n", re.S)
_T = TypeVar("_T")
# Past the record cap a JSONL line is read through in pieces of this size and never held whole.
_PIECE_BYTES = 1 << 20
PUBLISHED_RAW = "published_raw"  # metadata key: the date an article carried when it could not be read
_YAML_TIMESTAMP = "tag:yaml.org,2002:timestamp"


@dataclass(frozen=True)
class Limits:
    """Size caps of one load (``Settings.max_file_bytes``, ``Settings.max_record_bytes``)."""

    file_bytes: int
    record_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.max_file_bytes, settings.max_record_bytes)


DEFAULT_LIMITS = Limits(Settings.model_fields["max_file_bytes"].default,
                        Settings.model_fields["max_record_bytes"].default)


class UnreadableFile(Exception):
    """Raised by a loader for a file it cannot turn into documents."""


class Loader(Protocol):
    """One format: a file → its documents, and a ``Skipped`` for each record it leaves out."""

    def __call__(self, path: Path, doc_id: str, limits: Limits) -> Iterable[Document | Skipped]: ...


def _size(n: int, *, exact: bool = False) -> str:
    """``25.0 MB``, ``512.3 kB``, ``80 bytes``; ``exact`` (for a limit) drops a needless ``.0``."""
    for unit, name in ((1_000_000, "MB"), (1_000, "kB")):
        if n >= unit:
            return f"{n / unit:{'g' if exact else '.1f'}} {name}"
    return f"{n} bytes"


def _over(what: str, size: int, limit: int, setting: str) -> str:
    return f"{what} is {_size(size)}, over the {_size(limit, exact=True)} limit ({setting})"


def _read_capped(path: Path, limits: Limits) -> bytes:
    """The whole file, refused unread when it is over the file cap."""
    size = path.stat().st_size
    if size > limits.file_bytes:
        raise UnreadableFile(_over("file", size, limits.file_bytes, "RAG_MAX_FILE_BYTES"))
    return path.read_bytes()


def _reason(exc: Exception) -> str:
    """A skip reason from what a loader raised: ours and the OS's as they are, anything else named."""
    if isinstance(exc, (OSError, UnreadableFile)):
        return str(exc)
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc}"
    return f"cannot be read: {type(exc).__name__}: {str(exc)[:200]}"


def decode_bytes(data: bytes) -> str:
    """UTF-8 first (with or without BOM), then charset detection; NUL bytes mean binary."""
    if b"\x00" in data[:8192]:
        raise UnreadableFile("binary file (NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    # A mostly-ASCII file with a few high bytes is almost always Windows-1252/Latin-1 (the WHATWG
    # default for unlabelled Western text); detectors guess wildly on so little evidence (on the BBC
    # corpus charset-normalizer reads "£15.8m" as Shift-JIS).
    high = sum(1 for byte in data if byte >= 0x80)
    if high <= max(8, len(data) // 50):
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise UnreadableFile("undecodable bytes (not UTF-8, no encoding detected)")
    return str(best)


def normalise_text(text: str) -> str:
    """NFC, Unix newlines, no trailing spaces at line ends; offsets are taken after this."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def _as_str(value: Any) -> str:
    return "" if value is None else str(value).strip()


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: front matter needs none, and nested aliases expand a few bytes into gigabytes.

    Dates stay text, for ``parse_published`` to read by the rules every format follows (PyYAML's own
    reading would fail the whole front matter on one impossible date such as 2024-02-30).
    """

    yaml_implicit_resolvers = {first: [(tag, regexp) for tag, regexp in resolvers if tag != _YAML_TIMESTAMP]
                               for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("YAML aliases (*name) are not allowed in front matter")
        return super().compose_node(parent, index)


def parse_text_article(raw: str, fallback_title: str) -> tuple[str, str, dict[str, Any]]:
    """Split a Markdown/plain article into (title, body, front matter)."""
    meta: dict[str, Any] = {}
    match = _FRONT_MATTER.match(raw)
    if match:
        try:
            loaded = yaml.load(match.group(1), Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader
        except yaml.YAMLError as exc:
            raise UnreadableFile(f"invalid YAML front matter: {exc}") from exc
        if isinstance(loaded, dict):
            meta, raw = loaded, raw[match.end():]
    body = normalise_text(raw)
    title = _as_str(meta.get("title"))
    if not title:
        first, sep, rest = body.partition("\n")
        candidate = first.strip().lstrip("#").strip()
        if sep and rest.startswith("\n") and 0 < len(candidate) <= MAX_TITLE_CHARS:
            title, body = candidate, rest.strip("\n")
    return title or fallback_title, body, meta


def make_document(doc_id: str, title: str, text: str, meta: dict[str, Any]) -> Document:
    """A ``Document`` as every format stores it: ``published`` read as ISO 8601 (its raw value kept in
    ``metadata["published_raw"]`` when unreadable), ``source`` normalised, other ``meta`` keys as metadata."""
    extra = {k: v for k, v in meta.items() if k not in {"title", "source", "published", "date", "text"}}
    raw = meta.get("published") or meta.get("date")
    published = parse_published(raw)
    if published.reason:
        extra[PUBLISHED_RAW] = raw
    return Document(
        doc_id=doc_id,
        title=_as_str(title) or doc_id,
        text=text,
        source=normalise_source(_as_str(meta.get("source"))),
        published=published.iso or "",
        metadata=json.loads(json.dumps(extra, default=str)),
    )


def document_warnings(doc: Document) -> list[str]:
    """What a loaded document lost on the way in, one line each, for the ingest report.

    Example:
        >>> document_warnings(Document("d", "T", "x", metadata={"published_raw": "soon"}))
        ["d: published 'soon': not a date (Unknown string format); stored without a date"]
    """
    if doc.published or PUBLISHED_RAW not in doc.metadata:
        return []
    raw = doc.metadata[PUBLISHED_RAW]
    reason = parse_published(raw).reason
    return [f"{doc.doc_id}: published {str(raw)[:80]!r}: {reason}; stored without a date"] if reason else []


def _load_text(path: Path, doc_id: str, limits: Limits) -> list[Document]:
    title, body, meta = parse_text_article(decode_bytes(_read_capped(path, limits)), doc_id)
    return [make_document(doc_id, title, body, meta)]


def html_document(html: str, doc_id: str, *, url: str | None = None, known: dict[str, Any] | None = None) -> Document:
    """A web page's article, extracted by trafilatura: its text, title, date, site (URL or name) and author.

    Args:
        url: where the page came from (helps trafilatura; the source when the page names none).
        known: values that win over what the page says (``title``, ``published``, ``source``: a feed's).
    Raises:
        UnreadableFile: trafilatura found no article text.
    """
    import trafilatura

    extracted = trafilatura.bare_extraction(html, url=url, with_metadata=True)
    if extracted is None:
        raise UnreadableFile("no article text found in HTML")
    data = extracted if isinstance(extracted, dict) else extracted.as_dict()
    meta = {"title": data.get("title"), "source": data.get("url") or data.get("sitename") or url,
            "published": data.get("date"), "author": data.get("author")}
    meta = {k: v for k, v in {**meta, **(known or {})}.items() if v}
    return make_document(doc_id, meta.pop("title", "") or doc_id, normalise_text(data.get("text") or ""), meta)


def _load_html(path: Path, doc_id: str, limits: Limits) -> list[Document]:
    return [html_document(decode_bytes(_read_capped(path, limits)), doc_id)]


def _record_document(record: Any) -> Document:
    if not isinstance(record, dict):
        raise UnreadableFile("a record must be a JSON object")
    doc_id = _as_str(record.get("id", record.get("_id")))
    if not doc_id:
        raise UnreadableFile("record has no 'id' or '_id'")
    text = normalise_text(_as_str(record.get("text")))
    meta = dict(record.get("metadata") or {}) if isinstance(record.get("metadata"), dict) else {}
    for key in ("source", "published"):
        if record.get(key):
            meta[key] = record[key]
    return make_document(doc_id, _as_str(record.get("title")) or doc_id, text, meta)


def _line_document(data: bytes) -> Document:
    return _record_document(json.loads(decode_bytes(data)))


def _record_or_skip(path: Path, where: str, make: Callable[[_T], Document], value: _T) -> Document | Skipped:
    """``make(value)``, one record's document; whatever it raises skips that record alone."""
    try:
        return make(value)
    except Exception as exc:  # noqa: BLE001 - one bad record (100k nested "[") never loses the others
        return Skipped(str(path), f"{where}: {_reason(exc)}")


def _load_json(path: Path, doc_id: str, limits: Limits) -> Iterator[Document | Skipped]:
    """A JSON object or array of them; read whole, so under the file cap."""
    try:
        loaded = json.loads(decode_bytes(_read_capped(path, limits)))
    except json.JSONDecodeError as exc:
        raise UnreadableFile(f"invalid JSON: {exc}") from exc
    records = loaded if isinstance(loaded, list) else [loaded]
    for number, record in enumerate(records, start=1):
        yield _record_or_skip(path, f"record {number}", _record_document, record)


class _Line(NamedTuple):
    number: int
    data: bytes  # without its line break; empty when the line is over the cap (it was never kept)
    size: int


def _read_lines(stream: BinaryIO, cap: int) -> Iterator[_Line]:
    """The stream's lines, none held longer than ``cap`` bytes: a longer one is read through and counted.

    Split on ``\n`` alone: ``str.splitlines`` would also split at U+2028, which JSON allows inside strings.
    """
    for number in itertools.count(1):
        data = stream.readline(cap + 1)
        if not data:
            return
        size, last = len(data), data
        while last and not last.endswith(b"\n") and size > cap:
            last = stream.readline(_PIECE_BYTES)
            size += len(last)
        size -= len(last) - len(last.rstrip(b"\r\n"))
        yield _Line(number, data.rstrip(b"\r\n") if size <= cap else b"", size)


def _load_jsonl(path: Path, doc_id: str, limits: Limits) -> Iterator[Document | Skipped]:
    """One record per line, streamed: memory holds one line at a time, so the file cap does not apply;
    a line over the record cap is skipped with its number and the rest of the file still loads."""
    with path.open("rb") as stream:
        for line in _read_lines(stream, limits.record_bytes):
            where = f"line {line.number}"
            if line.size > limits.record_bytes:
                yield Skipped(str(path), f"{where}: " + _over("record", line.size, limits.record_bytes,
                                                               "RAG_MAX_RECORD_BYTES"))
            elif line.data.strip():
                yield _record_or_skip(path, where, _line_document, line.data)


_LOADERS: dict[str, Loader] = {**{s: _load_text for s in TEXT_SUFFIXES}, **{s: _load_html for s in HTML_SUFFIXES},
                               ".json": _load_json, ".jsonl": _load_jsonl}


def _real(path: Path) -> Path:
    """``path`` with every symlink resolved; on a link loop, where the loop starts (``Path.resolve``
    raises RuntimeError there on Python 3.11)."""
    return Path(os.path.realpath(path))


def _symlink_refusal(link: Path, real_root: Path) -> str:
    """Why ``link`` is not followed, or "" to follow it: a link may only lead to somewhere in the folder."""
    target = _real(link)
    if not target.is_relative_to(real_root):
        return f"symlink to {target}, outside the ingested folder {real_root}: not followed"
    if not target.exists():
        return f"broken symlink (no {target})"
    return ""


def _walk(folder: Path, real_root: Path, entered: set[Path]) -> Iterator[Path | Skipped]:
    """Files under ``folder`` in name order, hidden names left out; a folder is entered once (no link loops)."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        yield Skipped(str(folder), f"folder cannot be listed: {exc}")
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        refusal = _symlink_refusal(entry, real_root) if entry.is_symlink() else ""
        if refusal:
            yield Skipped(str(entry), refusal)
        elif entry.is_dir():
            real = _real(entry)
            # Only a link can lead back to a folder; a real one is always walked (its files are
            # deduplicated by iter_files, which keeps their real paths).
            if entry.is_symlink() and real in entered:
                yield Skipped(str(entry), f"symlink to {real}, a folder this ingest already walks")
            else:
                entered.add(real)
                yield from _walk(entry, real_root, entered)
        elif entry.is_file():
            yield entry


def _is_canonical(file: Path, root: Path, real_root: Path) -> bool:
    """``file``'s path in the folder is its real one (no symlink on the way)."""
    return _real(file) == real_root / file.relative_to(root)


def iter_files(paths: list[Path]) -> Iterator[tuple[Path, Path] | Skipped]:
    """Yield (file, root) pairs in a stable order, ``root`` being what doc_ids are relative to, and a
    ``Skipped`` for each symlink not followed and each file reached a second time."""
    taken: dict[Path, Path] = {}  # real file → the path it is ingested as
    for path in paths:
        if not path.is_dir():
            files, root = [path], path.parent
        else:
            real_root = _real(path)
            found = list(_walk(path, real_root, {real_root}))
            yield from (item for item in found if isinstance(item, Skipped))
            root = path
            # A file reached both directly and through a link keeps the doc_id of its real path.
            files = sorted((f for f in found if isinstance(f, Path)),
                           key=lambda f: not _is_canonical(f, path, real_root))
        for file in files:
            real = _real(file)
            if real in taken:
                yield Skipped(str(file), f"same file as {taken[real]}, which is ingested already")
            else:
                taken[real] = file
                yield file, root


def load_file(file: Path, root: Path, limits: Limits) -> Iterator[Document | Skipped]:
    """One file's documents; anything it raises skips what is left of the file, with the reason."""
    loader = _LOADERS.get(file.suffix.lower())
    if file.stem.lower() in FOLDER_DOC_STEMS:
        yield Skipped(str(file), "folder README/LICENSE, not an article")
    elif loader is None:
        yield Skipped(str(file), f"unsupported file type {file.suffix or '(none)'}")
    else:
        try:
            yield from loader(file, file.relative_to(root).with_suffix("").as_posix(), limits)
        except Exception as exc:  # noqa: BLE001 - one bad file (100k nested "[", an alias bomb) never ends an ingest
            yield Skipped(str(file), _reason(exc))


def admit(doc: Document, file: Path, seen: set[str], limits: Limits) -> Document | Skipped:
    """``doc`` if it has text, within the record cap, and a doc_id not loaded before; else why not."""
    where = f"{file}#{doc.doc_id}"
    if not doc.text.strip():
        return Skipped(where, "empty: no text")
    if (size := len(doc.text.encode("utf-8"))) > limits.record_bytes:
        return Skipped(where, _over("article text", size, limits.record_bytes, "RAG_MAX_RECORD_BYTES"))
    if doc.doc_id in seen:
        return Skipped(where, f"duplicate doc_id {doc.doc_id!r}")
    seen.add(doc.doc_id)
    return doc


def iter_documents(paths: list[Path], limits: Limits = DEFAULT_LIMITS) -> Iterator[Document | Skipped]:
    """Every supported file under ``paths`` as it is read: documents (doc_ids unique, the first kept)
    and, in between, the files, records and symlinks skipped, each with a reason.

    A ``.jsonl`` yields record by record, so a consumer that drops what it does not need holds
    one line of it at a time.
    """
    seen: set[str] = set()
    for item in iter_files(paths):
        if isinstance(item, Skipped):
            yield item
            continue
        for loaded in load_file(*item, limits):
            yield loaded if isinstance(loaded, Skipped) else admit(loaded, item[0], seen, limits)


def load_documents(paths: list[Path], limits: Limits = DEFAULT_LIMITS) -> tuple[list[Document], list[Skipped]]:
    """Load every supported file under ``paths`` (``iter_documents``, collected).

    Returns:
        The documents (doc_ids unique) and the files or records skipped, each with a reason.
    """
    docs: list[Document] = []
    skipped: list[Skipped] = []
    for item in iter_documents(paths, limits):
        (skipped if isinstance(item, Skipped) else docs).append(item)  # type: ignore[arg-type]
    return docs, skipped
