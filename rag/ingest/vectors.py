"""The embedding passes of ingest: chunks by the ingest model, evidence sentences by the answer-time model."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from rag.embedding.model import Embedder
from rag.store.sentence_vectors import SentenceVectors, fingerprint, text_key
from rag.text import sentence_heads

EMBED_GROUP = 256  # chunk texts per encode call: big enough to sort by length, small enough for progress
SENTENCE_GROUP = 1024  # sentences per encode call, for progress reports
ProgressFn = Callable[[str, int, int], None]  # (what: "chunks" | "sentences", done, total)


def embed_chunks(embedder: Embedder, texts: list[str], batch_size: int,
                 progress: ProgressFn | None = None) -> tuple[np.ndarray, float]:
    """Vectors of ``texts`` (float32 rows in order) and the seconds spent in the model."""
    vectors = np.zeros((len(texts), embedder.dimension), dtype=np.float32)
    seconds = 0.0
    for start in range(0, len(texts), EMBED_GROUP):
        group = texts[start:start + EMBED_GROUP]
        t0 = time.perf_counter()
        vectors[start:start + len(group)] = embedder.encode(group, batch_size=batch_size)
        seconds += time.perf_counter() - t0
        if progress:
            progress("chunks", start + len(group), len(texts))
    return vectors, seconds


@dataclass
class BuildStats:
    embedded: int = 0
    reused: int = 0
    seconds: float = 0.0


def build_sentence_vectors(chunk_texts: Iterable[str], embedder: Embedder, previous: SentenceVectors | None = None,
                           batch_size: int = 32, progress: ProgressFn | None = None
                           ) -> tuple[SentenceVectors, BuildStats]:
    """Vectors for every candidate sentence of ``chunk_texts``; those ``previous`` holds are reused."""
    t0 = time.perf_counter()
    by_key = {text_key(h): h for text in chunk_texts for h in sentence_heads(text)}
    keys = np.asarray(sorted(by_key), dtype=np.uint64)
    reuse = previous if previous is not None and previous.made_by(embedder) else None
    vectors = np.zeros((len(keys), embedder.dimension), dtype=np.float16)
    fresh = []
    for i, key in enumerate(keys.tolist()):
        old = reuse.row(key) if reuse is not None else None
        if old is None:
            fresh.append(i)
        else:
            vectors[i] = reuse.vectors[old]
    for start in range(0, len(fresh), SENTENCE_GROUP):
        rows = fresh[start:start + SENTENCE_GROUP]
        vectors[rows] = embedder.encode([by_key[int(keys[i])] for i in rows], batch_size=batch_size)
        if progress:
            progress("sentences", start + len(rows), len(fresh))
    stats = BuildStats(len(fresh), len(keys) - len(fresh), time.perf_counter() - t0)
    return SentenceVectors(fingerprint(embedder), keys, vectors), stats
