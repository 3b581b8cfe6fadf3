"""Vectors of the sentences the evidence step scores, computed at ingest so that answers need not.

Evidence scoring embeds the best few candidate sentences of the retrieved passages; at answer time
that was ~60% of an extractive answer's CPU. Ingest embeds every candidate sentence once, with the
answer-time model, and stores them in the generation it publishes (``sentences/``): float16 vectors
sorted by a 64-bit hash of their text, tagged with the model variant that made them. Both arrays are
memory-mapped, so opening costs the same for two articles or a million sentences, and only looked-up
rows are read.
A server whose answer-time model differs ignores them and embeds as before: they are never required.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.embedding.model import Embedder

DIR = "sentences"


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

    def made_by(self, embedder: Embedder) -> bool:
        """Whether these vectors are ``embedder``'s own: the one test before any are reused or trusted."""
        return self.model == fingerprint(embedder)

    def row(self, key: int) -> int | None:
        i = int(np.searchsorted(self.keys, np.uint64(key)))
        return i if i < len(self.keys) and int(self.keys[i]) == key else None

    def get(self, text: str) -> np.ndarray | None:
        i = self.row(text_key(text))
        return None if i is None else self.vectors[i].astype(np.float32)

    def save(self, folder: Path) -> None:
        """Write ``folder/sentences``. ``folder`` is a generation being staged, never a published one:
        readers memory-map these files, and the writer fsyncs them with the rest before publishing."""
        path = folder / DIR
        path.mkdir()
        np.save(path / "keys.npy", self.keys)
        np.save(path / "vectors.npy", self.vectors)
        (path / "meta.json").write_text(json.dumps({"model": self.model, "count": len(self)}))

    @classmethod
    def load(cls, folder: Path) -> SentenceVectors | None:
        path = folder / DIR
        if not (path / "meta.json").is_file():
            return None
        meta = json.loads((path / "meta.json").read_text())
        return cls(meta["model"], np.load(path / "keys.npy", mmap_mode="r"),
                   np.load(path / "vectors.npy", mmap_mode="r"))

    @classmethod
    def load_for(cls, folder: Path, embedder: Embedder) -> SentenceVectors | None:
        """The vectors stored in ``folder`` when ``embedder`` made them, else None."""
        stored = cls.load(folder)
        return stored if stored is not None and stored.made_by(embedder) else None
