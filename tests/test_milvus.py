"""RAG_VECTOR_STORE=milvus (rag.store.milvus) against a real Milvus: Milvus Lite, embedded in a folder and
as a gRPC server on loopback (how a Milvus cluster is reached).

The same files are ingested into a FAISS index and a Milvus one, and everything above the store must not
tell them apart: chunk ids and offsets, dense and BM25 hits and scores, passages, answers and citations.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the milvus extra: pip install -e '.[milvus]'")

from rag.answer.pipeline import open_pipeline  # noqa: E402
from rag.filters import Filters  # noqa: E402
from rag.ingest.pipeline import ingest, remove_documents  # noqa: E402
from rag.serve.app import create_app  # noqa: E402
from rag.settings import Settings  # noqa: E402
from rag.store import milvus  # noqa: E402
from rag.store.index import Index  # noqa: E402
from rag.store.vectors import VectorPolicy  # noqa: E402
from tests.conftest import ARTICLES, QUESTIONS, LiveServer, write_article, write_corpus  # noqa: E402

QUERIES = ["When did Cambodia and Pakistan establish diplomatic relations?", "rice harvest exports to Europe",
           "railway to the Thai border", "What does South Korea export to Cambodia?", "temple sandstone", "zzzz"]


def corpus(folder: Path) -> Path:
    """The bundled articles and four short ones, as files."""
    for path in ARTICLES.iterdir():
        if path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, folder / path.name)
    return write_corpus(folder)


def build(root: Path, docs: Path, embedder, chunker, query_embedder, policy: VectorPolicy):
    return ingest([docs], root, embedder, chunker, sentence_embedder=query_embedder, vector_policy=policy)


def milvus_policy(uri: Path | str) -> VectorPolicy:
    return VectorPolicy(store="milvus", milvus_uri=str(uri))


def assert_same_search(a: Index, b: Index, query_embedder) -> None:
    """Chunks, dense hits and BM25 hits (ids in order, scores within float noise), with and without a filter."""
    assert [tuple(r) for r in a.chunk_texts()] == [tuple(r) for r in b.chunk_texts()]
    chunk_ids = [r.id for r in a.chunk_texts()]
    some = np.asarray(sorted(chunk_ids)[::2], dtype=np.int64)
    for query in QUERIES:
        qvec = query_embedder.encode_query(query)
        for allowed in (None, some):
            da, db = a.dense_search(qvec, 8, allowed), b.dense_search(qvec, 8, allowed)
            assert [h.id for h in da] == [h.id for h in db], query
            assert np.allclose([h.score for h in da], [h.score for h in db], atol=1e-5)
            la, lb = a.lexical_search(query, 8, allowed), b.lexical_search(query, 8, allowed)
            assert [h.id for h in la] == [h.id for h in lb], query
            assert np.allclose([h.score for h in la], [h.score for h in lb], rtol=1e-4)
    assert np.allclose(a.vectors_of(chunk_ids[:5]), b.vectors_of(chunk_ids[:5]), atol=1e-6)


def collections(uri: str, prefix: str) -> set[str]:
    return {n for n in milvus.client(uri).list_collections() if n.startswith(prefix)}


@pytest.fixture(scope="module")
def pair(tmp_path_factory, embedder, chunker, query_embedder):
    """A FAISS index and a Milvus Lite one of the same files (the folder is shared, and changed, by the tests
    in order: the incremental test runs after the first)."""
    base = tmp_path_factory.mktemp("milvus")
    docs = corpus(base / "docs")
    uri = base / "lite.db"
    build(base / "faiss", docs, embedder, chunker, query_embedder, VectorPolicy())
    report = build(base / "milvus", docs, embedder, chunker, query_embedder, milvus_policy(uri))
    assert not report.skipped
    return base, docs, milvus.resolve_uri(str(uri))


def test_a_milvus_index_finds_what_the_faiss_one_finds(pair, query_embedder):
    base, _, uri = pair
    a, b = Index.open(base / "faiss"), Index.open(base / "milvus")
    assert (a.manifest.store, b.manifest.store) == ("faiss", "milvus")
    assert not (b.generation / "vectors.faiss").exists()
    assert b.manifest.vector_store["uri"] == uri and len(b.vectors) == a.manifest.chunks
    assert_same_search(a, b, query_embedder)


def test_answers_and_citations_are_the_same_on_either_store(pair, embedder):
    base, _, uri = pair
    questions = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    asked = [q["question"] for q in questions if "question" in q][:12] + ["What is the price of gold in Lima?"]
    faiss_side = open_pipeline(Settings(index_dir=base / "faiss"), embedder).answerer
    milvus_side = open_pipeline(Settings(index_dir=base / "milvus"), embedder).answerer
    for question in asked:
        x, y = faiss_side.answer(question), milvus_side.answer(question)
        assert (x.answer, x.abstained) == (y.answer, y.abstained), question
        assert [(c.doc_id, c.start, c.end) for c in x.citations] == [(c.doc_id, c.start, c.end) for c in y.citations]
    filtered = Filters(doc_ids=("cambodia-south-korea-relations",))
    x = faiss_side.answer("When were relations re-established?", filters=filtered)
    y = milvus_side.answer("When were relations re-established?", filters=filtered)
    assert x.answer == y.answer and {c.doc_id for c in y.citations} <= {"cambodia-south-korea-relations"}


def test_incremental_ingest_updates_and_deletes_through_milvus(pair, embedder, chunker, query_embedder):
    base, docs, uri = pair
    first = Index.open(base / "milvus")  # a server still reading the first generation
    prefix = first.manifest.vector_store["prefix"]
    write_article(docs, "rice", "Rice harvest", "The rice harvest in Battambang failed after a drought in June.")
    (docs / "rail.md").unlink()
    write_article(docs, "ferry", "Ferry to Koh Rong", "A ferry to Koh Rong carries 400 passengers a day.")
    build(base / "faiss", docs, embedder, chunker, query_embedder, VectorPolicy())
    report = build(base / "milvus", docs, embedder, chunker, query_embedder, milvus_policy(uri))
    assert (sorted(report.added), report.updated, report.removed) == (["ferry"], ["rice"], ["rail"])
    second = Index.open(base / "milvus")
    assert_same_search(Index.open(base / "faiss"), second, query_embedder)
    assert first.lexical_search("railway", 3) and not second.lexical_search("railway", 3)
    live = second.manifest.vector_store["collection"]
    assert collections(uri, prefix) == {first.manifest.vector_store["collection"], live}
    # A delete (the API's path) publishes a third generation: the first one's collection goes.
    remove_documents(["ferry"], base / "milvus", embedder, chunker, sentence_embedder=query_embedder,
                     vector_policy=milvus_policy(uri))
    third = Index.open(base / "milvus")
    assert collections(uri, prefix) == {live, third.manifest.vector_store["collection"]}
    assert "ferry" not in third.hashes() and not third.lexical_search("ferry Koh Rong", 3)


def test_a_failed_ingest_drops_its_collection_and_the_live_index_still_answers(tmp_path, embedder, chunker,
                                                                               query_embedder, monkeypatch):
    docs, uri = write_corpus(tmp_path / "docs"), str(tmp_path / "lite.db")
    build(tmp_path / "index", docs, embedder, chunker, query_embedder, milvus_policy(uri))
    live = Index.open(tmp_path / "index")
    prefix, before = live.manifest.vector_store["prefix"], collections(milvus.resolve_uri(uri), "rag_")
    write_article(docs, "ferry", "Ferry to Koh Rong", "A ferry to Koh Rong carries 400 passengers a day.")
    from rag.ingest import pipeline

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pipeline, "build_sentence_vectors", crash)
    with pytest.raises(OSError, match="disk full"):
        build(tmp_path / "index", docs, embedder, chunker, query_embedder, milvus_policy(uri))
    assert collections(milvus.resolve_uri(uri), "rag_") == before
    again = Index.open(tmp_path / "index")
    assert again.generation == live.generation and again.manifest.vector_store["prefix"] == prefix
    assert again.lexical_search("railway Thai border", 3) and not again.lexical_search("ferry Koh Rong", 3)


def test_an_index_moves_to_milvus_and_back_with_nothing_changed(tmp_path, embedder, chunker, query_embedder):
    docs, uri = write_corpus(tmp_path / "docs"), str(tmp_path / "lite.db")
    build(tmp_path / "ref", docs, embedder, chunker, query_embedder, VectorPolicy())
    build(tmp_path / "index", docs, embedder, chunker, query_embedder, VectorPolicy())
    report = build(tmp_path / "index", docs, embedder, chunker, query_embedder, milvus_policy(uri))
    moved = Index.open(tmp_path / "index")
    assert report.unchanged == 4 and moved.manifest.store == "milvus"  # no content change, still a new generation
    assert_same_search(Index.open(tmp_path / "ref"), moved, query_embedder)
    build(tmp_path / "index", docs, embedder, chunker, query_embedder, VectorPolicy())
    back = Index.open(tmp_path / "index")
    assert back.manifest.store == "faiss" and (back.generation / "vectors.faiss").is_file()
    assert_same_search(Index.open(tmp_path / "ref"), back, query_embedder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def milvus_server(tmp_path):
    """`milvus-lite server` on loopback: a Milvus that several processes reach over gRPC, as a cluster is."""
    port = free_port()
    exe = Path(sys.executable).with_name("milvus-lite")
    log = open(tmp_path / "milvus.log", "w")
    proc = subprocess.Popen([str(exe), "server", "--data-dir", str(tmp_path / "milvus-data"), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                raise RuntimeError((tmp_path / "milvus.log").read_text())
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_rag_ingest_and_a_running_server_share_a_milvus_server(tmp_path, milvus_server, query_embedder, embedder):
    docs = write_corpus(tmp_path / "docs")
    env = {**os.environ, "RAG_VECTOR_STORE": "milvus", "RAG_MILVUS_URI": milvus_server, "HF_HUB_OFFLINE": "1"}
    rag = str(Path(sys.executable).with_name("rag"))
    root = tmp_path / "index"
    done = subprocess.run([rag, "ingest", str(docs), "--index", str(root)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    stats = json.loads(subprocess.run([rag, "stats", "--index", str(root)], env=env, cwd=tmp_path,
                                      capture_output=True, text=True, timeout=120).stdout)
    assert stats["vector_store"]["kind"] == "milvus" and stats["vector_store"]["vectors"] == stats["chunks"]
    settings = Settings(index_dir=root, vector_store="milvus", milvus_uri=milvus_server)
    with LiveServer(create_app(settings, query_embedder, ingest_embedder=embedder)) as live:
        ready = httpx.get(f"{live.url}/readyz").json()
        assert ready["vector_store"] == "milvus" and ready["chunks"] == stats["chunks"]
        answer = httpx.post(f"{live.url}/api/answer", json={"question": "What does the railway link Phnom Penh to?"},
                            timeout=60).json()
        assert not answer["abstained"] and "Thai border" in answer["answer"]
        # Another process ingests into the same Milvus while the server runs; the server picks it up.
        write_article(docs, "ferry", "Ferry to Koh Rong", "A ferry to Koh Rong carries 400 passengers a day.")
        done = subprocess.run([rag, "ingest", str(docs), "--index", str(root)], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        for _ in range(100):
            answer = httpx.post(f"{live.url}/api/answer", json={"question": "How many passengers does the ferry "
                                                                 "to Koh Rong carry?"}, timeout=60).json()
            if "400" in answer["answer"]:
                break
            time.sleep(0.2)
        assert "400 passengers" in answer["answer"] and answer["citations"][0]["doc_id"] == "ferry"


def test_a_milvus_lite_folder_held_by_another_process_is_a_readable_error(tmp_path, embedder, chunker,
                                                                          query_embedder):
    docs, uri = write_corpus(tmp_path / "docs"), tmp_path / "held.db"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pymilvus import MilvusClient; "
                               f"MilvusClient({str(uri)!r}); print('open', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(milvus.MilvusUnavailable, match="one process at a time"):
            build(tmp_path / "index", docs, embedder, chunker, query_embedder, milvus_policy(uri))
        assert not (tmp_path / "index" / "CURRENT").exists()
    finally:
        holder.kill()
        holder.wait()
