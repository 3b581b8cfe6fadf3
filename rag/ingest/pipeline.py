"""Incremental ingest: load → diff by content hash → chunk + embed what changed → publish.

``ingest`` takes the parts (embedder, chunker) as objects; ``ingest_paths`` builds them from
``Settings`` the way `rag ingest` does.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from rag.embedding.factory import build_embedder, build_sentence_embedder
from rag.embedding.model import Embedder
from rag.errors import UserError
from rag.ingest import dedup
from rag.ingest.chunking import Chunker
from rag.ingest.documents import DEFAULT_LIMITS, Limits, document_warnings, iter_documents
from rag.ingest.vectors import ProgressFn, build_sentence_vectors, embed_chunks
from rag.records import Chunk, Document, Skipped
from rag.settings import Settings
from rag.store.docstore import ChunkText, DocStore
from rag.store.index import DOCSTORE, Index, IndexIncompatible, IndexNotFound
from rag.store.sentence_vectors import SentenceVectors
from rag.store.vectors import VectorPolicy
from rag.store.writer import ingest_lock, write_generation


@dataclass
class IngestReport:
    """What an ingest did, for the one-line summary and for tests."""

    index: str = ""
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # documents ingested with a loss ("…: published 'x': …")
    chunks_embedded: int = 0
    chunks_removed: int = 0
    chunks_total: int = 0
    documents_total: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    sentences_embedded: int = 0
    sentence_seconds: float = 0.0
    duplicates: int = 0  # articles linked to an earlier copy of their story (rag.ingest.dedup)
    dedup_seconds: float = 0.0
    rebuilt: str = ""
    published: bool = False

    def summary(self) -> str:
        line = (f"{self.documents_total} documents, {self.chunks_total} chunks in {self.index}: "
                f"{len(self.added)} added, {len(self.updated)} updated, {self.unchanged} unchanged, "
                f"{len(self.removed)} removed, {len(self.skipped)} skipped"
                + (f", {len(self.warnings)} with warnings" if self.warnings else "") + "; "
                f"{self.chunks_embedded} chunks embedded, {self.chunks_removed} removed"
                + (f", {self.sentences_embedded} sentences embedded" if self.sentences_embedded else "")
                + (f"; {self.duplicates} near-duplicate articles linked" if self.duplicates else "")
                + f"; {self.seconds:.1f}s")
        return line + (f" (full rebuild: {self.rebuilt})" if self.rebuilt else "")


def _previous(root: Path, embedder: Embedder, chunker: Chunker, rebuild: bool) -> tuple[Index | None, str]:
    """The live index to update incrementally, or None (with the reason) to build from scratch."""
    if rebuild:
        return None, "requested"
    try:
        index = Index.open(root, model=embedder.model_id)
    except IndexNotFound:
        return None, ""
    except IndexIncompatible as exc:
        return None, str(exc).split(":")[0]
    recorded = dict(index.manifest.chunker)
    made_by = recorded.pop(VECTORS_BY, "torch")  # indexes from before the setting: torch
    if recorded != chunker.config():
        index.close()
        return None, "chunker settings changed"
    if not same_vectors(made_by, vectors_by(embedder)):  # never mix float and int8 chunk vectors in one index
        index.close()
        return None, f"chunk vectors were made by {made_by}, now by {vectors_by(embedder)}"
    return index, ""


VECTORS_BY = "vectors_by"  # manifest key beside the chunker settings: which runtime made the chunk vectors


FLOAT_RUNTIMES = frozenset({"torch", "onnx"})  # the float ONNX export gives torch's vectors (cosine 1.000000)


def vectors_by(embedder: Embedder) -> str:
    """``torch``, ``onnx`` or ``onnx-int8`` (RAG_INGEST_BACKEND), as recorded in the manifest."""
    variant = getattr(embedder, "variant", None)
    return "torch" if variant is None else "onnx" if variant == "float" else "onnx-int8"


def same_vectors(made_by: str, now_by: str) -> bool:
    """Whether chunk vectors of the two runtimes may share an index: the same one, or both float (an
    index built on torch is updated by the ONNX float export without re-embedding it)."""
    return made_by == now_by or {made_by, now_by} <= FLOAT_RUNTIMES


class Engine(Protocol):
    """Where loading, chunking and embedding run: here (``LocalEngine``) or on Ray (``rag.ingest.ray_engine``)."""

    def documents(self, paths: list[Path], limits: Limits) -> Iterator[Document | Skipped]: ...

    def chunk_and_embed(self, changed: list[Document], chunker: Chunker, embedder: Embedder, batch_size: int,
                        progress: ProgressFn | None = None) -> tuple[list[Chunk], np.ndarray, float]: ...


class LocalEngine:
    """In this process: ``iter_documents``, then the chunker and ``embed_chunks``."""

    def documents(self, paths: list[Path], limits: Limits) -> Iterator[Document | Skipped]:
        return iter_documents(paths, limits)

    def chunk_and_embed(self, changed: list[Document], chunker: Chunker, embedder: Embedder, batch_size: int,
                        progress: ProgressFn | None = None) -> tuple[list[Chunk], np.ndarray, float]:
        pairs = [(c, doc.title) for doc in changed for c in chunker.chunk(doc)]
        vectors, seconds = embed_chunks(embedder, [chunker.embedding_text(c, title) for c, title in pairs],
                                        batch_size, progress)
        return [c for c, _ in pairs], vectors, seconds


def _load_changes(paths: list[Path], limits: Limits, old_hashes: dict[str, str], report: IngestReport,
                  engine: Engine | None = None) -> list[Document]:
    """The new and changed documents (new first), with ``report``'s diff filled in.

    Unchanged documents are counted and dropped as they stream past, so a re-ingest of a large
    ``.jsonl`` holds only what it must embed.
    """
    added: list[Document] = []
    updated: list[Document] = []
    seen: set[str] = set()
    for item in (engine or LocalEngine()).documents(paths, limits):
        if isinstance(item, Skipped):
            report.skipped.append(item)
            continue
        seen.add(item.doc_id)
        report.warnings.extend(document_warnings(item))
        old = old_hashes.get(item.doc_id)
        if old is None:
            added.append(item)
        elif old != item.sha256:
            updated.append(item)
        else:
            report.unchanged += 1
    report.added, report.updated = [d.doc_id for d in added], [d.doc_id for d in updated]
    report.removed = [doc_id for doc_id in old_hashes if doc_id not in seen]
    return added + updated


def ingest(paths: list[Path], root: Path, embedder: Embedder, chunker: Chunker, *, batch_size: int = 16,
           rebuild: bool = False, progress: ProgressFn | None = None,
           sentence_embedder: Embedder | None = None, limits: Limits = DEFAULT_LIMITS,
           vector_policy: VectorPolicy = VectorPolicy(), engine: Engine | None = None) -> IngestReport:
    """Bring the index at ``root`` in line with the documents under ``paths``.

    Only documents whose content hash changed are chunked and embedded; documents no longer present
    are removed. The new generation is published atomically; on any error the old one stays live.
    With ``sentence_embedder`` (the answer-time model), every candidate evidence sentence is embedded
    too (``rag.ingest.vectors``), reusing the previous generation's vectors for unchanged text; an
    unchanged index that lacks them gets a new generation that has them.
    ``limits`` caps file and record sizes (``rag.ingest.documents.Limits``); ``vector_policy`` picks
    the vector index (exact, IVF or HNSW by corpus size; ``rag.store.vectors``).
    """
    started = time.perf_counter()
    report = IngestReport(index=str(root))
    with ingest_lock(root):
        previous, report.rebuilt = _previous(root, embedder, chunker, rebuild)
        changed = _load_changes(paths, limits, previous.hashes() if previous else {}, report, engine)
        unchanged = previous is not None and not (report.added or report.updated or report.removed)
        if unchanged and not _lacks_sentence_vectors(previous, sentence_embedder) \
                and dedup.Signatures.load(previous.generation) is not None \
                and previous.manifest.store == vector_policy.store:  # RAG_VECTOR_STORE changed: moved by a new generation
            report.documents_total, report.chunks_total = previous.counts()
            previous.close()
        else:
            _publish(root, previous, changed, report, embedder, chunker, batch_size, progress, sentence_embedder,
                     vector_policy, engine)
    report.seconds = time.perf_counter() - started
    return report


def _lacks_sentence_vectors(live: Index, sentence_embedder: Embedder | None) -> bool:
    """Whether an unchanged index still needs ``sentence_embedder``'s vectors (an older build, another
    answer-time model). They go into a new generation like any change: a published one is never written
    to, so a crash mid-pass cannot leave a server mapping half-written files."""
    return sentence_embedder is not None and SentenceVectors.load_for(live.generation, sentence_embedder) is None


def _sentence_pass(rows: Iterable[ChunkText], sentence_embedder: Embedder, previous: SentenceVectors | None,
                   folder: Path, report: IngestReport, progress: ProgressFn | None) -> None:
    """Embed the evidence sentences of every chunk (``rows``) into ``folder``."""
    vectors, stats = build_sentence_vectors((r.text for r in rows), sentence_embedder, previous, progress=progress)
    vectors.save(folder)
    report.sentences_embedded, report.sentence_seconds = stats.embedded, stats.seconds


def _dedup_pass(folder: Path, previous: dedup.Signatures | None, removed: set[str], changed: list[Document],
                report: IngestReport, everything: bool) -> None:
    """Find near-duplicate articles (``rag.ingest.dedup``) and write the links into ``folder``; with
    ``everything``, every document of the staged docstore is hashed (no signatures to reuse)."""
    started = time.perf_counter()
    if everything:
        store = DocStore(folder / DOCSTORE, readonly=True)
        try:
            documents = list(store.iter_documents())
        finally:
            store.close()
        sigs = dedup.update(None, set(), documents)
    else:
        sigs = dedup.update(previous, removed, changed)
    linked = dedup.clusters(sigs)
    dedup.write(folder, sigs, linked)
    report.duplicates, report.dedup_seconds = len(linked), time.perf_counter() - started


def _publish(root: Path, previous: Index | None, changed: list[Document], report: IngestReport,
             embedder: Embedder, chunker: Chunker, batch_size: int,
             progress: ProgressFn | None, sentence_embedder: Embedder | None = None,
             vector_policy: VectorPolicy = VectorPolicy(), engine: Engine | None = None) -> None:
    """Chunk and embed ``changed`` (on ``engine``), then let the store write and publish the next generation."""
    chunks, vectors, report.embed_seconds = (engine or LocalEngine()).chunk_and_embed(changed, chunker, embedder,
                                                                                      batch_size, progress)
    old_sentences = SentenceVectors.load(previous.generation) if previous and sentence_embedder else None
    old_signatures = dedup.Signatures.load(previous.generation) if previous else None
    removed = set(report.updated + report.removed)
    rescan = previous is not None and old_signatures is None  # an index from before the dedup pass

    def extra(folder: Path, rows: list[ChunkText]) -> None:
        if sentence_embedder is not None:
            _sentence_pass(rows, sentence_embedder, old_sentences, folder, report, progress)
        _dedup_pass(folder, None if rescan else old_signatures, removed, changed, report, rescan)
    recorded = {**chunker.config(), VECTORS_BY: vectors_by(embedder)}
    written = write_generation(root, previous, removed=report.updated + report.removed, documents=changed,
                               chunks=chunks, vectors=vectors, model=embedder.model_id,
                               dimension=embedder.dimension, chunker=recorded, extra=extra,
                               vector_policy=vector_policy)
    report.documents_total, report.chunks_total = written.documents, written.chunks
    report.chunks_embedded, report.chunks_removed = len(chunks), written.chunks_removed
    report.published = True


class CannotUpdate(UserError, RuntimeError):
    """The live index cannot take an incremental change (another model, chunker or vector runtime)."""


def _live_for_update(root: Path, embedder: Embedder, chunker: Chunker) -> Index | None:
    """The live index to add to (None when there is none yet); one that would need a full rebuild is
    refused, since an add or remove does not hold the whole corpus to rebuild from."""
    previous, reason = _previous(root, embedder, chunker, rebuild=False)
    if previous is None and reason:
        raise CannotUpdate(f"the index at {root} cannot be updated in place ({reason}): rebuild it with "
                           f"`rag ingest FOLDER --index {root} --rebuild`, or serve with its settings")
    return previous


def add_documents(documents: list[Document], root: Path, embedder: Embedder, chunker: Chunker, *,
                  batch_size: int = 16, progress: ProgressFn | None = None,
                  sentence_embedder: Embedder | None = None,
                  vector_policy: VectorPolicy = VectorPolicy()) -> IngestReport:
    """Add ``documents`` to the index at ``root``, or update those whose doc_id it holds (an upsert).

    Unlike ``ingest`` nothing is removed: every other document stays. Unchanged ones (same content
    hash) are counted, not re-embedded; with no change at all nothing is published. The write path,
    the lock and the atomic publish are ``ingest``'s. An index that would need a full rebuild
    (``_previous``) raises ``CannotUpdate``; with no index yet, one is built from ``documents``.
    """
    started = time.perf_counter()
    report = IngestReport(index=str(root))
    with ingest_lock(root):
        previous = _live_for_update(root, embedder, chunker)
        old = previous.hashes() if previous else {}
        changed = [doc for doc in documents if old.get(doc.doc_id) != doc.sha256]
        report.added = [doc.doc_id for doc in changed if doc.doc_id not in old]
        report.updated = [doc.doc_id for doc in changed if doc.doc_id in old]
        report.unchanged = len(documents) - len(changed)
        for doc in documents:
            report.warnings.extend(document_warnings(doc))
        if previous is not None and not changed:
            report.documents_total, report.chunks_total = previous.counts()
            previous.close()
        elif changed:
            _publish(root, previous, changed, report, embedder, chunker, batch_size, progress, sentence_embedder,
                     vector_policy)
    report.seconds = time.perf_counter() - started
    return report


def remove_documents(doc_ids: list[str], root: Path, embedder: Embedder, chunker: Chunker, *,
                     sentence_embedder: Embedder | None = None,
                     vector_policy: VectorPolicy = VectorPolicy()) -> IngestReport:
    """Remove ``doc_ids`` from the index at ``root``: those it holds, which ``report.removed`` names.

    The new generation goes through ``ingest``'s write path with nothing to embed, so every pass it
    makes (sentence vectors, reused for the text that stays) runs as for any change. Raises
    ``IndexNotFound`` when nothing was ever published, ``CannotUpdate`` as ``add_documents`` does.
    """
    started = time.perf_counter()
    report = IngestReport(index=str(root))
    with ingest_lock(root):
        previous = _live_for_update(root, embedder, chunker)
        if previous is None:
            raise IndexNotFound(f"no index at {root}: nothing to remove")
        held = previous.hashes()
        report.removed = [doc_id for doc_id in dict.fromkeys(doc_ids) if doc_id in held]
        if report.removed:
            _publish(root, previous, [], report, embedder, chunker, 16, None, sentence_embedder, vector_policy)
        else:
            report.documents_total, report.chunks_total = previous.counts()
            previous.close()
    report.seconds = time.perf_counter() - started
    return report


def build_chunker(settings: Settings, embedder: Embedder) -> Chunker:
    return Chunker(settings.chunk_tokens, settings.chunk_overlap, model_token_count=embedder.count_tokens,
                   model_max_tokens=embedder.max_tokens, title_prefix=settings.embed_titles)


def ingest_paths(settings: Settings, paths: list[Path], *, rebuild: bool = False,
                 progress: ProgressFn | None = None, sentences: bool = True, engine: str = "local",
                 ray_address: str | None = None) -> IngestReport:
    """Ingest as `rag ingest` does: chunks embedded by the ingest model; evidence sentences (when
    ``settings.sentence_vectors``) by the answer-time model, which this also readies for `rag serve`.
    ``engine="ray"`` runs loading, chunking and embedding on Ray (``rag.ingest.ray_engine``)."""
    if engine not in ("local", "ray"):
        raise UserError(f"--engine must be local or ray, not {engine!r}")
    embedder = build_embedder(settings)
    sentence_embedder = build_sentence_embedder(settings) if sentences else None

    def run(on: Engine | None) -> IngestReport:
        return ingest(paths, settings.index_dir, embedder, build_chunker(settings, embedder),
                      batch_size=settings.embedding_batch_size, rebuild=rebuild, progress=progress,
                      sentence_embedder=sentence_embedder if settings.sentence_vectors else None,
                      limits=Limits.from_settings(settings), vector_policy=VectorPolicy.from_settings(settings),
                      engine=on)

    if engine == "local":
        return run(None)
    from rag.ingest.ray_engine import RayEngine, ray_session

    with ray_session(ray_address):
        return run(RayEngine(settings))
