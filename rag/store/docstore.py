"""SQLite store of documents and chunks, keyed by the int64 ids the vector index uses."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from rag.records import Chunk, Document, StoredChunk

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY, title TEXT NOT NULL, text TEXT NOT NULL, source TEXT NOT NULL,
    published TEXT NOT NULL, metadata TEXT NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL,
    text TEXT NOT NULL, n_tokens INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
"""


class ChunkText(NamedTuple):
    """What BM25 and the sentence pass read of a chunk."""

    id: int
    title: str
    text: str
    doc_id: str = ""


class DocStore:
    """Documents and chunks in one SQLite file. Thread-safe for the server's readers."""

    def __init__(self, path: Path, readonly: bool = False):
        self.path = path
        uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
        self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        if not readonly:
            self._conn.executescript(SCHEMA)

    def close(self) -> None:
        self._conn.close()

    # ---- writes (ingest only) -------------------------------------------------------------
    def apply(self, removed: Iterable[str], documents: list[Document], chunks: list[tuple[int, Chunk]]) -> None:
        """Delete ``removed`` doc_ids (with their chunks) and upsert ``documents`` in one transaction."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN")
            try:
                for doc_id in removed:
                    cur.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
                    cur.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
                cur.executemany(
                    "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(d.doc_id, d.title, d.text, d.source, d.published,
                      json.dumps(d.metadata, ensure_ascii=False), d.sha256) for d in documents])
                cur.executemany(
                    "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(i, c.chunk_id, c.doc_id, c.ordinal, c.start, c.end, c.text, c.n_tokens)
                     for i, c in chunks])
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    # ---- reads ----------------------------------------------------------------------------
    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def hashes(self) -> dict[str, str]:
        return dict(self._rows("SELECT doc_id, sha256 FROM documents"))

    def chunk_ids_of(self, doc_ids: Iterable[str]) -> list[int]:
        ids: list[int] = []
        for doc_id in doc_ids:
            ids.extend(r[0] for r in self._rows("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,)))
        return ids

    def counts(self) -> tuple[int, int]:
        (docs,), = self._rows("SELECT COUNT(*) FROM documents")
        (chunks,), = self._rows("SELECT COUNT(*) FROM chunks")
        return docs, chunks

    def chunks_by_ids(self, ids: list[int]) -> dict[int, StoredChunk]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._rows(
            f'SELECT c.id, c.chunk_id, c.doc_id, c.ordinal, c.start, c."end", c.text, c.n_tokens, d.title, '
            f"d.source, d.published FROM chunks c JOIN documents d USING (doc_id) WHERE c.id IN ({marks})", tuple(ids))
        return {r[0]: StoredChunk(r[0], Chunk(*r[1:8]), title=r[8], source=r[9], published=r[10]) for r in rows}

    def catalogue_rows(self) -> list[tuple[str, str, str]]:
        """(doc_id, source, published) of every document."""
        return self._rows("SELECT doc_id, source, published FROM documents ORDER BY doc_id")

    def chunk_doc_rows(self) -> tuple[list[int], list[str]]:
        """Every chunk id, ascending, and its doc_id."""
        rows = self._rows("SELECT id, doc_id FROM chunks ORDER BY id")
        return [r[0] for r in rows], [r[1] for r in rows]

    def iter_documents(self) -> Iterator[Document]:
        """Every document (metadata not parsed: the near-duplicate pass reads titles, texts and dates)."""
        for doc_id, title, text, source, published in self._rows(
                "SELECT doc_id, title, text, source, published FROM documents ORDER BY doc_id"):
            yield Document(doc_id, title, text, source, published)

    def iter_chunk_texts(self) -> Iterator[ChunkText]:
        """(id, title, text, doc_id) of every chunk in id order, for building the lexical index."""
        for row in self._rows(
                "SELECT c.id, d.title, c.text, c.doc_id FROM chunks c JOIN documents d USING (doc_id) ORDER BY c.id"):
            yield ChunkText(*row)

    def document(self, doc_id: str) -> Document | None:
        rows = self._rows("SELECT doc_id, title, text, source, published, metadata FROM documents "
                          "WHERE doc_id = ?", (doc_id,))
        if not rows:
            return None
        doc_id, title, text, source, published, metadata = rows[0]
        return Document(doc_id, title, text, source, published, json.loads(metadata))

    def documents(self, offset: int = 0, limit: int = 100) -> list[dict]:
        rows = self._rows(
            "SELECT d.doc_id, d.title, d.source, d.published, LENGTH(d.text), "
            "(SELECT COUNT(*) FROM chunks c WHERE c.doc_id = d.doc_id) FROM documents d "
            "ORDER BY d.doc_id LIMIT ? OFFSET ?", (limit, offset))
        keys = ("doc_id", "title", "source", "published", "chars", "chunks")
        return [dict(zip(keys, row)) for row in rows]
