"""Query → cited passages: dense (FAISS) and BM25 candidates, fused, de-duplicated, re-scored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rag.embedding.cache import VectorCache
from rag.embedding.model import Embedder
from rag.records import Passage, StoredChunk
from rag.settings import Settings
from rag.store.index import Index
from rag.text import split_sentences

NEAR_DUPLICATE_COSINE = 0.97


class Retriever(Protocol):
    """What the answer pipeline needs from retrieval; ``IndexRetriever`` is the FAISS + BM25 one."""

    index: Index
    embedder: Embedder

    def search(self, query: str, k: int | None = None) -> list[Passage]: ...
    def search_vector(self, query: str, qvec: np.ndarray, k: int) -> list[Passage]: ...


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


Ranked = list[tuple[int, float]]


def _minmax(values: np.ndarray) -> np.ndarray:
    spread = float(values.max() - values.min()) if len(values) else 0.0
    return (values - values.min()) / spread if spread > 0 else np.ones_like(values)


def _dense_only(ids: list[int], cosines: np.ndarray, dense: Ranked, lexical: Ranked, s: Settings) -> np.ndarray:
    return cosines


def _bm25_only(ids: list[int], cosines: np.ndarray, dense: Ranked, lexical: Ranked, s: Settings) -> np.ndarray:
    scores = dict(lexical)
    return np.asarray([scores.get(i, 0.0) for i in ids])


def _hybrid_rrf(ids: list[int], cosines: np.ndarray, dense: Ranked, lexical: Ranked, s: Settings) -> np.ndarray:
    fused = rrf([[i for i, _ in dense], [i for i, _ in lexical]], [s.dense_weight, s.bm25_weight], s.rrf_k)
    return np.asarray([fused.get(i, 0.0) for i in ids])


def _hybrid_convex(ids: list[int], cosines: np.ndarray, dense: Ranked, lexical: Ranked, s: Settings) -> np.ndarray:
    """α · min-max(cosine) + (1 − α) · min-max(BM25) over the union of both candidate lists."""
    bm25 = dict(lexical)
    lex = np.asarray([bm25.get(i, 0.0) for i in ids])
    return s.convex_alpha * _minmax(cosines) + (1 - s.convex_alpha) * _minmax(lex)


FUSION: dict[str, Callable[..., np.ndarray]] = {
    "dense": _dense_only, "bm25": _bm25_only, "hybrid:rrf": _hybrid_rrf, "hybrid:convex": _hybrid_convex}


class IndexRetriever:
    """Retrieval over one loaded ``Index``.

    Example:
        >>> retriever.search("When were diplomatic ties with Pakistan set up?", k=1)[0].doc_id  # doctest: +SKIP
        'cambodia-pakistan-embassy'
    """

    def __init__(self, index: Index, embedder: Embedder, settings: Settings, cache: VectorCache | None = None):
        self.index, self.embedder, self.settings = index, embedder, settings
        self.cache = cache or VectorCache(embedder)
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
        lexical = self.index.lexical_search(query, n) if s.retrieval_mode != "dense" else []
        candidates = self._candidates(dense, lexical, qvec)
        chunks = self.index.chunks([c.id for c in candidates[: max(4 * k, 20)]])
        if s.rescore_top:
            candidates = self._rescore_by_sentence(candidates, chunks, qvec)
        selected = self._select(candidates, k, chunks)
        if self.reranker is not None:
            selected = self._rerank(query, selected, chunks)
        return [self._passage(chunks[c.id], c.cosine) for c in selected]

    def _candidates(self, dense: Ranked, lexical: Ranked, qvec: np.ndarray) -> list[Candidate]:
        """Union of both lists with every candidate's cosine (stored vectors), fused, best first."""
        ids = list(dict.fromkeys([i for i, _ in dense] + [i for i, _ in lexical]))
        if not ids:
            return []
        vectors = self.index.vectors_of(ids)
        cosines = vectors @ qvec
        s = self.settings
        key = s.retrieval_mode if s.retrieval_mode != "hybrid" else f"hybrid:{s.fusion}"
        fused = FUSION[key](ids, cosines, dense, lexical, s)
        order = np.argsort(-fused, kind="stable")
        return [Candidate(ids[j], float(fused[j]), float(cosines[j]), vectors[j]) for j in order]

    def _rescore_by_sentence(self, candidates: list[Candidate], chunks: dict[int, StoredChunk],
                             qvec: np.ndarray) -> list[Candidate]:
        """Second stage: mix each top candidate's fused score with its best sentence's cosine.

        A chunk that holds one sentence matching the query closely beats one that is vaguely about
        it. Sentence vectors are cached, so repeated passages cost nothing.
        """
        s = self.settings
        head = [c for c in candidates[:s.rescore_top] if c.id in chunks]
        if len(head) < 2:
            return candidates
        per_chunk = []
        for c in head:
            text = chunks[c.id].chunk.text
            per_chunk.append([text[a:b] for a, b in split_sentences(text)] or [text])
        cosines = self.cache.vectors([t for sentences in per_chunk for t in sentences]) @ qvec  # one batch
        bounds = np.cumsum([0] + [len(sentences) for sentences in per_chunk])
        best = [float(cosines[a:b].max()) for a, b in zip(bounds[:-1], bounds[1:])]
        mixed = (1 - s.rescore_weight) * _minmax(np.asarray([c.fused for c in head])) + \
            s.rescore_weight * _minmax(np.asarray(best))
        order = np.argsort(-mixed, kind="stable")
        rest = [c for c in candidates if c not in head]
        return [head[i] for i in order] + rest

    def _select(self, candidates: list[Candidate], k: int, chunks: dict[int, StoredChunk]) -> list[Candidate]:
        """Drop near-duplicates; with mmr_lambda < 1 trade relevance for diversity (MMR)."""
        lam = self.settings.mmr_lambda
        pool = [c for c in candidates if c.id in chunks]
        if not pool:
            return []
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
        return Passage(c.doc_id, stored.title, c.chunk_id, c.start, c.end, c.text, round(cosine, 4), c.n_tokens)
