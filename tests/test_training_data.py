"""The news questions the answer selector trains on: verbatim, outside the eval corpus, and usable."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "train" / "data" / "news_questions.jsonl"


@pytest.fixture(scope="module")
def trainer():
    spec = importlib.util.spec_from_file_location("answer_selector_trainer", ROOT / "train" / "answer_selector.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    if not module.BBC.is_dir():
        pytest.skip(f"BBC corpus not at {module.BBC}")
    return module


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_answers_and_evidence_are_verbatim_and_articles_are_never_eval_ones(trainer, records):
    evaluated = {line.strip().removesuffix(".txt") for line in trainer.NEWS_CORPUS.read_text().splitlines()
                 if line.strip() and not line.startswith("#")}
    assert len(records) >= 1000
    for r in records:
        assert r["doc_id"] not in evaluated, r
        number = int(r["doc_id"].split("/")[1])
        assert number % 6 in (3, 4) and number % 50 != 0, r
        if r["type"] == "unanswerable":
            assert r["answer"] is None and r["evidence"] is None
            continue
        text = (trainer.BBC / f"{r['doc_id']}.txt").read_text(encoding="utf-8", errors="replace")
        assert r["answer"] in r["evidence"] and r["evidence"] in text, r


def test_the_trainer_finds_each_gold_sentence_and_drops_eval_duplicates(trainer, records):
    news = trainer.load_news()
    dropped_articles = {d for d in news.dropped if "/" in d and ":" not in d}
    assert all(reason.startswith("same story as eval article") for d, reason in news.dropped.items()
               if d in dropped_articles)
    assert not [d for d in news.dropped if ":" in d], "an answerable question whose evidence was not found"
    kept = [r for r in records if r["doc_id"] not in dropped_articles]
    assert len(news.questions) == len(kept)
    evidence = {(r["doc_id"], r["question"]): r["evidence"] for r in kept}
    for q in news.questions:
        if q.gold >= 0:  # in the article, the gold sentence and the quoted evidence overlap
            doc_id = news.doc_ids[q.article]
            text = (trainer.BBC / f"{doc_id}.txt").read_text(encoding="utf-8", errors="replace")
            written, gold = evidence[(doc_id, q.text)], news.sents[q.gold].text
            w, g = text.index(written), text.index(gold)
            assert w < g + len(gold) and g < w + len(written), (q, written)
        else:
            assert q.paragraph == -1 and not q.answer


def test_the_held_out_news_set_asks_only_held_out_articles_over_a_corpus_that_holds_them(trainer, tmp_path):
    """``train/heldout_news.py``, the calibration set: the trainer's own held-out articles (never one it
    trains on), each answerable question's evidence verbatim in the copied corpus, every eval article there."""
    import subprocess

    out = tmp_path / "heldout"
    done = subprocess.run([sys.executable, str(ROOT / "train" / "heldout_news.py"), "--out", str(out), "--no-eval"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    news = trainer.load_news()
    held = {d for i, d in enumerate(news.doc_ids) if i % trainer.Config.news_holdout_every == 0}
    trained = set(news.doc_ids) - held
    cases = [json.loads(line) for line in (out / "questions.jsonl").read_text().splitlines()]
    corpus = {str(p.relative_to(out / "corpus")).removesuffix(".txt") for p in (out / "corpus").rglob("*.txt")}
    evaluated = {line.strip().removesuffix(".txt") for line in trainer.NEWS_CORPUS.read_text().splitlines()
                 if line.strip() and not line.startswith("#")}
    assert len(cases) >= 500 and sum(c["type"] == "unanswerable" for c in cases) >= 100
    assert evaluated | held == corpus and not corpus & trained
    for c in cases:
        for ev in c["evidence"]:
            assert ev["doc_id"] in held
            assert ev["quote"] in (out / "corpus" / f"{ev['doc_id']}.txt").read_text(encoding="utf-8", errors="replace")
