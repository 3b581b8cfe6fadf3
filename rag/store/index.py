"""The on-disk index: FAISS vectors + SQLite docstore + BM25 + manifest, published atomically.

Layout of an index folder::

    index/default/
        CURRENT            name of the live generation, replaced with os.replace (atomic)
        gen-000007/        manifest.json, vectors.faiss, docstore.sqlite, bm25/
        .staging-*/        a generation being written (removed if an ingest died)

A reader resolves CURRENT once and opens that generation, so it never sees half an index; a
crash at any point of an ingest leaves CURRENT pointing at the previous complete generation.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from rag.store.docstore import DocStore
from rag.store.lexical import LexicalIndex

FORMAT_VERSION = 1
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
VECTORS = "vectors.faiss"
DOCSTORE = "docstore.sqlite"
BM25_DIR = "bm25"


class IndexNotFound(FileNotFoundError):
    """No published index at the path."""


class IndexIncompatible(RuntimeError):
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

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if data.get("format_version") != FORMAT_VERSION:
            raise IndexIncompatible(
                f"index at {folder} has format version {data.get('format_version')}, this rag reads "
                f"{FORMAT_VERSION}: re-ingest it (rag ingest ... --index {folder.parent} --rebuild)")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def write(self, folder: Path) -> None:
        _write_durably(folder / MANIFEST, json.dumps(self.__dict__, indent=2).encode("utf-8"))


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_generation(root: Path) -> Path | None:
    pointer = root / CURRENT
    if not pointer.is_file():
        return None
    gen = root / pointer.read_text(encoding="utf-8").strip()
    return gen if (gen / MANIFEST).is_file() else None


class Index:
    """A loaded generation: vectors, docstore, BM25 and manifest, read-only."""

    def __init__(self, root: Path, generation: Path, manifest: Manifest, vectors: faiss.Index,
                 docstore: DocStore, lexical: LexicalIndex):
        self.root, self.generation, self.manifest = root, generation, manifest
        self.vectors, self.docstore, self.lexical = vectors, docstore, lexical

    @classmethod
    def open(cls, root: Path, model: str | None = None, readonly: bool = True) -> Index:
        """Open the live generation under ``root``.

        Args:
            model: when given, the embedding model the caller will query with; it must match.
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
        # One query vector is searched faster on one thread, and FAISS's OpenMP pool spinning beside
        # torch's doubled query latency (22 → 12 ms p50 on SciFact, bench in README).
        faiss.omp_set_num_threads(1)
        vectors = faiss.read_index(str(gen / VECTORS))
        if vectors.d != manifest.dimension:
            raise IndexIncompatible(f"index at {root} is damaged (vector dimension); re-ingest it")
        return cls(root, gen, manifest, vectors, DocStore(gen / DOCSTORE, readonly=readonly),
                   LexicalIndex.load(gen / BM25_DIR))

    def close(self) -> None:
        self.docstore.close()

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.generation.rglob("*") if p.is_file())

    def dense_search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-k (chunk id, cosine) pairs, best first."""
        if self.vectors.ntotal == 0:
            return []
        faiss.omp_set_num_threads(1)  # per thread in OpenMP: a server's worker threads would otherwise use every core
        scores, ids = self.vectors.search(query.reshape(1, -1), min(k, self.vectors.ntotal))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]


def new_vector_index(dimension: int) -> faiss.Index:
    """Exact inner-product search (cosine on normalised vectors) with our own int64 ids."""
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))


@contextmanager
def ingest_lock(root: Path) -> Iterator[None]:
    """One writer per index folder; a second ingest fails fast instead of racing."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RuntimeError(f"another ingest is writing {root}; wait for it to finish") from exc
        yield


def staging_dir(root: Path) -> Path:
    """A fresh folder to write a generation into; leftovers of crashed ingests are removed."""
    for old in root.glob(".staging-*"):
        shutil.rmtree(old, ignore_errors=True)
    path = root / f".staging-{os.getpid()}"
    path.mkdir(parents=True)
    return path


def next_generation_name(root: Path) -> str:
    numbers = [int(p.name.split("-")[1]) for p in root.glob("gen-*") if p.name.split("-")[1].isdigit()]
    return f"gen-{max(numbers, default=0) + 1:06d}"


def swap_current(root: Path, name: str) -> None:
    """Point CURRENT at generation ``name`` in one atomic rename."""
    tmp = root / f"{CURRENT}.tmp"
    _write_durably(tmp, name.encode("utf-8"))
    os.replace(tmp, root / CURRENT)
    _fsync_dir(root)


def publish(root: Path, staging: Path, name: str, keep: int = 2) -> Path:
    """Make ``staging`` the live generation ``name``: fsync, rename, swap CURRENT atomically."""
    for path in staging.rglob("*"):
        if path.is_file():
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(staging)
    final = root / name
    os.replace(staging, final)
    try:
        swap_current(root, name)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    # Keep the previous generation too: a server that opened it before the swap keeps reading it.
    generations = sorted(p for p in root.glob("gen-*") if p.is_dir())
    for old in generations[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final
