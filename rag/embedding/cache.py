"""Vectors of short texts (evidence sentences) for answer time: stored ones first, then an LRU."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Protocol

import numpy as np

from rag.embedding.model import Embedder


class Stored(Protocol):
    """Vectors computed ahead of time (``rag.store.sentence_vectors.SentenceVectors``)."""

    def get(self, text: str) -> np.ndarray | None: ...


class VectorCache:
    """Embeddings of short texts (sentences), cached in a bounded LRU; safe across server threads.

    ``stored`` vectors, made at ingest by the same model, are used before anything is embedded.
    """

    def __init__(self, embedder: Embedder, size: int = 50_000, stored: Stored | None = None):
        self.embedder, self.size, self.stored = embedder, size, stored
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def vectors(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.embedder.dimension), np.float32)
        found = {t: v for t in texts if (v := self.stored.get(t)) is not None} if self.stored else {}
        with self._lock:  # take cached vectors now: another request may evict them while this one embeds
            for t in texts:
                if t not in found and t in self._vectors:
                    found[t] = self._vectors[t]
                    self._vectors.move_to_end(t)
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        # Rounded to float16 like stored vectors, so a score never depends on which path its vector took.
        fresh = dict(zip(missing, self.embedder.encode(missing).astype(np.float16).astype(np.float32))) if missing else {}
        found.update(fresh)
        with self._lock:
            self._vectors.update(fresh)
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)
        return np.stack([found[t] for t in texts])
