"""`rag ingest --engine ray` (rag.ingest.ray_engine) on a real local Ray of 2 CPUs: the index it builds is
the one a local ingest builds (chunk ids and offsets, vectors within 1e-5, BM25), incrementally too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="the ray extra: pip install -e '.[ray]'")

from rag.ingest.pipeline import ingest_paths  # noqa: E402
from rag.ingest.ray_engine import ray_session  # noqa: E402
from rag.settings import Settings  # noqa: E402
from rag.store.index import Index  # noqa: E402
from tests.conftest import ARTICLES, write_article, write_corpus  # noqa: E402

QUERIES = ["diplomatic relations 1952", "rice harvest", "railway Thai border", "ferry passengers"]


@pytest.fixture(scope="module")
def local_ray():
    with ray_session(None, cpus=2):
        yield


def corpus(folder: Path) -> Path:
    for path in ARTICLES.iterdir():
        if path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, folder / path.name)
    (folder / "broken.json").write_text('{"title": "no text field"', encoding="utf-8")  # skipped, reported
    return write_corpus(folder)


def settings(root: Path) -> Settings:
    return Settings(index_dir=root, sentence_vectors=False)


def assert_same_index(a: Index, b: Index) -> None:
    rows_a, rows_b = list(a.chunk_texts()), list(b.chunk_texts())
    assert [tuple(r) for r in rows_a] == [tuple(r) for r in rows_b]
    ids = [r.id for r in rows_a]
    ca, cb = a.chunks(ids), b.chunks(ids)
    assert [(c.chunk.chunk_id, c.chunk.start, c.chunk.end) for c in ca.values()] == \
        [(cb[i].chunk.chunk_id, cb[i].chunk.start, cb[i].chunk.end) for i in ca]
    assert np.abs(a.vectors_of(ids) - b.vectors_of(ids)).max() <= 1e-5
    for query in QUERIES:
        assert a.lexical_search(query, 10) == b.lexical_search(query, 10)
    assert a.hashes() == b.hashes() and a.manifest.next_id == b.manifest.next_id


def test_a_ray_ingest_builds_the_index_a_local_one_builds_and_updates_it_the_same(tmp_path, local_ray):
    docs = corpus(tmp_path / "docs")
    local = ingest_paths(settings(tmp_path / "local"), [docs])
    on_ray = ingest_paths(settings(tmp_path / "ray"), [docs], engine="ray")
    assert on_ray.chunks_embedded == local.chunks_embedded > 0 and on_ray.published
    assert [(s.path, s.reason) for s in on_ray.skipped] == [(s.path, s.reason) for s in local.skipped]
    assert any("broken.json" in s.path for s in on_ray.skipped)
    assert_same_index(Index.open(tmp_path / "local"), Index.open(tmp_path / "ray"))

    # Incremental: one article changed, one gone, one new; only they are embedded.
    write_article(docs, "rice", "Rice harvest", "The rice harvest in Battambang failed after a drought in June.")
    (docs / "rail.md").unlink()
    write_article(docs, "ferry", "Ferry to Koh Rong", "A ferry to Koh Rong carries 400 passengers a day.")
    local = ingest_paths(settings(tmp_path / "local"), [docs])
    on_ray = ingest_paths(settings(tmp_path / "ray"), [docs], engine="ray")
    assert (on_ray.added, on_ray.updated, on_ray.removed) == (local.added, local.updated, local.removed) == \
        (["ferry"], ["rice"], ["rail"])
    assert on_ray.chunks_embedded == local.chunks_embedded == 2
    assert_same_index(Index.open(tmp_path / "local"), Index.open(tmp_path / "ray"))
    unchanged = ingest_paths(settings(tmp_path / "ray"), [docs], engine="ray")
    assert not unchanged.published and unchanged.unchanged == len(Index.open(tmp_path / "ray").hashes())


def test_rag_ingest_engine_ray_starts_its_own_local_ray(tmp_path):
    docs = write_corpus(tmp_path / "docs")
    rag = str(Path(sys.executable).with_name("rag"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run([rag, "ingest", str(docs), "--index", str(tmp_path / "index"), "--engine", "ray"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 documents" in done.stdout and "4 added" in done.stdout
    bad = subprocess.run([rag, "ingest", str(docs), "--index", str(tmp_path / "index"), "--engine", "spark"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--engine must be local or ray" in bad.stdout + bad.stderr
