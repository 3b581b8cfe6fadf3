"""Load article files into normalised ``Document`` records.

Formats (README "Corpus formats"): ``.md``/``.txt`` with optional YAML front matter or a
first-line title, ``.html`` through trafilatura, ``.json``/``.jsonl`` records (``id`` or BEIR ``_id``).
A file that cannot be read is reported as a ``Skipped`` entry and the load goes on.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from rag.records import Document, Skipped

TEXT_SUFFIXES = {".md", ".markdown", ".txt"}
HTML_SUFFIXES = {".html", ".htm"}
JSON_SUFFIXES = {".json", ".jsonl"}
# A corpus folder's own README/LICENSE describes the folder; it is not an article.
FOLDER_DOC_STEMS = {"readme", "license", "licence", "changelog"}
MAX_TITLE_CHARS = 200
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*\r?\n", re.S)


class UnreadableFile(Exception):
    """Raised by a loader for a file it cannot turn into documents."""


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
    """YAML without aliases: front matter needs none, and nested aliases expand a few bytes into gigabytes."""

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


def _document(doc_id: str, title: str, text: str, meta: dict[str, Any]) -> Document:
    extra = {k: v for k, v in meta.items() if k not in {"title", "source", "published", "date", "text"}}
    return Document(
        doc_id=doc_id,
        title=_as_str(title) or doc_id,
        text=text,
        source=_as_str(meta.get("source")),
        published=_as_str(meta.get("published") or meta.get("date")),
        metadata=json.loads(json.dumps(extra, default=str)),
    )


def _load_text(path: Path, doc_id: str) -> list[Document]:
    title, body, meta = parse_text_article(decode_bytes(path.read_bytes()), doc_id)
    return [_document(doc_id, title, body, meta)]


def _load_html(path: Path, doc_id: str) -> list[Document]:
    import trafilatura

    extracted = trafilatura.bare_extraction(decode_bytes(path.read_bytes()), with_metadata=True)
    if extracted is None:
        raise UnreadableFile("no article text found in HTML")
    data = extracted if isinstance(extracted, dict) else extracted.as_dict()
    meta = {"source": data.get("url") or data.get("sitename") or "", "published": data.get("date") or "",
            "author": data.get("author") or ""}
    text = normalise_text(data.get("text") or "")
    return [_document(doc_id, data.get("title") or doc_id, text, {k: v for k, v in meta.items() if v})]


def _record_document(record: Any, where: str) -> Document:
    if not isinstance(record, dict):
        raise UnreadableFile(f"{where}: a record must be a JSON object")
    doc_id = _as_str(record.get("id", record.get("_id")))
    if not doc_id:
        raise UnreadableFile(f"{where}: record has no 'id' or '_id'")
    text = normalise_text(_as_str(record.get("text")))
    meta = dict(record.get("metadata") or {}) if isinstance(record.get("metadata"), dict) else {}
    for key in ("source", "published"):
        if record.get(key):
            meta[key] = record[key]
    return _document(doc_id, _as_str(record.get("title")) or doc_id, text, meta)


def _load_json(path: Path, doc_id: str) -> list[Document]:
    raw = decode_bytes(path.read_bytes())
    try:
        if path.suffix.lower() == ".jsonl":
            records = [json.loads(line) for line in raw.splitlines() if line.strip()]
        else:
            loaded = json.loads(raw)
            records = loaded if isinstance(loaded, list) else [loaded]
    except json.JSONDecodeError as exc:
        raise UnreadableFile(f"invalid JSON: {exc}") from exc
    return [_record_document(rec, f"record {i + 1}") for i, rec in enumerate(records)]


_LOADERS = {**{s: _load_text for s in TEXT_SUFFIXES}, **{s: _load_html for s in HTML_SUFFIXES},
            **{s: _load_json for s in JSON_SUFFIXES}}


def iter_files(paths: list[Path]) -> Iterator[tuple[Path, Path]]:
    """Yield (file, root) pairs in a stable order; ``root`` is what doc_ids are relative to."""
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                if not any(part.startswith(".") for part in file.relative_to(path).parts):
                    yield file, path
        else:
            yield path, path.parent


def load_documents(paths: list[Path]) -> tuple[list[Document], list[Skipped]]:
    """Load every supported file under ``paths``.

    Returns:
        The documents (doc_ids unique) and the files or records skipped, each with a reason.
    """
    docs: dict[str, Document] = {}
    skipped: list[Skipped] = []
    for file, root in iter_files(paths):
        loader = _LOADERS.get(file.suffix.lower())
        if file.stem.lower() in FOLDER_DOC_STEMS:
            skipped.append(Skipped(str(file), "folder README/LICENSE, not an article"))
            continue
        if loader is None:
            skipped.append(Skipped(str(file), f"unsupported file type {file.suffix or '(none)'}"))
            continue
        doc_id = file.relative_to(root).with_suffix("").as_posix()
        try:
            loaded = loader(file, doc_id)
        except (OSError, UnreadableFile) as exc:
            skipped.append(Skipped(str(file), str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - one bad file (a 2024-02-30 date, 100k nested "[") never ends an ingest
            skipped.append(Skipped(str(file), f"cannot be read: {type(exc).__name__}: {str(exc)[:200]}"))
            continue
        for doc in loaded:
            if not doc.text.strip():
                skipped.append(Skipped(f"{file}#{doc.doc_id}", "empty: no text"))
            elif doc.doc_id in docs:
                skipped.append(Skipped(f"{file}#{doc.doc_id}", f"duplicate doc_id {doc.doc_id!r}"))
            else:
                docs[doc.doc_id] = doc
    return list(docs.values()), skipped
