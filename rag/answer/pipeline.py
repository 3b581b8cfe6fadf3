"""Builds the answer side from ``Settings``: the one place that wires retrieval, evidence, generation
and citation checks together (LLM backends are imported only when chosen)."""

from __future__ import annotations

from pathlib import Path

from rag.answer.answering import Answerer
from rag.answer.citations import CitationVerifier
from rag.answer.evidence import EvidenceScorer
from rag.answer.followup import Condenser
from rag.answer.generation import Generator
from rag.answer.generation.extractive import ExtractiveGenerator
from rag.answer.prompts import PromptLibrary
from rag.embedding.cache import VectorCache
from rag.embedding.model import Embedder
from rag.retrieval.retriever import IndexRetriever
from rag.settings import Settings
from rag.store.index import Index
from rag.store.sentence_vectors import SentenceVectors


def open_retriever(settings: Settings, embedder: Embedder, index_dir: Path | None = None,
                   cache: VectorCache | None = None) -> IndexRetriever:
    index = Index.open(index_dir or settings.index_dir, model=embedder.model_id)
    if cache is None:  # sentence vectors from ingest count only if this model made them
        cache = VectorCache(embedder, stored=SentenceVectors.load_for(index.generation, embedder))
    return IndexRetriever(index, embedder, settings, cache)


def build_generator(settings: Settings, prompts: PromptLibrary) -> Generator:
    """The generator the settings name; LLM backends are imported only when chosen."""
    if settings.generator == "openai":
        from rag.answer.generation.openai_compat import OpenAIGenerator

        return OpenAIGenerator(settings.openai_base_url, settings.openai_model, settings.openai_api_key, prompts,
                               settings.openai_timeout_s, settings.openai_retries, settings.max_new_tokens)
    if settings.generator == "llamacpp":
        from rag.answer.generation.llamacpp import LlamaCppGenerator

        return LlamaCppGenerator(prompts, settings.llamacpp_model_path, settings.max_new_tokens)
    return ExtractiveGenerator(settings.max_answer_sentences)


def build_answerer(settings: Settings, embedder: Embedder, retriever: IndexRetriever | None = None,
                   generator: Generator | None = None) -> Answerer:
    prompts = PromptLibrary(settings.prompts_dir)
    generator = generator or build_generator(settings, prompts)
    retriever = retriever or open_retriever(settings, embedder)
    cache = retriever.cache
    writer = None if isinstance(generator, ExtractiveGenerator) else generator
    scorer = EvidenceScorer(cache, idf=retriever.index.idf, embed_top=settings.evidence_embed_top)
    verifier = CitationVerifier(embedder, settings.support_threshold, settings.support_min_coverage,
                                vectors=cache.vectors)
    return Answerer(retriever, generator, settings, Condenser(prompts, writer), verifier, scorer)
