"""Builds the embedders ``Settings`` name: the one place that picks a backend for each job."""

from __future__ import annotations

import logging
import os

from rag.embedding.model import Embedder
from rag.settings import Settings

log = logging.getLogger(__name__)


def build_embedder(settings: Settings) -> Embedder:
    """The ingest embedder (``settings.ingest_backend``): the ONNX export of the model on every core (float:
    one batch per core side by side, ~10% faster than one batch on all cores, same vectors; int8: one text
    per core), or sentence-transformers on torch, batched."""
    if settings.ingest_backend != "torch":
        from rag.embedding.onnx import OnnxEmbedder, OnnxUnavailable

        cores = os.cpu_count() or 1
        int8 = settings.ingest_backend == "onnx-int8"
        try:
            return OnnxEmbedder(settings.embedding_model, settings.model_cache_dir, 1, int8=int8, parallel=cores)
        except OnnxUnavailable as exc:
            log.warning("ingest model: no ONNX export (%s); using sentence-transformers on torch", exc)
    return _torch_embedder(settings)


def _torch_embedder(settings: Settings) -> Embedder:
    from rag.embedding.transformer import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(settings.embedding_model, torch_threads=settings.torch_threads)


def build_query_embedder(settings: Settings, parallel: int = 1) -> Embedder:
    """The answer-time embedder: the ONNX export when possible, int8-quantized unless told otherwise.

    int8 vectors are not identical to the index's (cosine 0.99), so scores move by about ±0.01: retrieval
    quality is unchanged on SciFact and the abstention threshold is calibrated on them (eval/CALIBRATION.md).
    """
    if settings.query_backend == "onnx":
        from rag.embedding.onnx import OnnxEmbedder, OnnxUnavailable

        try:
            return OnnxEmbedder(settings.embedding_model, settings.model_cache_dir, settings.query_threads,
                                int8=settings.query_int8, parallel=parallel)
        except OnnxUnavailable as exc:  # e.g. a CLS-pooled model: torch handles every architecture
            log.warning("answer-time model: no ONNX export (%s); using sentence-transformers on torch", exc)
    return _torch_embedder(settings)


def build_sentence_embedder(settings: Settings) -> Embedder:
    """The answer-time model on every core, for ingest to embed evidence sentences with. Building it
    exports (and quantizes) the model if needed, so the first `rag serve` after an ingest starts fast."""
    cores = os.cpu_count() or 1
    if settings.query_int8:  # one text per call (see OnnxEmbedder.encode), one call per core
        return build_query_embedder(settings, parallel=cores)
    return build_query_embedder(settings.model_copy(update={"query_threads": cores}))
