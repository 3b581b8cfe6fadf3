from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rag.answer.pipeline import open_retriever
from rag.eval import beir
from rag.ingest.pipeline import ingest


class TestMetrics:
    """A hand-computed case: relevant docs a (gain 2) and b (gain 1); ranking x, a, y, b."""

    ranked = ["x", "a", "y", "b"]
    relevant = {"a": 2, "b": 1, "z": 0}

    def test_ndcg_at_10(self):
        dcg = 2 / math.log2(3) + 1 / math.log2(5)
        idcg = 2 / math.log2(2) + 1 / math.log2(3)
        assert beir.ndcg_at(self.ranked, self.relevant, 10) == pytest.approx(dcg / idcg)
        assert beir.ndcg_at(["a", "b"], self.relevant, 10) == pytest.approx(1.0)
        assert beir.ndcg_at(["x"], self.relevant, 10) == 0.0

    def test_recall_and_mrr(self):
        assert beir.recall_at(self.ranked, self.relevant, 2) == 0.5
        assert beir.recall_at(self.ranked, self.relevant, 10) == 1.0
        assert beir.mrr_at(self.ranked, self.relevant, 10) == 0.5
        assert beir.mrr_at(self.ranked, self.relevant, 1) == 0.0

    def test_document_ranking_keeps_first_occurrence(self):
        assert beir.doc_ranking(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]


def test_eval_beir_on_a_tiny_beir_folder(tmp_path: Path, embedder, chunker, settings):
    corpus = [{"_id": "d1", "title": "Rice", "text": "Rice exports from Cambodia rose sharply this year."},
              {"_id": "d2", "title": "Rail", "text": "The railway between Phnom Penh and Poipet reopened."},
              {"_id": "d3", "title": "Bank", "text": "The central bank left interest rates unchanged."}]
    (tmp_path / "beir" / "qrels").mkdir(parents=True)
    (tmp_path / "beir" / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in corpus))
    (tmp_path / "beir" / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"_id": "q1", "text": "train line reopening"}, {"_id": "q2", "text": "interest rate decision"}]))
    (tmp_path / "beir" / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td3\t1\n")
    ingest([tmp_path / "beir" / "corpus.jsonl"], settings.index_dir, embedder, chunker)
    retriever = open_retriever(settings, embedder)
    result = beir.evaluate(retriever, beir.load_queries(tmp_path / "beir"), beir.load_qrels(tmp_path / "beir", "test"))
    assert result["queries"] == 2 and result["ndcg@10"] == 1.0 and result["mrr@10"] == 1.0


def test_cli_eval_beir_notices_an_edited_corpus(tmp_path: Path):
    from typer.testing import CliRunner

    from rag.cli import app

    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    docs = {"d1": "Rice exports from Cambodia rose sharply this year.",
            "d2": "The railway between Phnom Penh and Poipet reopened."}
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": k, "text": v}) for k, v in docs.items()))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "train line reopening"}))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    args = ["eval-beir", str(folder), "--index", str(tmp_path / "index"), "--json"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["mrr@10"] == 1.0
    docs["d1"], docs["d2"] = docs["d2"], "Rice prices in Phnom Penh markets fell."  # the answer moves to d1
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": k, "text": v}) for k, v in docs.items()))
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["mrr@10"] == 0.5  # scored on the edited corpus, not the stale index
