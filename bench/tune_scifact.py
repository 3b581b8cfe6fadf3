"""Choose hybrid-retrieval settings on SciFact's *train* split (the test split is only reported).

    rag eval-beir ../shared/data/scifact          # builds index/beir-scifact once
    python bench/tune_scifact.py                  # sweeps fusion settings on qrels/train.tsv

Prints nDCG@10 per configuration, best last.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.answer.pipeline import build_retriever  # noqa: E402
from rag.embedding.factory import build_embedder  # noqa: E402
from rag.eval import beir  # noqa: E402
from rag.settings import Settings  # noqa: E402
from rag.store.index import Index  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "scifact"
GRID = ([{"fusion": "rrf", "rrf_k": k} for k in (10, 30, 60, 100)]
        + [{"fusion": "rrf", "rrf_k": 60, "dense_weight": w} for w in (0.7, 1.3)]
        + [{"fusion": "convex", "convex_alpha": a} for a in (0.3, 0.4, 0.5, 0.6, 0.7)])


def main() -> None:
    base = Settings(index_dir=ROOT / "index" / "beir-scifact", retrieval_mode="hybrid")
    embedder = build_embedder(base)
    index = Index.open(base.index_dir, model=embedder.model_id)
    queries, qrels = beir.load_queries(DATA), beir.load_qrels(DATA, "train")
    results = []
    for overrides in GRID:
        retriever = build_retriever(index, embedder, base.model_copy(update=overrides))
        m = beir.evaluate(retriever, queries, qrels)
        results.append((m["ndcg@10"], overrides, m))
        print(f"{m['ndcg@10']:.4f}  recall@10 {m['recall@10']:.4f}  {overrides}", flush=True)
    best = max(results, key=lambda r: r[0])
    print(f"best on train: {best[1]}  nDCG@10 {best[0]:.4f}")


if __name__ == "__main__":
    main()
