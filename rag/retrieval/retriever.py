"""Query → cited passages: dense (FAISS) and BM25 candidates, fused, de-duplicated, re-scored."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from rag.embedding.cache import VectorCache
from rag.embedding.model import Embedder
from rag.filters import Filters
from rag.records import Passage, Ranked, StoredChunk
from rag.retrieval.fusion import Fusion, FusionParams, RetrievalMode, minmax, strategy
from rag.store.index import Index
from rag.text import split_sentences

NEAR_DUPLICATE_COSINE = 0.97


class Retriever(Protocol):
    """What the answer pipeline needs from retrieval; ``IndexRetriever`` is the FAISS + BM25 one."""

    def search(self, query: str, k: int, qvec: np.ndarray | None = None,
               filters: Filters | None = None) -> list[Passage]:
        """Best-first passages for ``query``; ``qvec`` is its embedding when the caller has it already;
        only from articles that pass ``filters`` when given."""

    def matching_documents(self, filters: Filters) -> int:
        """How many articles pass ``filters`` (0: a filtered question has nothing to be answered from)."""

    def newest_published(self) -> str | None:
        """The newest article's ``published`` (ISO 8601), None when no article is dated."""


@dataclass(frozen=True)
class Candidate:
    id: int
    fused: float
    cosine: float
    vector: np.ndarray


class IndexRetriever:
    """Retrieval over one loaded ``Index``.

    Args:
        index: the generation to search.
        embedder: embeds queries (the model the index was built with, or its ONNX copy).
        mode: dense, BM25 or both; ``fusion`` and ``params`` say how both are merged.
        candidates: per-list candidates before fusion.
        rescore_top: second stage, off at 0: re-score this many by their best sentence's cosine,
            with ``rescore_weight`` its share.
        mmr_lambda: below 1, trade relevance for diversity (MMR).
        reranker_path: a local ``CrossEncoder`` folder that reorders the final passages.
        cache: sentence vectors for the second stage (shared with the evidence step).
    """

    def __init__(self, index: Index, embedder: Embedder, *, mode: RetrievalMode = RetrievalMode.HYBRID,
                 fusion: Fusion = Fusion.CONVEX, params: FusionParams = FusionParams(), candidates: int = 50,
                 rescore_top: int = 0, rescore_weight: float = 0.3, mmr_lambda: float = 1.0,
                 reranker_path: Path | None = None, cache: VectorCache | None = None):
        self.index, self.embedder = index, embedder
        self.mode, self.params, self.candidates = RetrievalMode(mode), params, candidates
        self.rescore_top, self.rescore_weight, self.mmr_lambda = rescore_top, rescore_weight, mmr_lambda
        self._fuse = strategy(self.mode, Fusion(fusion))
        self.cache = cache or VectorCache(embedder)
        self.reranker = None
        if reranker_path is not None:
            from sentence_transformers import CrossEncoder

            self.reranker = CrossEncoder(str(reranker_path), device="cpu", local_files_only=True)

    def search(self, query: str, k: int, qvec: np.ndarray | None = None,
               filters: Filters | None = None) -> list[Passage]:
        """Best-first passages for ``query``, no two from the same or a near-identical chunk; with
        ``filters``, only chunks of the articles that pass them are searched (k come back when k match)."""
        query = query.strip()
        if not query:
            return []
        allowed = self.index.allowed_ids(filters) if filters else None
        if allowed is not None and not len(allowed):
            return []
        if qvec is None:
            qvec = self.embedder.encode_query(query)
        n = max(self.candidates, k)
        dense = self.index.dense_search(qvec, n, allowed) if self.mode != RetrievalMode.BM25 else []
        lexical = self.index.lexical_search(query, n, allowed) if self.mode != RetrievalMode.DENSE else []
        candidates = self._candidates(dense, lexical, qvec)
        chunks = self.index.chunks([c.id for c in candidates[: max(4 * k, 20)]])
        if self.rescore_top:
            candidates = self._rescore_by_sentence(candidates, chunks, qvec)
        selected = self._select(candidates, k, chunks)
        if self.reranker is not None:
            selected = self._rerank(query, selected, chunks)
        return [self._passage(chunks[c.id], c.cosine) for c in selected]

    def matching_documents(self, filters: Filters) -> int:
        return int(self.index.catalogue().matching_documents(filters).sum())

    def newest_published(self) -> str | None:
        return self.index.catalogue().newest

    def _candidates(self, dense: Ranked, lexical: Ranked, qvec: np.ndarray) -> list[Candidate]:
        """Union of both lists with every candidate's cosine (stored vectors), fused, best first."""
        ids = list(dict.fromkeys([i for i, _ in dense] + [i for i, _ in lexical]))
        if not ids:
            return []
        vectors = self.index.vectors_of(ids)
        cosines = vectors @ qvec
        fused = self._fuse(ids, cosines, dense, lexical, self.params)
        order = np.argsort(-fused, kind="stable")
        return [Candidate(ids[j], float(fused[j]), float(cosines[j]), vectors[j]) for j in order]

    def _rescore_by_sentence(self, candidates: list[Candidate], chunks: dict[int, StoredChunk],
                             qvec: np.ndarray) -> list[Candidate]:
        """Second stage: mix each top candidate's fused score with its best sentence's cosine.

        A chunk that holds one sentence matching the query closely beats one that is vaguely about
        it. Sentence vectors are cached, so repeated passages cost nothing.
        """
        head = [c for c in candidates[:self.rescore_top] if c.id in chunks]
        if len(head) < 2:
            return candidates
        per_chunk = []
        for c in head:
            text = chunks[c.id].chunk.text
            per_chunk.append([text[a:b] for a, b in split_sentences(text)] or [text])
        cosines = self.cache.vectors([t for sentences in per_chunk for t in sentences]) @ qvec  # one batch
        bounds = np.cumsum([0] + [len(sentences) for sentences in per_chunk])
        best = [float(cosines[a:b].max()) for a, b in zip(bounds[:-1], bounds[1:])]
        mixed = (1 - self.rescore_weight) * minmax(np.asarray([c.fused for c in head])) + \
            self.rescore_weight * minmax(np.asarray(best))
        order = np.argsort(-mixed, kind="stable")
        rest = [c for c in candidates if c not in head]
        return [head[i] for i in order] + rest

    def _select(self, candidates: list[Candidate], k: int, chunks: dict[int, StoredChunk]) -> list[Candidate]:
        """Drop near-duplicates: chunks nearly identical to one taken, and chunks of an article that repeats
        a story another article already speaks for (``Index.duplicates``); with mmr_lambda < 1 trade
        relevance for diversity (MMR)."""
        lam = self.mmr_lambda
        pool = [c for c in candidates if c.id in chunks]
        if not pool:
            return []
        links = self.index.duplicates()
        speaks_for: dict[str, str] = {}  # story (its canonical doc_id) → the article whose passages are used
        chosen = np.empty((k, len(pool[0].vector)), dtype=np.float32)  # vectors of the selected, in order
        selected: list[Candidate] = []
        top = max(c.fused for c in pool) or 1.0
        while pool and len(selected) < k:
            taken = chosen[:len(selected)]
            if lam >= 1.0 or not selected:
                best = pool[0]
            else:
                best = max(pool, key=lambda c: lam * c.fused / top - (1 - lam) * float(np.max(taken @ c.vector)))
            pool.remove(best)
            doc = chunks[best.id].chunk.doc_id
            story = links.get(doc, doc)
            if speaks_for.setdefault(story, doc) != doc:
                continue
            if selected and float(np.max(taken @ best.vector)) > NEAR_DUPLICATE_COSINE:
                continue
            chosen[len(selected)] = best.vector
            selected.append(best)
        return selected

    def _rerank(self, query: str, selected: list[Candidate], chunks: dict[int, StoredChunk]) -> list[Candidate]:
        scores = self.reranker.predict([(query, chunks[c.id].chunk.text) for c in selected])
        return [c for _, c in sorted(zip(scores, selected), key=lambda pair: -pair[0])]

    @staticmethod
    def _passage(stored: StoredChunk, cosine: float) -> Passage:
        c = stored.chunk
        return Passage(c.doc_id, stored.title, c.chunk_id, c.start, c.end, c.text, round(cosine, 4), c.n_tokens,
                       source=stored.source, published=stored.published)
