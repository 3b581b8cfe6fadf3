"""The on-disk index, write side: a new generation is written beside the live one, then published.

``write_generation`` carries an incremental update from the previous generation (docstore copy,
FAISS clone, BM25 segments hard-linked) to a staging folder, adds and removes chunks (one new BM25
segment and tombstones; the vector index converts when its size calls for another kind), writes the extra files
(sentence vectors) and the manifest last, and publishes with one atomic rename of ``CURRENT``. On any
error before the swap the staging folder is removed and the previous generation stays live.

Durability, so that a crash or power loss at any moment leaves CURRENT naming a complete generation:
every file and folder of the staging folder is fsynced before the rename that makes it ``gen-N``;
the index folder is fsynced after that rename; CURRENT is written to a temp file, fsynced,
``os.replace``d and the index folder fsynced again. Nothing is ever written into a published
generation.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rag.durable import fsync_path, fsync_tree, write_durably
from rag.errors import UserError
from rag.records import Chunk, Document
from rag.store import milvus
from rag.store.docstore import ChunkText, DocStore
from rag.store.index import BM25_DIR, CURRENT, DOCSTORE, FORMAT_VERSION, VECTORS, Index, Manifest
from rag.store.lexical import K1 as BM25_K1
from rag.store.lexical import B as BM25_B
from rag.store.lexical import LexicalIndex, chunk_text
from rag.store.vectors import VectorIndex, VectorPolicy

ExtraPass = Callable[[Path, list[ChunkText]], None]  # (staging folder, every chunk's text) → more files


class IndexLocked(UserError, RuntimeError):
    """Another ingest is writing the same index folder."""


@dataclass(frozen=True)
class Written:
    """What a published generation holds."""

    generation: Path
    documents: int
    chunks: int
    chunks_removed: int


@contextmanager
def ingest_lock(root: Path) -> Iterator[None]:
    """One writer per index folder; a second ingest fails fast instead of racing."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise IndexLocked(f"another ingest is writing {root}; wait for it to finish") from exc
        yield


def write_generation(root: Path, previous: Index | None, *, removed: list[str], documents: list[Document],
                     chunks: list[Chunk], vectors: np.ndarray, model: str, dimension: int,
                     chunker: dict[str, Any], extra: ExtraPass | None = None,
                     vector_policy: VectorPolicy = VectorPolicy()) -> Written:
    """Publish a generation: ``previous`` without the chunks of ``removed`` doc_ids, plus ``documents``.

    Args:
        previous: the live generation to update (closed here), or None to build from scratch.
        removed: doc_ids whose chunks go (documents that changed or disappeared).
        documents, chunks, vectors: what is new; ``vectors[i]`` embeds ``chunks[i]``.
        model, dimension, chunker: recorded in the manifest (a reader checks them).
        extra: writes more files into the staging folder before publishing (the sentence vectors).
        vector_policy: the kind of vector index to write (exact, IVF, HNSW; ``rag.store.vectors``) and where:
            FAISS files in the generation, or a Milvus collection of its own (``rag.store.milvus``).
    """
    staging = staging_dir(root)
    name = next_generation_name(root)
    collection: milvus.Collection | None = None
    try:
        if previous:
            shutil.copy2(previous.generation / DOCSTORE, staging / DOCSTORE)
            first_id = previous.manifest.next_id
            stale_ids = previous.docstore.chunk_ids_of(removed)
            previous.close()
        else:
            first_id, stale_ids = 0, []
        ids = np.arange(first_id, first_id + len(chunks), dtype=np.int64)
        store = DocStore(staging / DOCSTORE)
        store.apply(removed, documents, list(zip(ids.tolist(), chunks)))
        rows = list(store.iter_chunk_texts())
        titles = {d.doc_id: d.title for d in documents}
        if previous and previous.lexical.incremental:  # one segment for the new chunks, tombstones for the stale
            lexical = previous.lexical.updated(ids.tolist(), [chunk_text(titles[c.doc_id], c.text) for c in chunks],
                                               removed=stale_ids)
        else:  # from scratch, or a bm25s index from before segments: every chunk once
            lexical = LexicalIndex.build([r.id for r in rows], [chunk_text(r.title, r.text) for r in rows])
        lexical.save(staging / BM25_DIR)
        carried = [r for r in rows if r.id < first_id]  # the previous generation's chunks that stay
        if vector_policy.store == milvus.STORE:
            collection = _write_milvus(root, name, previous, carried, ids, chunks, titles, vectors, dimension,
                                       lexical, vector_policy)
        else:
            _write_faiss(staging, previous, stale_ids, carried, ids, vectors, dimension, vector_policy)
        if extra is not None:
            extra(staging, rows)
        n_documents, n_chunks = store.counts()
        store.close()
        Manifest(format_version=FORMAT_VERSION, model=model, dimension=dimension, chunker=chunker,
                 documents=n_documents, chunks=n_chunks, next_id=int(first_id + len(chunks)),
                 built_at=datetime.now(UTC).isoformat(timespec="seconds"), generation=name,
                 vector_store=collection.to_manifest() if collection else None).write(staging)
        before = named_by_current(root)
        final = publish(root, staging, name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if collection is not None and named_by_current(root) != name:
            milvus.drop(collection.uri, collection.name)
        raise
    if collection is not None:  # as publish keeps the generation before: a server may still be reading it
        live = {collection.name} | ({milvus.collection_name(collection.prefix, before)} if before else set())
        milvus.drop_except(collection.uri, collection.prefix, live)
    return Written(final, n_documents, n_chunks, len(stale_ids))


def _write_faiss(staging: Path, previous: Index | None, stale_ids: list[int], carried: list[ChunkText],
                 ids: np.ndarray, vectors: np.ndarray, dimension: int, policy: VectorPolicy) -> None:
    """vectors.faiss: the previous index updated in place, or built from the previous store's vectors."""
    removed = stale_ids
    if previous is None:
        index = VectorIndex.new(dimension)
    elif isinstance(previous.vectors, VectorIndex):
        index = previous.vectors.clone()
    else:  # the index moves back from Milvus: its vectors come along
        kept = np.asarray([r.id for r in carried], dtype=np.int64)
        index, removed = VectorIndex.new(dimension).updated([], kept, _vectors_of(previous, kept), policy), []
    index = index.updated(removed, ids, vectors, policy)
    index.save(staging / VECTORS)


def _vectors_of(previous: Index, ids: np.ndarray, batch: int = milvus.COPY_BATCH) -> np.ndarray:
    parts = [previous.vectors.vectors(ids[i:i + batch]) for i in range(0, len(ids), batch)]
    return np.concatenate(parts) if parts else np.empty((0, previous.manifest.dimension), dtype=np.float32)


def _write_milvus(root: Path, name: str, previous: Index | None, carried: list[ChunkText], ids: np.ndarray,
                  chunks: list[Chunk], titles: dict[str, str], vectors: np.ndarray, dimension: int,
                  lexical: LexicalIndex, policy: VectorPolicy) -> milvus.Collection:
    """The generation's Milvus collection: the previous generation's rows that stay, plus the new chunks."""
    uri = milvus.resolve_uri(policy.milvus_uri) if policy.milvus_uri else milvus.default_uri(root)
    before = previous.manifest.vector_store if previous else None
    same = before is not None and before.get("uri") == uri
    prefix = before["prefix"] if same else milvus.new_prefix()

    def terms(title: str, text: str) -> str:
        return " ".join(lexical.stems(chunk_text(title, text)))

    new = [{"id": int(i), "doc_id": c.doc_id, "text": c.text, "terms": terms(titles[c.doc_id], c.text),
            "dense": np.asarray(v, dtype=np.float32).tolist()} for i, c, v in zip(ids, chunks, vectors)]
    pages = [carried[i:i + milvus.COPY_BATCH] for i in range(0, len(carried), milvus.COPY_BATCH)]
    if same:  # Milvus to Milvus: the rows as they are
        keep = (previous.vectors.rows_of([r.id for r in page]) for page in pages)
    else:  # from FAISS (or another Milvus): vectors from the old store, terms from the docstore's text
        keep = ([{"id": r.id, "doc_id": r.doc_id, "text": r.text, "terms": terms(r.title, r.text), "dense": v.tolist()}
                 for r, v in zip(page, _vectors_of(previous, np.asarray([r.id for r in page], dtype=np.int64)))]
                for page in pages)
    return milvus.write_collection(uri, prefix, name, dimension, policy, rows=len(carried) + len(new), keep=keep,
                                   new=new, k1=BM25_K1, b=BM25_B)


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
    write_durably(tmp, name.encode("utf-8"))
    os.replace(tmp, root / CURRENT)
    fsync_path(root)


def named_by_current(root: Path) -> str | None:
    """The generation name CURRENT holds (None when there is none); an unreadable CURRENT raises."""
    try:
        return (root / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


def publish(root: Path, staging: Path, name: str) -> Path:
    """Make ``staging`` the live generation ``name``: fsync it whole, rename it, swap CURRENT atomically.

    Then every other generation is removed except the one CURRENT named before (a server that opened
    it before the swap keeps reading it), which also clears generations a crash left unpublished.
    """
    before = named_by_current(root)
    fsync_tree(staging)
    final = root / name
    os.replace(staging, final)
    try:
        fsync_path(root)
        swap_current(root, name)
    except BaseException:
        # CURRENT may have been renamed before the failure (its fsync failing, an interrupt): then
        # ``final`` is live and must stay.
        if named_by_current(root) != name:
            shutil.rmtree(final, ignore_errors=True)
        raise
    for old in root.glob("gen-*"):
        if old.is_dir() and old.name not in (name, before):
            shutil.rmtree(old, ignore_errors=True)
    return final
