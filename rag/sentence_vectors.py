"""Vectors of the sentences the evidence step scores, computed at ingest so that answers need not.

Evidence scoring embeds the best few candidate sentences of the retrieved passages; at answer time
that was ~60% of an extractive answer's CPU. Ingest embeds every candidate sentence once, with the
answer-time model, and stores them beside the index as ``sentences.npz``: the texts (the sentence
heads evidence embeds) and float16 vectors, tagged with the model variant that made them. A server
whose answer-time model differs ignores the file and embeds as before, so the file is never required.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.embedding import Embedder
from rag.evidence import sentence_heads

FILE = "sentences.npz"


def fingerprint(embedder: Embedder) -> str:
    """Which vectors an embedder makes: the model plus its variant (e.g. the int8 ONNX copy)."""
    return f"{embedder.model_id}#{getattr(embedder, 'variant', 'float')}"


@dataclass(frozen=True)
class SentenceVectors:
    model: str  # ``fingerprint`` of the embedder that made them
    rows: dict[str, int]  # sentence head → row of ``vectors``
    vectors: np.ndarray  # float16, normalised before rounding

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, text: str) -> np.ndarray | None:
        row = self.rows.get(text)
        return None if row is None else self.vectors[row].astype(np.float32)

    def save(self, folder: Path) -> None:
        encoded = [t.encode() for t in sorted(self.rows, key=self.rows.__getitem__)]
        tmp = folder / f".{FILE}.tmp{os.getpid()}.npz"
        # Texts as one UTF-8 blob plus lengths: a fixed-width string array would be ~20x larger.
        np.savez(tmp, text_bytes=np.frombuffer(b"".join(encoded), dtype=np.uint8),
                 text_lengths=np.asarray([len(b) for b in encoded], dtype=np.int64),
                 vectors=self.vectors, model=np.asarray(self.model))
        os.replace(tmp, folder / FILE)

    @classmethod
    def load(cls, folder: Path) -> SentenceVectors | None:
        path = folder / FILE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            blob, ends = data["text_bytes"].tobytes(), np.cumsum(data["text_lengths"]).tolist()
            vectors, model = data["vectors"], str(data["model"])
        starts = [0, *ends[:-1]]
        return cls(model, {blob[a:b].decode(): i for i, (a, b) in enumerate(zip(starts, ends))}, vectors)


@dataclass
class BuildStats:
    embedded: int = 0
    reused: int = 0
    seconds: float = 0.0


def build(chunk_texts: Iterable[str], embedder: Embedder, previous: SentenceVectors | None = None,
          batch_size: int = 32) -> tuple[SentenceVectors, BuildStats]:
    """Vectors for every candidate sentence of ``chunk_texts``; those ``previous`` holds are reused."""
    t0 = time.perf_counter()
    texts = list(dict.fromkeys(head for text in chunk_texts for head in sentence_heads(text)))
    model = fingerprint(embedder)
    reuse = previous if previous is not None and previous.model == model else None
    vectors = np.zeros((len(texts), embedder.dimension), dtype=np.float16)
    fresh = [i for i, t in enumerate(texts) if reuse is None or t not in reuse.rows]
    for i, t in enumerate(texts):
        if reuse is not None and t in reuse.rows:
            vectors[i] = reuse.vectors[reuse.rows[t]]
    if fresh:
        vectors[fresh] = embedder.encode([texts[i] for i in fresh], batch_size=batch_size)
    stats = BuildStats(len(fresh), len(texts) - len(fresh), time.perf_counter() - t0)
    return SentenceVectors(model, {t: i for i, t in enumerate(texts)}, vectors), stats
