"""Builds the pipeline's objects from ``Settings``: the one place that wires stages together."""

from __future__ import annotations

import os
from pathlib import Path

from rag.answering import Answerer
from rag.chunking import Chunker
from rag.citations import CitationVerifier
from rag.embedding import Embedder, SentenceTransformerEmbedder, VectorCache
from rag.evidence import EvidenceScorer
from rag.followup import Condenser
from rag.generation import Generator
from rag.generation.extractive import ExtractiveGenerator
from rag.index import Index
from rag.ingest import IngestReport, ProgressFn, ingest
from rag.prompts import PromptLibrary
from rag.retrieval import IndexRetriever
from rag.sentence_vectors import SentenceVectors, fingerprint
from rag.settings import Settings


def build_embedder(settings: Settings) -> Embedder:
    """The ingest embedder: sentence-transformers on torch, batched."""
    return SentenceTransformerEmbedder(settings.embedding_model, torch_threads=settings.torch_threads)


def build_query_embedder(settings: Settings, parallel: int = 1) -> Embedder:
    """The answer-time embedder: the ONNX export when possible, int8-quantized unless told otherwise.

    int8 vectors are not identical to the index's (cosine 0.99), so scores move by about ±0.01: retrieval
    quality is unchanged on SciFact and the abstention threshold is calibrated on them (eval/CALIBRATION.md).
    """
    if settings.query_backend == "onnx":
        from rag.onnx_embedding import OnnxEmbedder, OnnxUnavailable

        try:
            return OnnxEmbedder(settings.embedding_model, settings.model_cache_dir, settings.query_threads,
                                int8=settings.query_int8, parallel=parallel)
        except OnnxUnavailable:
            pass  # e.g. a CLS-pooled model: torch handles every architecture
    return build_embedder(settings)


def build_sentence_embedder(settings: Settings) -> Embedder:
    """The answer-time model on every core, for ingest to embed evidence sentences with. Building it
    exports (and quantizes) the model if needed, so the first `rag serve` after an ingest starts fast."""
    cores = os.cpu_count() or 1
    if settings.query_int8:  # one text per call (see OnnxEmbedder.encode), one call per core
        return build_query_embedder(settings, parallel=cores)
    return build_query_embedder(settings.model_copy(update={"query_threads": cores}))


def ingest_paths(settings: Settings, paths: list[Path], *, rebuild: bool = False,
                 progress: ProgressFn | None = None, sentences: bool = True) -> IngestReport:
    """Ingest as `rag ingest` does: chunks embedded by sentence-transformers; evidence sentences (when
    ``settings.sentence_vectors``) by the answer-time model, which this also readies for `rag serve`."""
    embedder = build_embedder(settings)
    sentence_embedder = build_sentence_embedder(settings) if sentences else None
    return ingest(paths, settings.index_dir, embedder, build_chunker(settings, embedder),
                  batch_size=settings.embedding_batch_size, rebuild=rebuild, progress=progress,
                  sentence_embedder=sentence_embedder if settings.sentence_vectors else None)


def build_chunker(settings: Settings, embedder: Embedder) -> Chunker:
    return Chunker(settings.chunk_tokens, settings.chunk_overlap, model_token_count=embedder.count_tokens,
                   model_max_tokens=embedder.max_tokens, title_prefix=settings.embed_titles)


def open_retriever(settings: Settings, embedder: Embedder, index_dir: Path | None = None,
                   cache: VectorCache | None = None) -> IndexRetriever:
    index = Index.open(index_dir or settings.index_dir, model=embedder.model_id)
    if cache is None:  # sentence vectors from ingest count only if this model made them
        stored = SentenceVectors.load(index.generation)
        cache = VectorCache(embedder, stored=stored if stored and stored.model == fingerprint(embedder) else None)
    return IndexRetriever(index, embedder, settings, cache)


def build_generator(settings: Settings, prompts: PromptLibrary) -> Generator:
    """The generator the settings name; LLM backends are imported only when chosen."""
    if settings.generator == "openai":
        from rag.generation.openai_compat import OpenAIGenerator

        return OpenAIGenerator(settings.openai_base_url, settings.openai_model, settings.openai_api_key, prompts,
                               settings.openai_timeout_s, settings.openai_retries, settings.max_new_tokens)
    if settings.generator == "llamacpp":
        from rag.generation.llamacpp import LlamaCppGenerator

        return LlamaCppGenerator(prompts, settings.llamacpp_model_path, settings.max_new_tokens)
    return ExtractiveGenerator(settings.max_answer_sentences)


def build_answerer(settings: Settings, embedder: Embedder, retriever: IndexRetriever | None = None,
                   generator: Generator | None = None) -> Answerer:
    prompts = PromptLibrary(settings.prompts_dir)
    generator = generator or build_generator(settings, prompts)
    retriever = retriever or open_retriever(settings, embedder)
    cache = retriever.cache
    writer = None if isinstance(generator, ExtractiveGenerator) else generator
    scorer = EvidenceScorer(cache, idf=retriever.index.lexical.idf, embed_top=settings.evidence_embed_top)
    verifier = CitationVerifier(embedder, settings.support_threshold, settings.support_min_coverage,
                                vectors=cache.vectors)
    return Answerer(retriever, generator, settings, Condenser(prompts, writer), verifier, scorer)
