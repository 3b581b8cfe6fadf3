"""The trained answer selector: the packaged weights load, are checked, and tell answers from topic."""

from __future__ import annotations

import json
import shutil

import pytest

from rag.answer.selector import MODEL_DIR, AnswerSelector, Candidate, candidate_text
from rag.embedding.model import ModelIntegrityError

TITLE = "Cambodia opens resident embassy in Pakistan"


@pytest.fixture(scope="module")
def selector() -> AnswerSelector:
    return AnswerSelector()


def test_the_answering_sentence_outranks_sentences_on_the_same_topic(selector):
    question = "Where is Cambodia's new resident embassy in Pakistan?"
    answer = Candidate("The resident embassy is situated in the capital city of Islamabad.", TITLE)
    topical = [Candidate("Cambodia and Pakistan established diplomatic relations in 1952.", TITLE),
               Candidate("Visa procedures for Pakistani tourists will be simplified next year.", TITLE)]
    probs = selector.probabilities(question, [*topical, answer])
    assert probs[2] == max(probs)
    assert probs[2] > 0.5 > max(probs[:2])


def test_a_sentence_on_topic_without_the_fact_is_not_an_answer(selector):
    # The article is about the embassy; nothing in it says who the ambassador is.
    question = "Who is Cambodia's ambassador to Pakistan?"
    probs = selector.probabilities(question, [
        Candidate("The resident embassy is situated in the capital city of Islamabad.", TITLE),
        Candidate("Cambodia and Pakistan established diplomatic relations in 1952.", TITLE)])
    assert max(probs) < 0.5


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
