"""The trained answer selector: the packaged weights load, are checked, and tell answers from topic."""

from __future__ import annotations

import json
import shutil

import pytest

from rag.answer.selector import MODEL_DIR, AnswerSelector, Candidate, candidate_text
from rag.embedding.model import ModelIntegrityError
from rag.ingest.documents import parse_text_article
from rag.text import is_answer_like, split_sentences
from tests.conftest import ARTICLES, QUESTIONS

TITLE = "Cambodia opens resident embassy in Pakistan"


@pytest.fixture(scope="module")
def selector() -> AnswerSelector:
    return AnswerSelector()


def _bundled_questions():
    """Single-article questions of the bundled eval set, with the article sentences that hold the answer."""
    docs = {p.stem: parse_text_article(p.read_text(encoding="utf-8"), p.stem) for p in ARTICLES.glob("*.md")}
    cases = []
    for rec in map(json.loads, QUESTIONS.read_text(encoding="utf-8").splitlines()):
        if rec["type"] not in {"date", "number", "name", "fact"} or len({e["doc_id"] for e in rec["evidence"]}) != 1:
            continue
        title, body, _ = docs[rec["evidence"][0]["doc_id"]]
        sentences = [body[a:b] for a, b in split_sentences(body) if is_answer_like(body[a:b])]
        gold = {i for i, s in enumerate(sentences) if any(e["quote"] in s for e in rec["evidence"])}
        if gold:
            cases.append((rec["question"], title, sentences, gold))
    return cases


def test_over_a_whole_article_the_answering_sentence_ranks_on_top(selector):
    """Each question against every sentence of its article: the sentence that holds the answer must
    come first far more often than chance (~1 in 40) and score above the rest on average."""
    cases = _bundled_questions()
    assert len(cases) >= 20
    top1, gold_p, other_p = 0, [], []
    for question, title, sentences, gold in cases:
        probs = selector.probabilities(question, [Candidate(s, title, sentences[i - 1] if i else "")
                                                  for i, s in enumerate(sentences)])
        top1 += max(range(len(probs)), key=probs.__getitem__) in gold
        gold_p += [probs[i] for i in gold]
        other_p += [p for i, p in enumerate(probs) if i not in gold]
    assert top1 / len(cases) >= 0.5
    assert sum(gold_p) / len(gold_p) > 2 * sum(other_p) / len(other_p)


def test_scores_are_probabilities_and_reproducible(selector):
    question = "When did Cambodia and Pakistan establish diplomatic relations?"
    batch = [Candidate("Cambodia and Pakistan established diplomatic relations in 1952.", TITLE),
             Candidate("Trade stands at $53 million.", TITLE, "The two countries met in March.")]
    first, again = selector.probabilities(question, batch), selector.probabilities(question, batch)
    assert first == again
    assert all(0.0 <= p <= 1.0 for p in first)
    assert first[0] > first[1]
    assert selector.probabilities(question, []) == []


def test_the_previous_sentence_is_context_not_the_candidate():
    text = candidate_text("It opened in 2024.", "T", "x" * 500)
    assert text.startswith("It opened in 2024. | T | ")
    assert len(text) < 200  # only the end of a long previous sentence is read


def test_weights_that_do_not_match_the_card_are_refused(tmp_path):
    folder = tmp_path / "selector"
    shutil.copytree(MODEL_DIR, folder)
    card = json.loads((folder / "selector.json").read_text())
    (folder / "selector.json").write_text(json.dumps(card | {"sha256": "0" * 64}))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        AnswerSelector(folder)
    (folder / "selector.json").write_text(json.dumps(card))
    (folder / "model.int8.onnx").unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        AnswerSelector(folder)
