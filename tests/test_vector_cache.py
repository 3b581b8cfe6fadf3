"""The answer-time cache of sentence vectors: bounded, and safe when requests evict each other's entries."""

from __future__ import annotations

import numpy as np

from rag.embedding.cache import VectorCache


class CountingEmbedder:
    """A deterministic embedder (one-hot by text length) that counts what it embeds; ``during`` runs inside
    ``encode``, i.e. while another request could be using the cache."""

    dimension = 8
    model_id = "counting"

    def __init__(self):
        self.embedded: list[str] = []
        self.during = None

    def encode(self, texts: list[str]) -> np.ndarray:
        self.embedded += texts
        if self.during:
            during, self.during = self.during, None
            during()
        return np.eye(self.dimension, dtype=np.float32)[[len(t) % self.dimension for t in texts]]


def test_cached_vectors_are_reused_and_the_cache_stays_bounded():
    embedder = CountingEmbedder()
    cache = VectorCache(embedder, size=2)
    first = cache.vectors(["a", "bb"])
    again = cache.vectors(["bb", "a"])
    assert embedder.embedded == ["a", "bb"]
    assert np.array_equal(first[::-1], again)
    cache.vectors(["ccc"])  # "bb" is the least recently used ("a" was asked for after it): evicted
    cache.vectors(["a", "bb"])
    assert embedder.embedded == ["a", "bb", "ccc", "bb"]


def test_an_entry_evicted_by_another_request_mid_call_is_not_lost():
    embedder = CountingEmbedder()
    cache = VectorCache(embedder, size=1)
    cache.vectors(["a"])
    # While this call embeds "bb", another request fills the cache and evicts "a".
    embedder.during = lambda: cache.vectors(["ccc"])
    out = cache.vectors(["a", "bb"])
    assert out.shape == (2, 8)
    assert np.array_equal(out[0], np.eye(8, dtype=np.float32)[1])
