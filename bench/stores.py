"""FAISS against Milvus on one corpus, in one run: retrieval quality, latency, and the move between them.

    pip install -e '.[milvus]'
    python bench/stores.py                                   # SciFact from ../shared/data/scifact
    python bench/stores.py --beir DIR --index DIR --milvus-uri http://127.0.0.1:19530

Builds (or updates) the corpus's index on FAISS as `rag eval-beir` does (no sentence pass), scores it
(nDCG@10, recall@100, query latency with the query embedding), then moves the same index to Milvus
(`RAG_VECTOR_STORE=milvus`: the next ingest copies the vectors into a collection, nothing re-embedded)
and scores it again with the same queries. Prints both rows and the differences. Default Milvus: a
Milvus Lite folder beside the index (embedded, in this process).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import machine  # noqa: E402
from rag.answer.pipeline import open_retriever  # noqa: E402
from rag.embedding.factory import build_query_embedder  # noqa: E402
from rag.eval import beir  # noqa: E402
from rag.ingest.pipeline import ingest_paths  # noqa: E402
from rag.settings import Settings  # noqa: E402


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def run(settings: Settings, corpus: Path, queries: dict, qrels: dict) -> dict:
    t0 = time.perf_counter()
    report = ingest_paths(settings, [corpus], sentences=False)
    seconds = time.perf_counter() - t0
    retriever = open_retriever(settings, build_query_embedder(settings))
    result = beir.evaluate(retriever, queries, qrels)
    index = retriever.index
    return {"store": index.manifest.store, "vectors": index.vectors.describe(), "chunks": index.manifest.chunks,
            "ingest_s": round(seconds, 1), "embedded": report.chunks_embedded, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beir", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    parser.add_argument("--index", type=Path, default=ROOT / "index" / "bench-stores")
    parser.add_argument("--milvus-uri", default="", help="default: a Milvus Lite folder beside the index")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    queries, qrels = beir.load_queries(args.beir), beir.load_qrels(args.beir, "test")
    corpus = args.beir / "corpus.jsonl"
    local = Settings(index_dir=args.index, vector_store="faiss")
    remote = local.model_copy(update={"vector_store": "milvus", "milvus_uri": args.milvus_uri})
    rows = [run(local, corpus, queries, qrels), run(remote, corpus, queries, qrels)]
    lite = args.index / "milvus.db"
    rows[1]["milvus_lite_bytes"] = folder_bytes(lite) if not args.milvus_uri else None
    print(machine())
    cols = ["store", "vectors", "chunks", "embedded", "ingest_s", "ndcg@10", "recall@100", "latency_p50_ms",
            "latency_p95_ms"]
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join(str(row.get(c)) for c in cols))
    print(f"nDCG@10 difference (milvus - faiss): {rows[1]['ndcg@10'] - rows[0]['ndcg@10']:+.4f}; "
          f"p50 {rows[1]['latency_p50_ms'] / rows[0]['latency_p50_ms']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
