"""Evidence scoring: which sentences of the retrieved passages answer the question, and how well."""

from __future__ import annotations

import pytest

from rag.answer.evidence import EvidenceScorer, answer_type
from rag.embedding.cache import VectorCache
from tests.conftest import make_passage


@pytest.mark.parametrize("question, kind", [
    ("When did the CKFTA become law?", "date"),
    ("Which relationship is older: Cambodia's ties with Pakistan or with South Korea?", "date"),  # age → a year
    ("How old are the ties with Pakistan?", "date"),
    ("How many Cambodians live in Korea?", "quantity"),
    ("Who leads Cambodia's new government?", "person"),
    ("Where is the new embassy?", "place"),
    ("What is the CKFTA expected to do?", None),
    # the first question word decides: a "when" clause later on asks nothing
    ("How many ballot papers were found when police returned to the warehouse?", "quantity"),
    ("Who was president of the association when it called for new powers?", "person"),
    ("Where did the player who scored grow up?", "place"),
    ("Of the MPs who rebelled, how many were Labour?", "quantity"),  # after the comma: the main clause
    ("In which year did the plant that closed open?", "date"),
])
def test_answer_type_of_a_question(question, kind):
    assert answer_type(question) == kind


@pytest.fixture(scope="module")
def scorer(embedder) -> EvidenceScorer:
    return EvidenceScorer(VectorCache(embedder))


PASSAGES = [make_passage(1, "Relations were established in 1952. Trade has grown since then, officials said.", start=10),
            make_passage(2, "Why does it matter? The embassy will serve students and traders alike.", start=500)]


def _score(scorer, embedder, question):
    return scorer.score(question, embedder.encode_query(question), PASSAGES)


def test_sentences_carry_document_offsets_and_the_best_comes_first(scorer, embedder):
    evidence = _score(scorer, embedder, "When were relations established?")
    best = evidence.sentences[0]
    assert best.text == "Relations were established in 1952." and best.passage == 0
    assert PASSAGES[0].text[best.start - 10:best.end - 10] == best.text
    assert evidence.best == best.score == max(s.score for s in evidence.sentences)
    assert [s.score for s in evidence.sentences] == sorted((s.score for s in evidence.sentences), reverse=True)


def test_questions_and_short_headings_are_never_evidence(scorer, embedder):
    texts = {s.text for s in _score(scorer, embedder, "Why does the embassy matter?").sentences}
    assert "Why does it matter?" not in texts and "The embassy will serve students and traders alike." in texts


def test_a_date_question_marks_down_a_sentence_without_a_date(scorer, embedder):
    evidence = _score(scorer, embedder, "When has trade grown?")
    by_text = {s.text: s for s in evidence.sentences}
    assert by_text["Relations were established in 1952."].type_match == 1.0
    assert by_text["Trade has grown since then, officials said."].type_match == 0.0


def test_names_and_numbers_the_passages_lack_are_reported_missing(scorer, embedder):
    evidence = _score(scorer, embedder, "Did Vietnam sign anything with Cambodia in 1999?")
    assert evidence.missing_entities == ["Vietnam", "Cambodia", "1999"]
    assert _score(scorer, embedder, "When were relations established?").missing_entities == []


def test_no_passages_no_evidence(scorer, embedder):
    evidence = scorer.score("Anything?", embedder.encode_query("Anything?"), [])
    assert (evidence.sentences, evidence.best, evidence.missing_entities) == ([], 0.0, [])


def test_a_sentence_in_two_overlapping_chunks_is_a_candidate_once(scorer, embedder):
    # One article, chunked with overlap: the second chunk starts mid-way through the first one's last
    # sentence and repeats the sentence before it. Each stretch of the article is scored once, whole.
    from dataclasses import replace

    article = "Relations began in 1952. Seoul worries about North Korea. Cambodia must define that tie."
    cut = article.index("Seoul")
    first = make_passage(1, article[:article.index(" Cambodia")], start=0)
    second = replace(make_passage(1, article[cut + 6:], start=cut + 6), chunk_id="doc1#1")
    third = replace(make_passage(1, article[cut:], start=cut), chunk_id="doc1#2")
    question = "What should Cambodia do about North Korea?"
    found = scorer.score(question, embedder.encode_query(question), [first, second, third]).sentences
    spans = [(s.start, s.end) for s in found]
    assert len(spans) == len(set(spans)) == 3, found
    assert {s.text for s in found} == {"Relations began in 1952.", "Seoul worries about North Korea.",
                                       "Cambodia must define that tie."}
    assert all(article[s.start:s.end] == s.text for s in found)


def test_of_two_copies_the_one_read_with_its_whole_sentence_before_is_kept():
    from rag.answer.evidence import _once, _Rough

    article = "Seoul worries about North Korea. Cambodia must define that tie."
    cut = article.index("about")
    chunks = [make_passage(1, article[cut:], start=cut), make_passage(1, article, start=0)]
    tail = "Cambodia must define that tie."
    rough = [_Rough(0.5, 0, chunks[0].text.index(tail), len(chunks[0].text), tail, "about North Korea.", 1, 0),
             _Rough(0.5, 1, article.index(tail), len(article), tail, "Seoul worries about North Korea.", 1, 0),
             _Rough(0.4, 0, 0, len("about North Korea."), "about North Korea.", "", 1, 0),
             _Rough(0.4, 1, 0, len("Seoul worries about North Korea."), "Seoul worries about North Korea.", "", 1, 0)]
    kept = _once(rough, chunks)
    assert sorted((r.text, r.prev) for r in kept) == [("Cambodia must define that tie.", "Seoul worries about North Korea."),
                                                      ("Seoul worries about North Korea.", "")]
