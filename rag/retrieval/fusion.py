"""How dense and BM25 candidate lists become one ranking: the retrieval modes and hybrid fusions.

Each strategy is a small function ``(ids, cosines, dense, lexical, params) -> scores`` over the union
of both candidate lists; ``strategy(mode, fusion)`` picks one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from rag.choices import parse_choice
from rag.records import Ranked


class RetrievalMode(StrEnum):
    """Which candidate lists a query draws on."""

    DENSE = "dense"
    BM25 = "bm25"
    HYBRID = "hybrid"

    @classmethod
    def from_str(cls, value: str) -> RetrievalMode:
        """Example:
            >>> RetrievalMode.from_str("BM25")
            <RetrievalMode.BM25: 'bm25'>
        """
        return parse_choice(cls, value, "retrieval mode")


class Fusion(StrEnum):
    """How a hybrid query merges its two lists (convex was chosen on SciFact train, README)."""

    RRF = "rrf"
    CONVEX = "convex"

    @classmethod
    def from_str(cls, value: str) -> Fusion:
        """Example:
            >>> Fusion.from_str("mean")
            Traceback (most recent call last):
            ...
            ValueError: unknown fusion 'mean': choose one of rrf, convex
        """
        return parse_choice(cls, value, "fusion")


@dataclass(frozen=True)
class FusionParams:
    """The knobs of the hybrid fusions (README "Settings")."""

    convex_alpha: float = 0.5  # dense share in convex fusion
    rrf_k: int = 60
    dense_weight: float = 1.0  # RRF weights of the two lists
    bm25_weight: float = 1.0


Strategy = Callable[[list[int], np.ndarray, Ranked, Ranked, FusionParams], np.ndarray]


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


def minmax(values: np.ndarray) -> np.ndarray:
    """Scaled to 0..1; all ones when every value is the same."""
    spread = float(values.max() - values.min()) if len(values) else 0.0
    return (values - values.min()) / spread if spread > 0 else np.ones_like(values)


def _dense_only(ids: list[int], cosines: np.ndarray, dense: Ranked, lexical: Ranked, p: FusionParams) -> np.ndarray:
    return cosines


def _bm25_only(ids: list[int], cosines: np.ndarray, dense: Ranked, lexical: Ranked, p: FusionParams) -> np.ndarray:
    scores = dict(lexical)
    return np.asarray([scores.get(i, 0.0) for i in ids])


def _hybrid_rrf(ids: list[int], cosines: np.ndarray, dense: Ranked, lexical: Ranked, p: FusionParams) -> np.ndarray:
    fused = rrf([[i for i, _ in dense], [i for i, _ in lexical]], [p.dense_weight, p.bm25_weight], p.rrf_k)
    return np.asarray([fused.get(i, 0.0) for i in ids])


def _hybrid_convex(ids: list[int], cosines: np.ndarray, dense: Ranked, lexical: Ranked, p: FusionParams) -> np.ndarray:
    """α · min-max(cosine) + (1 − α) · min-max(BM25) over the union of both candidate lists."""
    bm25 = dict(lexical)
    lex = np.asarray([bm25.get(i, 0.0) for i in ids])
    return p.convex_alpha * minmax(cosines) + (1 - p.convex_alpha) * minmax(lex)


_SINGLE: dict[RetrievalMode, Strategy] = {RetrievalMode.DENSE: _dense_only, RetrievalMode.BM25: _bm25_only}
_HYBRID: dict[Fusion, Strategy] = {Fusion.RRF: _hybrid_rrf, Fusion.CONVEX: _hybrid_convex}


def strategy(mode: RetrievalMode, fusion: Fusion) -> Strategy:
    """The scoring function for a mode (and, for hybrid, its fusion)."""
    return _HYBRID[Fusion(fusion)] if mode == RetrievalMode.HYBRID else _SINGLE[RetrievalMode(mode)]
