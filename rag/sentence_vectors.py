"""Vectors of the sentences the evidence step scores, computed at ingest so that answers need not.

Evidence scoring embeds the best few candidate sentences of the retrieved passages; at answer time
that was ~60% of an extractive answer's CPU. Ingest embeds every candidate sentence once, with the
answer-time model, and stores them beside the index in ``sentences/``: float16 vectors sorted by a
64-bit hash of their text, tagged with the model variant that made them. Both arrays are memory-mapped,
so opening costs the same for two articles or a million sentences, and only looked-up rows are read.
A server whose answer-time model differs ignores them and embeds as before: they are never required.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.embedding import Embedder
from rag.text import sentence_heads

DIR = "sentences"
GROUP = 1024  # sentences per encode call, for progress reports


def fingerprint(embedder: Embedder) -> str:
    """Which vectors an embedder makes: the model plus its variant (e.g. the int8 ONNX copy)."""
    return f"{embedder.model_id}#{getattr(embedder, 'variant', 'float')}"


def text_key(text: str) -> int:
    """64-bit key of a sentence (a collision would cost one sentence its own cosine, ~1e-8 at 10⁶)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class SentenceVectors:
    model: str  # ``fingerprint`` of the embedder that made them
    keys: np.ndarray  # uint64, sorted
    vectors: np.ndarray  # float16 rows in ``keys`` order, normalised before rounding

    def __len__(self) -> int:
        return len(self.keys)

    def row(self, key: int) -> int | None:
        i = int(np.searchsorted(self.keys, np.uint64(key)))
        return i if i < len(self.keys) and int(self.keys[i]) == key else None

    def get(self, text: str) -> np.ndarray | None:
        i = self.row(text_key(text))
        return None if i is None else self.vectors[i].astype(np.float32)

    def save(self, folder: Path) -> None:
        """Write ``folder/sentences`` whole: staged beside it, then renamed into place."""
        target, staged = folder / DIR, folder / f".{DIR}.tmp{os.getpid()}"
        for leftover in folder.glob(f".{DIR}.*"):  # from an interrupted earlier save
            shutil.rmtree(leftover, ignore_errors=True)
        staged.mkdir()
        np.save(staged / "keys.npy", self.keys)
        np.save(staged / "vectors.npy", self.vectors)
        (staged / "meta.json").write_text(json.dumps({"model": self.model, "count": len(self)}))
        if target.exists():  # replacing vectors of another model: readers treat a missing folder as none
            old = folder / f".{DIR}.old{os.getpid()}"
            os.replace(target, old)
            shutil.rmtree(old)
        os.replace(staged, target)

    @classmethod
    def load(cls, folder: Path) -> SentenceVectors | None:
        path = folder / DIR
        if not (path / "meta.json").is_file():
            return None
        meta = json.loads((path / "meta.json").read_text())
        return cls(meta["model"], np.load(path / "keys.npy", mmap_mode="r"),
                   np.load(path / "vectors.npy", mmap_mode="r"))


@dataclass
class BuildStats:
    embedded: int = 0
    reused: int = 0
    seconds: float = 0.0


def build(chunk_texts: Iterable[str], embedder: Embedder, previous: SentenceVectors | None = None,
          batch_size: int = 32, progress: Callable[[str, int, int], None] | None = None
          ) -> tuple[SentenceVectors, BuildStats]:
    """Vectors for every candidate sentence of ``chunk_texts``; those ``previous`` holds are reused."""
    t0 = time.perf_counter()
    by_key = {text_key(h): h for text in chunk_texts for h in sentence_heads(text)}
    keys = np.asarray(sorted(by_key), dtype=np.uint64)
    reuse = previous if previous is not None and previous.model == fingerprint(embedder) else None
    vectors = np.zeros((len(keys), embedder.dimension), dtype=np.float16)
    fresh = []
    for i, key in enumerate(keys.tolist()):
        old = reuse.row(key) if reuse is not None else None
        if old is None:
            fresh.append(i)
        else:
            vectors[i] = reuse.vectors[old]
    for start in range(0, len(fresh), GROUP):
        rows = fresh[start:start + GROUP]
        vectors[rows] = embedder.encode([by_key[int(keys[i])] for i in rows], batch_size=batch_size)
        if progress:
            progress("sentences", start + len(rows), len(fresh))
    stats = BuildStats(len(fresh), len(keys) - len(fresh), time.perf_counter() - t0)
    return SentenceVectors(fingerprint(embedder), keys, vectors), stats
