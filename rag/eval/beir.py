"""`rag eval-beir`: retrieval quality on a BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).

Metrics follow trec_eval / BEIR: nDCG@10 with linear gains, Recall@k over the judged-relevant
documents, MRR@10. Passages are chunks; a document ranks where its best chunk ranks.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from collections.abc import Iterable
from pathlib import Path

from rag.eval.stats import percentile
from rag.retrieval.retriever import Retriever


def load_queries(folder: Path) -> dict[str, str]:
    queries = {}
    with open(folder / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rec = json.loads(line)
                queries[str(rec["_id"])] = rec["text"]
    return queries


def load_qrels(folder: Path, split: str) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels" / f"{split}.tsv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            qrels.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = int(row["score"])
    return qrels


def ndcg_at(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    """Example: one relevant doc at rank 2 → 1/log2(3).

    >>> round(ndcg_at(["x", "a"], {"a": 1}), 4)
    0.6309
    """
    dcg = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], relevant: dict[str, int], k: int) -> float:
    hits = {doc for doc, g in relevant.items() if g > 0}
    return len(hits & set(ranked[:k])) / len(hits) if hits else 0.0


def mrr_at(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    for i, doc in enumerate(ranked[:k]):
        if relevant.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def doc_ranking(doc_ids: Iterable[str]) -> list[str]:
    """First occurrence of each document, in order."""
    return list(dict.fromkeys(doc_ids))


def evaluate(retriever: Retriever, queries: dict[str, str], qrels: dict[str, dict[str, int]],
             depth: int = 100, latency_k: int = 10) -> dict[str, float]:
    """Flat metrics over the judged queries, plus query latency at ``latency_k`` passages (embedding included)."""
    scores: dict[str, list[float]] = {"ndcg@10": [], "recall@10": [], "recall@100": [], "mrr@10": []}
    latencies = []
    for qid, relevant in qrels.items():
        if qid not in queries:
            continue
        t0 = time.perf_counter()
        retriever.search(queries[qid], k=latency_k)  # what a product query costs
        latencies.append((time.perf_counter() - t0) * 1000)
        passages = retriever.search(queries[qid], k=int(depth * 1.5))  # a depth-100 document ranking
        ranked = doc_ranking(p.doc_id for p in passages)[:depth]
        scores["ndcg@10"].append(ndcg_at(ranked, relevant, 10))
        scores["recall@10"].append(recall_at(ranked, relevant, 10))
        scores["recall@100"].append(recall_at(ranked, relevant, 100))
        scores["mrr@10"].append(mrr_at(ranked, relevant, 10))
    result = {name: round(statistics.fmean(values), 4) for name, values in scores.items() if values}
    result.update({"queries": len(latencies), "latency_p50_ms": round(percentile(latencies, 0.5), 2),
                   "latency_p95_ms": round(percentile(latencies, 0.95), 2)})
    return result
