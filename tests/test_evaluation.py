from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli import app
from rag.eval import evaluation as ev
from rag.ingest.documents import load_documents
from tests.conftest import ARTICLES, QUESTIONS


class TestQuestionSet:
    records = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]

    def test_every_evidence_quote_occurs_verbatim_in_its_article(self):
        docs = {d.doc_id: d.text for d in load_documents([ARTICLES])[0]}
        for rec in self.records:
            for turn in rec.get("turns", [rec]):
                for evidence in turn["evidence"]:
                    assert evidence["quote"] in docs[evidence["doc_id"]], (rec["id"], evidence["quote"])

    def test_size_and_mix(self):
        types = [r["type"] for r in self.records]
        assert len(self.records) >= 60
        assert types.count("unanswerable") >= 12 and types.count("conversation") >= 8
        assert {"date", "number", "name", "list", "paraphrase", "multi_doc", "off_topic"} <= set(types)
        assert len({r["id"] for r in self.records}) == len(self.records)
        for r in self.records:
            for turn in r.get("turns", [r]):
                answerable = r["type"] not in ("unanswerable", "off_topic")
                assert bool(turn["answers"]) == answerable and bool(turn["evidence"]) == answerable, r["id"]
        assert any(len({e["doc_id"] for e in r["evidence"]}) == 2 for r in self.records if r["type"] == "multi_doc")


class TestScoring:
    @pytest.mark.parametrize("prediction, answers, expected", [
        ("Relations began in 1952 [1].", ["1952"], True),
        ("It became law on January 29, 2022 [1].", ["January 29, 2022"], True),
        ("The “Full Dialogue Partner” status [2].", ["Full Dialogue Partner"], True),
        ("In 19520 maybe.", ["1952"], False),
        ("Nothing here.", [], False),
    ])
    def test_containment_is_normalised(self, prediction, answers, expected):
        assert ev.contains_answer(prediction, answers) is expected

    def test_strict_scoring_reads_only_the_sentence_cited_first(self):
        answer = "Pakistan has over 240 million people [1]. Relations began in 1952 [2]."
        assert ev.contains_answer(answer, ["1952"])  # lenient: anywhere in the quoted sentences
        assert not ev.first_sentence_answers(answer, ["1952"])
        assert ev.first_sentence_answers(answer, ["240 million"])
        assert not ev.first_sentence_answers("", ["1952"])

    def test_token_f1(self):
        assert ev.token_f1("the rice, rubber", "rice and rubber") == pytest.approx(0.8)
        assert ev.token_f1("rice", "rice rubber") == pytest.approx(2 / 3)
        assert ev.token_f1("x", "y") == 0.0

    def test_conversations_become_chained_cases(self, tmp_path: Path):
        f = tmp_path / "q.jsonl"
        f.write_text(json.dumps({"id": "c1", "type": "conversation", "turns": [
            {"question": "A?", "answers": ["a"], "evidence": []}, {"question": "B?", "answers": ["b"], "evidence": []}]}))
        cases = ev.load_cases([f])
        assert [(c.id, c.type, c.history_of) for c in cases] == [("c1.1", "conversation_start", ""),
                                                                  ("c1.2", "follow_up", "c1.1")]

    def test_metrics_and_threshold_check(self):
        def row(**kw):
            base = dict(id="x", type="fact", question="q", standalone="q", answer="a", abstained=False,
                        should_abstain=False, hit_rank=1, correct=True, f1=1.0, citations=1,
                        citations_with_evidence=1, citations_valid=True, evidence_score=0.9, latency_ms=10.0)
            return ev.Row(**{**base, **kw})
        rows = [row(), row(hit_rank=3, correct=False, citations_with_evidence=0),
                row(should_abstain=True, abstained=True, hit_rank=None, citations=0, citations_with_evidence=0),
                row(should_abstain=True, abstained=False, hit_rank=None)]
        m = ev.metrics(rows)
        assert m["retrieval/hit@1"] == 0.5 and m["retrieval/mrr"] == pytest.approx((1 + 1 / 3) / 2, abs=1e-4)
        assert m["answer/accuracy"] == 0.5 and m["abstention/recall"] == 0.5 and m["abstention/precision"] == 1.0
        assert m["citation/precision"] == pytest.approx(2 / 3, abs=1e-4)
        assert ev.check(m, {"answer/accuracy": {"min": 0.6}, "abstention/false_rate": {"max": 0.1}}) == [
            "answer/accuracy = 0.5 < 0.6"]
        assert ev.check(m, {"nope": {"min": 0}}) == ["nope: not measured"]


def test_rag_eval_writes_reports_checks_and_compares(tmp_path: Path, bundled_index):
    runner = CliRunner()
    subset = tmp_path / "small.jsonl"
    lines = QUESTIONS.read_text(encoding="utf-8").splitlines()
    subset.write_text("\n".join(lines[:6] + [line for line in lines if '"u0' in line][:2]) + "\n")
    reports = tmp_path / "reports"
    result = runner.invoke(app, ["eval", str(subset), "--index", str(bundled_index), "--report", str(reports)])
    assert result.exit_code == 0, result.output
    first = sorted(reports.glob("*.json"))
    assert len(first) == 1 and first[0].with_suffix(".md").exists() and first[0].with_suffix(".png").exists()
    report = json.loads(first[0].read_text())
    assert report["models"]["generator"] == "extractive" and len(report["index"]["hash"]) == 16
    assert report["metrics"]["count/questions"] == 8 and "settings" in report
    failing = [r["failures"] for r in report["rows"]]
    assert failing == sorted(failing, key=lambda f: not f)  # failures listed first
    md = first[0].with_suffix(".md").read_text()
    assert "| answer/accuracy |" in md and f"![accuracy by type and latency]({first[0].stem}.png)" in md

    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps({"answer/accuracy": {"min": 1.01}}))
    result = runner.invoke(app, ["eval", str(subset), "--index", str(bundled_index), "--report", str(reports),
                                 "--check", "--no-plot"], env={"RAG_EVAL_THRESHOLDS": str(strict)})
    assert result.exit_code == 1 and "below threshold" in result.output

    a, b = first[0], first[0].with_name("b.json")
    accuracy = report["metrics"]["answer/accuracy"]
    assert accuracy > 0  # so that the change below is a visible drop
    flipped = report["rows"][-1]  # passes in A (failures are listed first), fails in B
    assert not flipped["failures"]
    rows = report["rows"][:-1] + [dict(flipped, failures=["made up"])]
    b.write_text(json.dumps(dict(report, metrics=dict(report["metrics"], **{"answer/accuracy": 0.0}), rows=rows)))
    result = runner.invoke(app, ["eval", "--compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("answer/accuracy "))
    assert line.split() == ["answer/accuracy", str(accuracy), "0.0", f"{-accuracy:+.4f}"]
    assert "latency/p95_ms" in result.output and "+0.0000" in result.output  # unchanged metrics: zero delta
    assert "questions that changed (1):" in result.output and f"{flipped['id']}: broke" in result.output
