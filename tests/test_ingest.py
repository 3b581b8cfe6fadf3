"""Ingest end to end (real model, FAISS, SQLite, BM25; corpora written by the tests) and safe publishing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.answer.pipeline import open_retriever
from rag.ingest.pipeline import ingest, vectors_by
from rag.retrieval.fusion import RetrievalMode
from rag.retrieval.retriever import IndexRetriever
from rag.settings import Settings
from rag.store import writer
from rag.store.index import FORMAT_VERSION, Index, IndexIncompatible, IndexNotFound, current_generation
from tests.conftest import TOPICS, write_article, write_corpus


def _run(folder: Path, settings: Settings, embedder, chunker, **kw):
    return ingest([folder], settings.index_dir, embedder, chunker, **kw)


def _retriever(settings: Settings, embedder, **overrides) -> IndexRetriever:
    return open_retriever(settings.model_copy(update=overrides), embedder)


class TestIngest:
    def test_fresh_ingest_reports_and_publishes(self, tmp_path, settings, embedder, chunker):
        report = _run(write_corpus(tmp_path / "docs"), settings, embedder, chunker)
        assert sorted(report.added) == sorted(TOPICS) and report.published
        assert report.documents_total == 4 and report.chunks_total == report.chunks_embedded >= 4
        manifest = json.loads((current_generation(settings.index_dir) / "manifest.json").read_text())
        assert manifest["model"] == embedder.model_id and manifest["dimension"] == 384
        assert manifest["format_version"] == FORMAT_VERSION and manifest["chunker"]["max_tokens"] == 200
        assert "4 added" in report.summary()

    def test_rerun_without_changes_embeds_nothing(self, tmp_path, settings, embedder, chunker):
        folder = write_corpus(tmp_path / "docs")
        _run(folder, settings, embedder, chunker)
        gen = current_generation(settings.index_dir)
        report = _run(folder, settings, embedder, chunker)
        assert (report.unchanged, report.chunks_embedded, report.published) == (4, 0, False)
        assert current_generation(settings.index_dir) == gen

    def test_switching_the_chunk_runtime_rebuilds_instead_of_mixing_vectors(self, tmp_path, settings, embedder,
                                                                            chunker, query_embedder):
        """torch float vectors and int8 ONNX vectors of the same model never share an index."""
        folder = write_corpus(tmp_path / "docs")
        _run(folder, settings, embedder, chunker)
        assert Index.open(settings.index_dir).manifest.chunker["vectors_by"] == "torch"
        switched = ingest([folder], settings.index_dir, query_embedder, chunker)
        assert switched.rebuilt == "chunk vectors were made by torch, now by onnx-int8"
        assert switched.chunks_embedded == switched.chunks_total > 0
        assert Index.open(settings.index_dir).manifest.chunker["vectors_by"] == "onnx-int8"
        again = ingest([folder], settings.index_dir, query_embedder, chunker)
        assert (again.rebuilt, again.chunks_embedded, again.published) == ("", 0, False)

    def test_the_float_export_updates_a_torch_index_without_re_embedding(self, tmp_path, settings, embedder, chunker):
        """The default chunk runtime (ONNX float) gives torch's vectors, so an index built on torch is kept,
        and the vector of a document it adds is the one torch would have stored."""
        from rag.embedding.factory import build_embedder

        folder = write_corpus(tmp_path / "docs")
        _run(folder, settings, embedder, chunker)
        onnx = build_embedder(Settings())
        assert vectors_by(onnx) == "onnx"
        same = ingest([folder], settings.index_dir, onnx, chunker)
        assert (same.rebuilt, same.chunks_embedded, same.published) == ("", 0, False)
        write_article(folder, "bank", "Central bank", "The central bank raised its policy rate to 9 percent in May.")
        added = ingest([folder], settings.index_dir, onnx, chunker)
        assert (added.rebuilt, added.updated, added.chunks_embedded) == ("", ["bank"], 1)
        index = Index.open(settings.index_dir)
        [chunk_id] = index.docstore.chunk_ids_of(["bank"])
        chunk = index.chunks([chunk_id])[chunk_id]
        torch_vector = embedder.encode([chunker.embedding_text(chunk.chunk, chunk.title)])[0]
        assert float(index.vectors_of([chunk_id])[0] @ torch_vector) > 0.99999

    def test_changed_document_is_the_only_one_re_embedded(self, tmp_path, settings, embedder, chunker):
        folder = write_corpus(tmp_path / "docs")
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
        folder = write_corpus(tmp_path / "docs")
        _run(folder, settings, embedder, chunker)

        def found() -> dict[str, set[str]]:  # gone from the vectors and from BM25 alike
            query = "temple restoration Siem Reap"
            return {mode: {p.doc_id for p in _retriever(settings, embedder, retrieval_mode=mode).search(query, k=10)}
                    for mode in RetrievalMode}
        assert all("temple" in ids for ids in found().values())
        (folder / "temple.md").unlink()
        report = _run(folder, settings, embedder, chunker)
        assert report.removed == ["temple"] and report.chunks_removed >= 1
        assert all("temple" not in ids for ids in found().values())

    def test_bad_files_are_skipped_and_counted(self, tmp_path, settings, embedder, chunker):
        folder = write_corpus(tmp_path / "docs")
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
        folder = write_corpus(tmp_path / "docs")
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
        _run(write_corpus(tmp_path / "docs"), settings, embedder, chunker)
        with pytest.raises(IndexIncompatible, match="re-ingest"):
            Index.open(settings.index_dir, model="some/other-model")

    def test_index_from_another_format_version_says_reingest(self, tmp_path, settings, embedder, chunker):
        _run(write_corpus(tmp_path / "docs"), settings, embedder, chunker)
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
        folder = write_corpus(tmp_path / "docs")
        for i in range(4):
            write_article(folder, "rice", "Rice", f"Version {i} of the rice story.")
            _run(folder, settings, embedder, chunker)
        assert len(list(settings.index_dir.glob("gen-*"))) == 2

    def test_second_concurrent_ingest_is_refused(self, tmp_path, settings, embedder, chunker):
        with writer.ingest_lock(settings.index_dir):
            with pytest.raises(RuntimeError, match="another ingest"):
                _run(write_corpus(tmp_path / "docs"), settings, embedder, chunker)
