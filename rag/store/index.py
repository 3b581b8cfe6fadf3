"""The on-disk index, read side: FAISS vectors + SQLite docstore + BM25 + manifest of one generation.

Layout of an index folder::

    index/default/
        CURRENT            name of the live generation, replaced with os.replace (atomic)
        gen-000007/        manifest.json, vectors.faiss, docstore.sqlite, bm25/, sentences/
        .staging-*/        a generation being written (removed if an ingest died)

A reader resolves CURRENT once and opens that generation, so it never sees half an index; a
crash at any point of an ingest leaves CURRENT naming a complete generation (the previous one, or
the new one once the swap is done), and a published generation is never written to again.
The write side (staging, publishing) is ``rag.store.writer``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from rag.durable import write_durably
from rag.errors import UserError
from rag.filters import Filters
from rag.records import Document, Ranked, StoredChunk
from rag.store import milvus
from rag.store.catalogue import Catalogue
from rag.store.docstore import ChunkText, DocStore
from rag.store.lexical import LexicalIndex
from rag.store.vectors import VectorIndex

FORMAT_VERSION = 1
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
VECTORS = "vectors.faiss"
DOCSTORE = "docstore.sqlite"
BM25_DIR = "bm25"
DEDUP_DIR = "dedup"  # near-duplicate articles (rag.ingest.dedup)


class IndexNotFound(UserError, FileNotFoundError):
    """No published index at the path."""


class IndexIncompatible(UserError, RuntimeError):
    """The index was built with another model, dimension or format version."""


@dataclass(frozen=True)
class Manifest:
    """What an index was built from; written last into each generation."""

    format_version: int
    model: str
    dimension: int
    chunker: dict[str, Any]
    documents: int
    chunks: int
    next_id: int
    built_at: str
    generation: str
    vector_store: dict[str, Any] | None = None  # None: FAISS (vectors.faiss); else where Milvus holds them

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if data.get("format_version") != FORMAT_VERSION:
            raise IndexIncompatible(
                f"index at {folder} has format version {data.get('format_version')}, this rag reads "
                f"{FORMAT_VERSION}: re-ingest it (rag ingest ... --index {folder.parent} --rebuild)")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def write(self, folder: Path) -> None:
        data = {k: v for k, v in self.__dict__.items() if v is not None or k != "vector_store"}
        write_durably(folder / MANIFEST, json.dumps(data, indent=2).encode("utf-8"))

    @property
    def store(self) -> str:
        """Which store holds the chunk vectors: ``faiss`` or ``milvus``."""
        return (self.vector_store or {}).get("kind", "faiss")


def current_generation(root: Path) -> Path | None:
    """The live generation folder under ``root``, or None when nothing is published."""
    pointer = root / CURRENT
    if not pointer.is_file():
        return None
    gen = root / pointer.read_text(encoding="utf-8").strip()
    return gen if (gen / MANIFEST).is_file() else None


class Index:
    """A loaded generation, read-only: what retrieval searches and what readers of documents ask."""

    def __init__(self, root: Path, generation: Path, manifest: Manifest, vectors: VectorIndex,
                 docstore: DocStore, lexical: LexicalIndex):
        self.root, self.generation, self.manifest = root, generation, manifest
        self.vectors, self.docstore, self.lexical = vectors, docstore, lexical
        self._catalogue: Catalogue | None = None
        self._duplicates: dict[str, str] | None = None
        self._catalogue_lock = threading.Lock()

    @classmethod
    def open(cls, root: Path, model: str | None = None, milvus_uri: str = "") -> Index:
        """Open the live generation under ``root``.

        Args:
            model: when given, the embedding model the caller will query with; it must match.
            milvus_uri: where to reach the Milvus a ``milvus`` index lives in, when not at the URI its
                ingest used (a server behind another address).
        Raises:
            IndexNotFound: nothing published yet.
            IndexIncompatible: other model or format version (the message says to re-ingest).
        """
        gen = current_generation(root)
        if gen is None:
            raise IndexNotFound(f"no index at {root}: build one with `rag ingest [PATH ...] --index {root}`")
        manifest = Manifest.read(gen)
        if model is not None and manifest.model != model:
            raise IndexIncompatible(
                f"index at {root} was built with embedding model {manifest.model!r}, but {model!r} is "
                f"configured: re-ingest (rag ingest ... --index {root} --rebuild) or configure that model")
        if manifest.store == milvus.STORE:
            where = milvus.Collection.from_manifest(manifest.vector_store)
            vectors = milvus.MilvusVectors(replace(where, uri=milvus_uri) if milvus_uri else where, manifest.dimension)
        else:
            vectors = VectorIndex.load(gen / VECTORS)
        if vectors.dimension != manifest.dimension:
            raise IndexIncompatible(f"index at {root} is damaged (vector dimension); re-ingest it")
        return cls(root, gen, manifest, vectors, DocStore(gen / DOCSTORE, readonly=True),
                   LexicalIndex.load(gen / BM25_DIR))

    def close(self) -> None:
        self.docstore.close()

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.generation.rglob("*") if p.is_file())

    # ---- retrieval ------------------------------------------------------------------------
    def dense_search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Ranked:
        """Top-k (chunk id, cosine) pairs, best first; only chunk ids in ``allowed`` when given."""
        return self.vectors.search(query, k, allowed)

    def lexical_search(self, query: str, k: int, allowed: np.ndarray | None = None) -> Ranked:
        """Top-k (chunk id, BM25 score) pairs with a positive score, best first; only ``allowed`` when given."""
        if self.manifest.store == milvus.STORE:  # Milvus's full-text search over our BM25 terms
            return self.vectors.lexical_search(self.lexical.stems(query), k, allowed)
        return self.lexical.search(query, k, allowed)

    def allowed_ids(self, filters: Filters) -> np.ndarray:
        """The chunk ids (ascending) of the articles that pass ``filters``."""
        return self.catalogue().allowed_ids(filters)

    def duplicates(self) -> dict[str, str]:
        """Each article that repeats another story → the canonical article of its cluster (read once)."""
        with self._catalogue_lock:
            if self._duplicates is None:
                path = self.generation / DEDUP_DIR / "duplicates.json"
                self._duplicates = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            return self._duplicates

    def catalogue(self) -> Catalogue:
        """Articles, sources, dates and their chunks, read from the docstore on first use."""
        with self._catalogue_lock:
            if self._catalogue is None:
                self._catalogue = Catalogue(self.docstore)
            return self._catalogue

    def vectors_of(self, ids: list[int]) -> np.ndarray:
        return self.vectors.vectors(ids)

    def chunks(self, ids: list[int]) -> dict[int, StoredChunk]:
        return self.docstore.chunks_by_ids(ids)

    def idf(self, stem: str) -> float:
        """BM25's idf of a stemmed term over the chunks (evidence scoring weighs question terms by it)."""
        return self.lexical.idf(stem)

    # ---- documents ------------------------------------------------------------------------
    def document(self, doc_id: str) -> Document | None:
        return self.docstore.document(doc_id)

    def documents(self, offset: int = 0, limit: int = 100) -> list[dict]:
        return self.docstore.documents(offset, limit)

    def counts(self) -> tuple[int, int]:
        """(documents, chunks)."""
        return self.docstore.counts()

    def hashes(self) -> dict[str, str]:
        """Content hash of every document, by doc_id (what an incremental ingest diffs against)."""
        return self.docstore.hashes()

    def chunk_texts(self) -> Iterator[ChunkText]:
        """(id, title, text) of every chunk in id order."""
        return self.docstore.iter_chunk_texts()
