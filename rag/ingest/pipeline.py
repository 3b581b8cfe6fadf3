"""Incremental ingest: load → diff by content hash → chunk + embed what changed → publish."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np

from rag.embedding.factory import build_embedder, build_sentence_embedder
from rag.embedding.model import Embedder
from rag.ingest.chunking import Chunker
from rag.ingest.documents import load_documents
from rag.ingest.vectors import ProgressFn, build_sentence_vectors, embed_chunks
from rag.records import Document, Skipped
from rag.settings import Settings
from rag.store.docstore import DocStore
from rag.store.index import (
    BM25_DIR,
    DOCSTORE,
    FORMAT_VERSION,
    VECTORS,
    Index,
    IndexIncompatible,
    IndexNotFound,
    Manifest,
    ingest_lock,
    new_vector_index,
    next_generation_name,
    publish,
    staging_dir,
)
from rag.store.lexical import LexicalIndex
from rag.store.sentence_vectors import SentenceVectors
from rag.text import ENCODING_NAME


@dataclass
class IngestReport:
    """What an ingest did, for the one-line summary and for tests."""

    index: str = ""
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    chunks_embedded: int = 0
    chunks_removed: int = 0
    chunks_total: int = 0
    documents_total: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    sentences_embedded: int = 0
    sentence_seconds: float = 0.0
    rebuilt: str = ""
    published: bool = False

    def summary(self) -> str:
        line = (f"{self.documents_total} documents, {self.chunks_total} chunks in {self.index}: "
                f"{len(self.added)} added, {len(self.updated)} updated, {self.unchanged} unchanged, "
                f"{len(self.removed)} removed, {len(self.skipped)} skipped; "
                f"{self.chunks_embedded} chunks embedded, {self.chunks_removed} removed"
                + (f", {self.sentences_embedded} sentences embedded" if self.sentences_embedded else "")
                + f"; {self.seconds:.1f}s")
        return line + (f" (full rebuild: {self.rebuilt})" if self.rebuilt else "")


def chunker_settings(chunker: Chunker) -> dict:
    return {"encoding": ENCODING_NAME, "max_tokens": chunker.max_tokens, "overlap_tokens": chunker.overlap_tokens,
            "model_max_tokens": chunker.model_max_tokens, "title_prefix": chunker.title_prefix}


def _previous(root: Path, embedder: Embedder, chunker: Chunker, rebuild: bool) -> tuple[Index | None, str]:
    """The live index to update incrementally, or None (with the reason) to build from scratch."""
    if rebuild:
        return None, "requested"
    try:
        index = Index.open(root, model=embedder.model_id, readonly=True)
    except IndexNotFound:
        return None, ""
    except IndexIncompatible as exc:
        return None, str(exc).split(":")[0]
    if index.manifest.chunker != chunker_settings(chunker):
        index.close()
        return None, "chunker settings changed"
    return index, ""


def ingest(paths: list[Path], root: Path, embedder: Embedder, chunker: Chunker, *, batch_size: int = 16,
           rebuild: bool = False, progress: ProgressFn | None = None,
           sentence_embedder: Embedder | None = None) -> IngestReport:
    """Bring the index at ``root`` in line with the documents under ``paths``.

    Only documents whose content hash changed are chunked and embedded; documents no longer present
    are removed. The new generation is published atomically; on any error the old one stays live.
    With ``sentence_embedder`` (the answer-time model), every candidate evidence sentence is embedded
    too (``rag.sentence_vectors``), reusing the previous generation's vectors for unchanged text.
    """
    started = time.perf_counter()
    report = IngestReport(index=str(root))
    with ingest_lock(root):
        docs, report.skipped = load_documents(paths)
        previous, report.rebuilt = _previous(root, embedder, chunker, rebuild)
        old_hashes = previous.docstore.hashes() if previous else {}
        current = {d.doc_id: d for d in docs}
        report.added = [d.doc_id for d in docs if d.doc_id not in old_hashes]
        report.updated = [d.doc_id for d in docs if d.doc_id in old_hashes and old_hashes[d.doc_id] != d.sha256]
        report.removed = [doc_id for doc_id in old_hashes if doc_id not in current]
        report.unchanged = len(docs) - len(report.added) - len(report.updated)
        if previous and not (report.added or report.updated or report.removed):
            report.documents_total, report.chunks_total = previous.docstore.counts()
            if sentence_embedder is not None:
                _fill_sentence_vectors(previous, sentence_embedder, report, progress)
            previous.close()
            report.seconds = time.perf_counter() - started
            return report
        changed = [current[d] for d in report.added + report.updated]
        _write_generation(root, previous, changed, report, embedder, chunker, batch_size, progress, sentence_embedder)
    report.seconds = time.perf_counter() - started
    return report


def _fill_sentence_vectors(live: Index, sentence_embedder: Embedder, report: IngestReport,
                           progress: ProgressFn | None = None) -> None:
    """An unchanged index without current sentence vectors (older build, other answer-time model) gets
    them in place: the file is only ever added whole (atomic rename), and readers treat it as optional.
    A server already running on this generation keeps embedding sentences until its next start."""
    if SentenceVectors.load_for(live.generation, sentence_embedder) is None:
        _sentence_pass(live.docstore.iter_chunk_texts(), sentence_embedder, None, live.generation, report, progress)


def _sentence_pass(rows, sentence_embedder: Embedder, previous: SentenceVectors | None, folder: Path,
                   report: IngestReport, progress: ProgressFn | None) -> None:
    """Embed the evidence sentences of every chunk (``rows``: docstore (id, title, text)) into ``folder``."""
    vectors, stats = build_sentence_vectors((r[2] for r in rows), sentence_embedder, previous, progress=progress)
    vectors.save(folder)
    report.sentences_embedded, report.sentence_seconds = stats.embedded, stats.seconds


def _write_generation(root: Path, previous: Index | None, changed: list[Document], report: IngestReport,
                      embedder: Embedder, chunker: Chunker, batch_size: int,
                      progress: ProgressFn | None, sentence_embedder: Embedder | None = None) -> None:
    pairs = [(c, doc.title) for doc in changed for c in chunker.chunk(doc)]
    chunks = [c for c, _ in pairs]
    vectors, report.embed_seconds = embed_chunks(embedder, [chunker.embedding_text(c, title) for c, title in pairs],
                                                 batch_size, progress)
    staging = staging_dir(root)
    try:
        old_sentences = SentenceVectors.load(previous.generation) if previous and sentence_embedder else None
        if previous:
            shutil.copy2(previous.generation / DOCSTORE, staging / DOCSTORE)
            index = faiss.clone_index(previous.vectors)
            first_id = previous.manifest.next_id
            stale_ids = previous.docstore.chunk_ids_of(report.updated + report.removed)
            previous.close()
        else:
            index, first_id, stale_ids = new_vector_index(embedder.dimension), 0, []
        ids = np.arange(first_id, first_id + len(chunks), dtype=np.int64)
        store = DocStore(staging / DOCSTORE)
        store.apply(report.updated + report.removed, changed, list(zip(ids.tolist(), chunks)))
        if stale_ids:
            index.remove_ids(np.asarray(stale_ids, dtype=np.int64))
        if len(chunks):
            index.add_with_ids(vectors, ids)
        faiss.write_index(index, str(staging / VECTORS))
        rows = list(store.iter_chunk_texts())
        LexicalIndex.build([r[0] for r in rows], [f"{r[1]}\n{r[2]}" for r in rows]).save(staging / BM25_DIR)
        if sentence_embedder is not None:
            _sentence_pass(rows, sentence_embedder, old_sentences, staging, report, progress)
        report.documents_total, report.chunks_total = store.counts()
        store.close()
        report.chunks_embedded, report.chunks_removed = len(chunks), len(stale_ids)
        name = next_generation_name(root)
        Manifest(format_version=FORMAT_VERSION, model=embedder.model_id, dimension=embedder.dimension,
                 chunker=chunker_settings(chunker), documents=report.documents_total,
                 chunks=report.chunks_total, next_id=int(first_id + len(chunks)),
                 built_at=datetime.now(UTC).isoformat(timespec="seconds"), generation=name).write(staging)
        publish(root, staging, name)
        report.published = True
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise



def build_chunker(settings: Settings, embedder: Embedder) -> Chunker:
    return Chunker(settings.chunk_tokens, settings.chunk_overlap, model_token_count=embedder.count_tokens,
                   model_max_tokens=embedder.max_tokens, title_prefix=settings.embed_titles)


def ingest_paths(settings: Settings, paths: list[Path], *, rebuild: bool = False,
                 progress: ProgressFn | None = None, sentences: bool = True) -> IngestReport:
    """Ingest as `rag ingest` does: chunks embedded by sentence-transformers; evidence sentences (when
    ``settings.sentence_vectors``) by the answer-time model, which this also readies for `rag serve`."""
    embedder = build_embedder(settings)
    sentence_embedder = build_sentence_embedder(settings) if sentences else None
    return ingest(paths, settings.index_dir, embedder, build_chunker(settings, embedder),
                  batch_size=settings.embedding_batch_size, rebuild=rebuild, progress=progress,
                  sentence_embedder=sentence_embedder if settings.sentence_vectors else None)
