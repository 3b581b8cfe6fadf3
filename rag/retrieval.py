"""Query → cited passages: dense (FAISS) and BM25 candidates, fused, de-duplicated, re-scored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rag.docstore import StoredChunk
from rag.embedding import Embedder
from rag.index import Index
from rag.settings import Settings

NEAR_DUPLICATE_COSINE = 0.97


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk. ``score`` is its cosine similarity to the query (0..1 in practice)."""

    doc_id: str
    title: str
    chunk_id: str
    start: int
    end: int
    text: str
    score: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class Retriever(Protocol):
    def search(self, query: str, k: int | None = None) -> list[Passage]: ...


@dataclass(frozen=True)
class Candidate:
    id: int
    fused: float
    cosine: float
    vector: np.ndarray


def rrf(rankings: list[list[int]], weights: list[float], k: int) -> dict[int, float]:
    """Weighted reciprocal rank fusion: sum of w / (k + rank), ranks from 1.

    Example:
        >>> sorted(rrf([[7, 8], [8]], [1.0, 1.0], 60).items())
        [(7, 0.01639344262295082), (8, 0.03252247488101534)]
    """
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return fused


def _dense_only(dense: list[tuple[int, float]], lexical: list[tuple[int, float]], s: Settings):
    return {i: score for i, score in dense}


def _bm25_only(dense: list[tuple[int, float]], lexical: list[tuple[int, float]], s: Settings):
    return {i: score for i, score in lexical}


def _hybrid(dense: list[tuple[int, float]], lexical: list[tuple[int, float]], s: Settings):
    return rrf([[i for i, _ in dense], [i for i, _ in lexical]], [s.dense_weight, s.bm25_weight], s.rrf_k)


FUSION: dict[str, Callable[..., dict[int, float]]] = {
    "dense": _dense_only, "bm25": _bm25_only, "hybrid": _hybrid}


class IndexRetriever:
    """Retrieval over one loaded ``Index``.

    Example:
        >>> retriever.search("When were diplomatic ties with Pakistan set up?", k=1)[0].doc_id  # doctest: +SKIP
        'cambodia-pakistan-embassy'
    """

    def __init__(self, index: Index, embedder: Embedder, settings: Settings):
        self.index, self.embedder, self.settings = index, embedder, settings
        self.reranker = None
        if settings.reranker_path is not None:
            from sentence_transformers import CrossEncoder

            self.reranker = CrossEncoder(str(settings.reranker_path), device="cpu", local_files_only=True)

    def search(self, query: str, k: int | None = None) -> list[Passage]:
        """Best-first passages for ``query``, no two from the same or a near-identical chunk."""
        k = k or self.settings.top_k
        query = query.strip()
        if not query:
            return []
        qvec = self.embedder.encode_query(query)
        return self.search_vector(query, qvec, k)

    def search_vector(self, query: str, qvec: np.ndarray, k: int) -> list[Passage]:
        s = self.settings
        n = max(s.candidates, k)
        dense = self.index.dense_search(qvec, n) if s.retrieval_mode != "bm25" else []
        lexical = self.index.lexical.search(query, n) if s.retrieval_mode != "dense" else []
        fused = FUSION[s.retrieval_mode](dense, lexical, s)
        candidates = self._candidates(fused, qvec)
        chunks = self.index.docstore.chunks_by_ids([c.id for c in candidates[: max(4 * k, 20)]])
        selected = self._select(candidates, k, chunks)
        if self.reranker is not None:
            selected = self._rerank(query, selected, chunks)
        return [self._passage(chunks[c.id], c.cosine) for c in selected]

    def _candidates(self, fused: dict[int, float], qvec: np.ndarray) -> list[Candidate]:
        ranked = sorted(fused.items(), key=lambda item: -item[1])
        if not ranked:
            return []
        ids = np.asarray([i for i, _ in ranked], dtype=np.int64)
        vectors = self.index.vectors.reconstruct_batch(ids)
        cosines = vectors @ qvec
        return [Candidate(int(i), f, float(c), v) for (i, f), c, v in zip(ranked, cosines, vectors)]

    def _select(self, candidates: list[Candidate], k: int, chunks: dict[int, StoredChunk]) -> list[Candidate]:
        """Drop near-duplicates; with mmr_lambda < 1 trade relevance for diversity (MMR)."""
        lam = self.settings.mmr_lambda
        pool = [c for c in candidates if c.id in chunks]
        selected: list[Candidate] = []
        while pool and len(selected) < k:
            if lam >= 1.0 or not selected:
                best = pool[0]
            else:
                chosen = np.stack([c.vector for c in selected])
                top = max(c.fused for c in pool) or 1.0
                best = max(pool, key=lambda c: lam * c.fused / top - (1 - lam) * float(np.max(chosen @ c.vector)))
            pool.remove(best)
            if selected and float(np.max(np.stack([c.vector for c in selected]) @ best.vector)) > NEAR_DUPLICATE_COSINE:
                continue
            selected.append(best)
        return selected

    def _rerank(self, query: str, selected: list[Candidate], chunks: dict[int, StoredChunk]) -> list[Candidate]:
        scores = self.reranker.predict([(query, chunks[c.id].chunk.text) for c in selected])
        return [c for _, c in sorted(zip(scores, selected), key=lambda pair: -pair[0])]

    @staticmethod
    def _passage(stored: StoredChunk, cosine: float) -> Passage:
        c = stored.chunk
        return Passage(c.doc_id, stored.title, c.chunk_id, c.start, c.end, c.text, round(cosine, 4))
