from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rag.ingest.chunking import Chunker
from rag.records import Document
from rag.text import split_sentences

WORDS = st.sampled_from(["Cambodia", "Phnom", "Penh.", "$53", "million,", "1952!", "Hun", "Manet?", "“quoted”",
                         "naïve", "日本語のテキスト", "🙂", "x" * 40, "." * 120, "(((((((", "e.g.", "U.S.",
                         "\n", "\n\n", "\t", "  ", "\u00a0"])
TEXTS = st.one_of(
    st.lists(WORDS, max_size=400).map(" ".join),
    st.text(max_size=3000),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=1500),
)


def _doc(text: str) -> Document:
    return Document("d", "t", text)


class TestSplitSentences:
    @pytest.mark.parametrize("text, expected", [
        ("", []),
        ("One. Two! Three?", ["One.", "Two!", "Three?"]),
        ("Mr. Smith met Dr. Jones in the U.S. today. Next.", ["Mr. Smith met Dr. Jones in the U.S. today.", "Next."]),
        ("Line one\nLine two", ["Line one", "Line two"]),
        ("  • Bullet: text.  \n\n  Next para.", ["• Bullet: text.", "Next para."]),
        ("He said “Go.” Then left.", ["He said “Go.”", "Then left."]),
    ])
    def test_cases(self, text: str, expected: list[str]):
        assert [text[s:e] for s, e in split_sentences(text)] == expected


class TestChunker:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(text=TEXTS, size=st.integers(16, 300), overlap=st.sampled_from([0.0, 0.15, 0.5]))
    @example(text="0:0\r0:\x810:\u0f80\U00010000", size=16, overlap=0.0)  # "\r" between pieces is a token
    def test_offsets_round_trip_and_cover_all_text(self, chunker, text, size, overlap):
        c = Chunker(size, overlap, chunker.model_token_count, chunker.model_max_tokens)
        chunks = c.chunk(_doc(text))
        for chunk in chunks:
            assert text[chunk.start:chunk.end] == chunk.text and chunk.text.strip() == chunk.text
            assert chunk.n_tokens <= size or len(chunk.text) == 1
            assert c.model_token_count(chunk.text) <= c.model_max_tokens
        covered = set()
        for chunk in chunks:
            covered.update(range(chunk.start, chunk.end))
        assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())
        assert [ch.start for ch in chunks] == sorted(ch.start for ch in chunks)

    def test_sentences_are_not_split_when_they_fit(self, chunker):
        sentences = [f"Sentence number {i} talks about Cambodia and its partners in the region." for i in range(60)]
        chunks = chunker.chunk(_doc(" ".join(sentences)))
        assert len(chunks) > 2
        for chunk in chunks:
            assert re.fullmatch(r"(Sentence number \d+ talks about Cambodia and its partners in the region\. ?)+",
                                chunk.text)
        # Windows are packed close to the limit; only the last one may be short.
        assert all(180 <= c.n_tokens <= 200 for c in chunks[:-1]) and 0 < chunks[-1].n_tokens <= 200

    def test_overlap_repeats_trailing_sentences(self, chunker):
        text = " ".join(f"Fact {i} is stated here in a sentence of ordinary length." for i in range(80))
        chunks = chunker.chunk(_doc(text))
        assert len(chunks) > 2
        for a, b in zip(chunks, chunks[1:]):
            assert b.start < a.end  # about 15% carried over
            assert chunker.count(text[b.start:a.end]) <= chunker.overlap_tokens

    def test_a_sentence_longer_than_the_window_is_split_at_whitespace(self, chunker):
        text = "word " * 1000 + "end."
        chunks = chunker.chunk(_doc(text.strip()))
        assert len(chunks) > 4 and all(c.text.startswith("word") or c.text == "end." for c in chunks)

    def test_text_dense_in_wordpieces_is_split_for_the_model(self, chunker):
        # Runs of punctuation cost ~1 cl100k token per 7 characters but one wordpiece per character.
        text = " ".join(["(((((((" ] * 400)
        plain = Chunker(200, 0.15).chunk(_doc(text))
        assert max(chunker.model_token_count(c.text) for c in plain) > chunker.model_max_tokens
        chunks = chunker.chunk(_doc(text))
        assert all(chunker.model_token_count(c.text) <= chunker.model_max_tokens for c in chunks)

    def test_chunk_ids_are_stable_and_ordered(self, chunker):
        chunks = chunker.chunk(Document("news/1", "t", "A. " * 400))
        assert [c.chunk_id for c in chunks] == [f"news/1#{i}" for i in range(len(chunks))]


def test_title_prefixed_embedding_text_still_fits_the_model(chunker):
    title = "A rather long headline about Cambodia, Pakistan, ASEAN and the garment trade (((((( " * 3
    doc = Document("d", title, " ".join(["(((((((" ] * 400))
    chunks = chunker.chunk(doc)
    assert chunks and all(
        chunker.model_token_count(chunker.embedding_text(c, doc.title)) <= chunker.model_max_tokens for c in chunks)
    assert chunker.embedding_text(chunks[0], doc.title).startswith(title)
