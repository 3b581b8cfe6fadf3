"""Builds the pipeline's objects from ``Settings``: the one place that wires stages together."""

from __future__ import annotations

from pathlib import Path

from rag.chunking import Chunker
from rag.embedding import Embedder, SentenceTransformerEmbedder
from rag.index import Index
from rag.retrieval import IndexRetriever
from rag.settings import Settings


def build_embedder(settings: Settings) -> Embedder:
    return SentenceTransformerEmbedder(settings.embedding_model, torch_threads=settings.torch_threads)


def build_chunker(settings: Settings, embedder: Embedder) -> Chunker:
    return Chunker(settings.chunk_tokens, settings.chunk_overlap,
                   model_token_count=embedder.count_tokens, model_max_tokens=embedder.max_tokens)


def open_retriever(settings: Settings, embedder: Embedder, index_dir: Path | None = None) -> IndexRetriever:
    index = Index.open(index_dir or settings.index_dir, model=embedder.model_id)
    return IndexRetriever(index, embedder, settings)
