"""Builds the pipeline's objects from ``Settings``: the one place that wires stages together."""

from __future__ import annotations

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
from rag.prompts import PromptLibrary
from rag.retrieval import IndexRetriever
from rag.settings import Settings


def build_embedder(settings: Settings) -> Embedder:
    """The ingest embedder: sentence-transformers on torch, batched."""
    return SentenceTransformerEmbedder(settings.embedding_model, torch_threads=settings.torch_threads)


def build_query_embedder(settings: Settings) -> Embedder:
    """The answer-time embedder: the ONNX export when possible, int8-quantized unless told otherwise.

    int8 vectors are not identical to the index's (cosine 0.99), so scores move by about ±0.01: retrieval
    quality is unchanged on SciFact and the abstention threshold is calibrated on them (eval/CALIBRATION.md).
    """
    if settings.query_backend == "onnx":
        from rag.onnx_embedding import OnnxEmbedder, OnnxUnavailable

        try:
            return OnnxEmbedder(settings.embedding_model, settings.model_cache_dir, settings.query_threads,
                                int8=settings.query_int8)
        except OnnxUnavailable:
            pass  # e.g. a CLS-pooled model: torch handles every architecture
    return build_embedder(settings)


def prepare_answer_model(settings: Settings) -> None:
    """Export (and quantize) the answer-time model now, while torch is loaded anyway: ``rag ingest``
    calls this so that the first ``rag serve`` after it starts in about a second, not ten."""
    build_query_embedder(settings)


def build_chunker(settings: Settings, embedder: Embedder) -> Chunker:
    return Chunker(settings.chunk_tokens, settings.chunk_overlap, model_token_count=embedder.count_tokens,
                   model_max_tokens=embedder.max_tokens, title_prefix=settings.embed_titles)


def open_retriever(settings: Settings, embedder: Embedder, index_dir: Path | None = None,
                   cache: VectorCache | None = None) -> IndexRetriever:
    index = Index.open(index_dir or settings.index_dir, model=embedder.model_id)
    return IndexRetriever(index, embedder, settings, cache or VectorCache(embedder))


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
    cache = retriever.cache if retriever else VectorCache(embedder)
    retriever = retriever or open_retriever(settings, embedder, cache=cache)
    writer = None if isinstance(generator, ExtractiveGenerator) else generator
    scorer = EvidenceScorer(cache, idf=retriever.index.lexical.idf, embed_top=settings.evidence_embed_top)
    verifier = CitationVerifier(embedder, settings.support_threshold, settings.support_min_coverage,
                                vectors=cache.vectors)
    return Answerer(retriever, generator, settings, Condenser(prompts, writer), verifier, scorer)
