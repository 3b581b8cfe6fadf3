"""Builds the answer side from ``Settings``: the one place that wires the index, retrieval, evidence,
generation and citation checks together (LLM backends are imported only when chosen)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rag.answer.answering import Answerer
from rag.answer.citations import CitationVerifier
from rag.answer.evidence import EvidenceScorer
from rag.answer.followup import Condenser
from rag.answer.generation import Generator
from rag.answer.generation.extractive import ExtractiveGenerator
from rag.answer.prompts import PromptLibrary
from rag.answer.selector import AnswerSelector
from rag.embedding.cache import VectorCache
from rag.embedding.model import Embedder
from rag.retrieval.fusion import Fusion, FusionParams, RetrievalMode
from rag.retrieval.retriever import IndexRetriever, Retriever
from rag.settings import Settings
from rag.store.index import Index
from rag.store.sentence_vectors import SentenceVectors


@dataclass(frozen=True)
class Pipeline:
    """A loaded index and the answer pipeline over it: what `rag ask`, `rag serve` and `rag eval` hold.

    ``index`` serves the documents (citations resolve against it), ``retriever`` searches it and
    ``answerer`` answers from it; none of them needs to reach into another.
    """

    index: Index
    retriever: IndexRetriever
    answerer: Answerer


def open_pipeline(settings: Settings, embedder: Embedder, generator: Generator | None = None,
                  selector: AnswerSelector | None = None) -> Pipeline:
    """Open the live index under ``settings.index_dir`` and build everything that answers from it.

    ``generator`` and ``selector`` do not depend on the index: a server passes the ones it already
    holds when it opens a new generation (an LLM or an ONNX session is costly to build, and memory a
    discarded one held is not always given back to the system).
    """
    index = open_index(settings, embedder)
    cache = sentence_cache(index, embedder)
    retriever = build_retriever(index, embedder, settings, cache)
    answerer = build_answerer(settings, embedder, retriever, cache, idf=index.idf, generator=generator,
                              selector=selector)
    return Pipeline(index, retriever, answerer)


def open_index(settings: Settings, embedder: Embedder, index_dir: Path | None = None) -> Index:
    """The live generation, checked against the model that will query it."""
    return Index.open(index_dir or settings.index_dir, model=embedder.model_id, milvus_uri=settings.milvus_uri)


def sentence_cache(index: Index, embedder: Embedder) -> VectorCache:
    """Evidence-sentence vectors: those ingest stored count only if this very model made them."""
    return VectorCache(embedder, stored=SentenceVectors.load_for(index.generation, embedder))


def build_retriever(index: Index, embedder: Embedder, settings: Settings,
                    cache: VectorCache | None = None) -> IndexRetriever:
    params = FusionParams(settings.convex_alpha, settings.rrf_k, settings.dense_weight, settings.bm25_weight)
    return IndexRetriever(index, embedder, mode=RetrievalMode.from_str(settings.retrieval_mode),
                          fusion=Fusion.from_str(settings.fusion), params=params,
                          candidates=settings.candidates, rescore_top=settings.rescore_top,
                          rescore_weight=settings.rescore_weight, mmr_lambda=settings.mmr_lambda,
                          reranker_path=settings.reranker_path, cache=cache)


def open_retriever(settings: Settings, embedder: Embedder, index_dir: Path | None = None) -> IndexRetriever:
    """Retrieval alone (`rag search`, `rag eval-beir`)."""
    index = open_index(settings, embedder, index_dir)
    return build_retriever(index, embedder, settings, sentence_cache(index, embedder))


def _openai(settings: Settings, prompts: PromptLibrary) -> Generator:
    from rag.answer.generation.openai_compat import OpenAIGenerator

    return OpenAIGenerator(settings.openai_base_url, settings.openai_model, settings.openai_api_key, prompts,
                           settings.openai_timeout_s, settings.openai_retries, settings.max_new_tokens,
                           history_tokens=settings.history_tokens)


def _llamacpp(settings: Settings, prompts: PromptLibrary) -> Generator:
    from rag.answer.generation.llamacpp import LlamaCppGenerator

    return LlamaCppGenerator(prompts, settings.llamacpp_model_path, settings.max_new_tokens,
                             n_ctx=settings.llamacpp_n_ctx, history_tokens=settings.history_tokens)


def _extractive(settings: Settings, prompts: PromptLibrary) -> Generator:
    return ExtractiveGenerator(settings.max_answer_sentences, min_score=settings.abstain_threshold)


GENERATORS: dict[str, Callable[[Settings, PromptLibrary], Generator]] = {
    "extractive": _extractive, "openai": _openai, "llamacpp": _llamacpp}


def build_generator(settings: Settings, prompts: PromptLibrary) -> Generator:
    """The generator the settings name; LLM backends are imported only when chosen."""
    return GENERATORS[settings.generator](settings, prompts)


def build_answerer(settings: Settings, embedder: Embedder, retriever: Retriever, cache: VectorCache,
                   idf: Callable[[str], float] | None = None, generator: Generator | None = None,
                   selector: AnswerSelector | None = None) -> Answerer:
    """The Answerer over ``retriever``; ``cache`` and ``idf`` serve its evidence and citation checks."""
    prompts = PromptLibrary(settings.prompts_dir)
    generator = generator or build_generator(settings, prompts)
    writer = None if isinstance(generator, ExtractiveGenerator) else generator
    if settings.answer_selector and selector is None:
        selector = AnswerSelector(threads=settings.query_threads, max_len=settings.selector_max_len)
    elif not settings.answer_selector:
        selector = None
    scorer = EvidenceScorer(cache, selector, idf=idf, embed_top=settings.evidence_embed_top,
                            candidates=settings.evidence_candidates, selector_weight=settings.selector_weight)
    verifier = CitationVerifier(embedder, settings.support_threshold, settings.support_min_coverage,
                                vectors=cache.vectors)
    # An LLM's answer that verification empties, or that no longer answers, falls back to quoting.
    fallback = None if writer is None else ExtractiveGenerator(settings.max_answer_sentences,
                                                               min_score=settings.abstain_threshold)
    return Answerer(retriever, embedder, generator, Condenser(prompts, writer), verifier, scorer,
                    top_k=settings.top_k, context_tokens=settings.context_tokens,
                    abstain_threshold=settings.abstain_threshold, selector=selector, fallback=fallback,
                    now=_aware(settings.now))


def _aware(moment: datetime | None) -> datetime | None:
    """A naive ``RAG_NOW`` is UTC, as naive times are everywhere else."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment
