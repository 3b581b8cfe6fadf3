"""Citation checks: markers resolve, claims are supported by the sentence they cite, spans are exact."""

from __future__ import annotations

import pytest

from rag.answer.citations import CitationVerifier, parse_claims, with_markers
from rag.records import Citation
from tests.conftest import make_passage


class TestVerify:
    def test_markers_renumbered_by_first_use_and_invalid_ones_removed(self, embedder):
        passages = [make_passage(1, "Rice exports rose by 20 percent in 2023."),
                    make_passage(2, "The railway reopened in May after decades."),
                    make_passage(3, "The central bank held its rate at 2 percent.")]
        draft = "The central bank held its rate at 2 percent [3][9]. Rice exports rose by 20 percent in 2023 [1]."
        text, citations = CitationVerifier(embedder).verify(draft, passages)
        assert text == "The central bank held its rate at 2 percent [1]. Rice exports rose by 20 percent in 2023 [2]."
        assert [(c.n, c.doc_id) for c in citations] == [(1, "doc3"), (2, "doc1")]

    def test_unsupported_llm_sentence_is_dropped_and_the_span_narrowed_to_the_sentence(self, embedder):
        passages = [make_passage(1, "The embassy opened in Islamabad in 2026. It serves trade and tourism.", start=100)]
        draft = "The embassy opened in Islamabad in 2026 [1]. It cost 5 billion dollars [1]. Mars has two moons [1]."
        text, citations = CitationVerifier(embedder).verify(draft, passages)
        assert text == "The embassy opened in Islamabad in 2026 [1]."
        assert (citations[0].start, citations[0].end) == (100, 100 + len("The embassy opened in Islamabad in 2026."))
        assert citations[0].text == "The embassy opened in Islamabad in 2026."

    def test_unmarked_but_supported_sentence_gets_its_source(self, embedder):
        passages = [make_passage(1, "Floods hit the north."),
                    make_passage(2, "The railway to the border reopened in May.")]
        text, citations = CitationVerifier(embedder).verify("The railway to the border reopened in May.", passages)
        assert text == "The railway to the border reopened in May [1]." and citations[0].doc_id == "doc2"

    def test_a_number_the_source_lacks_fails(self, embedder):
        passages = [make_passage(1, "The railway to the border reopened in May after a long closure.")]
        text, _ = CitationVerifier(embedder).verify("The railway to the border reopened in May 2019 [1].", passages)
        assert text == ""

    def test_a_negation_its_source_lacks_fails(self, embedder):
        passages = [make_passage(1, "Finance minister Ralph Goodale resigned on Monday after the budget vote.")]
        verifier = CitationVerifier(embedder, threshold=0.0, min_coverage=0.0)
        kept, _ = verifier.verify("Finance minister Ralph Goodale resigned on Monday after the budget vote [1].", passages)
        assert kept
        assert verifier.verify("Finance minister Ralph Goodale did not resign on Monday after the budget vote [1].",
                               passages) == ("", [])

    def test_a_number_must_be_in_the_supporting_sentence_not_just_the_passage(self, embedder):
        passages = [make_passage(1, "Trade between the two countries grew quickly. It reached 53 million dollars in 2023. "
                                    "The embassy opened in Islamabad.")]
        verifier = CitationVerifier(embedder, threshold=0.0, min_coverage=0.0)
        assert verifier.verify("The embassy opened in Islamabad in 2023 [1].", passages) == ("", [])

    def test_a_name_its_supporting_sentence_lacks_fails(self, embedder):
        passages = [make_passage(1, "Senate President Hun Sen opened the embassy. Gillani attended the ceremony.")]
        verifier = CitationVerifier(embedder, threshold=0.0, min_coverage=0.6)  # the first sentence covers the claim
        assert verifier.verify("Gillani opened the embassy [1].", passages) == ("", [])

    def test_a_paraphrase_that_adds_words_of_its_own_fails_the_coverage_test(self, embedder):
        passages = [make_passage(1, "Exports of milled rice to Europe rose sharply this year.")]
        verifier = CitationVerifier(embedder, threshold=0.0, min_coverage=0.6)
        text, _ = verifier.verify("Overseas buyers, chiefly French grocers, snapped up far more grain [1].", passages)
        assert text == ""

    def test_nothing_supported_means_nothing_left(self, embedder):
        verifier = CitationVerifier(embedder)
        assert verifier.verify("The articles don't say.", [make_passage(1, "Rice prices rose.")]) == ("", [])
        assert verifier.verify("", [make_passage(1, "Rice prices rose.")]) == ("", [])
        assert verifier.verify("Rice prices rose [1].", []) == ("", [])


class TestClaims:
    def test_markers_after_the_full_stop_belong_to_the_sentence_before(self):
        assert [c.markers for c in parse_claims("One fact. [2] Another fact [1,3].")] == [[2], [1, 3]]

    def test_a_markers_only_fragment_joins_the_claim_before(self):
        claims = parse_claims("Ties began in 1952 [1]. [2]")
        assert [(c.text, c.markers) for c in claims] == [("Ties began in 1952.", [1, 2])]

    @pytest.mark.parametrize("text, numbers, expected", [
        ("Ties began in 1952.", [1], "Ties began in 1952 [1]."),
        ("He said “go.”", [1, 2], "He said “go [1][2].”"),
        ("No full stop", [3], "No full stop [3]"),
        ("Unchanged.", [], "Unchanged."),
    ])
    def test_markers_go_before_the_closing_punctuation(self, text, numbers, expected):
        assert with_markers(text, numbers) == expected


def test_a_citation_of_a_span_inside_a_passage_holds_the_documents_characters():
    passage = make_passage(1, "Alpha beta. Gamma delta.", start=40)
    citation = Citation.of(2, passage, 52, 64)
    assert (citation.n, citation.start, citation.end, citation.text) == (2, 52, 64, "Gamma delta.")
    assert Citation.of(1, passage).text == passage.text
