"""Hot reload: the server opens a newly published index generation without a restart.

A generation that fails to open never takes a working server down: the loaded pipeline keeps
serving, the failure is logged and remembered, and the same generation is tried again only after a
back-off (doubling, at most ``MAX_BACKOFF_S``), so neither requests nor ``/readyz`` rebuild it on
every call. The generator (an LLM backend can hold a model in memory) and the answer selector
are built once and reused.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rag.answer.generation import Generator
from rag.answer.pipeline import Pipeline, open_pipeline
from rag.answer.selector import AnswerSelector
from rag.embedding.factory import build_embedder
from rag.embedding.model import Embedder
from rag.errors import UserError
from rag.eval.feedback import FeedbackStore
from rag.ingest.chunking import Chunker
from rag.ingest.pipeline import build_chunker
from rag.serve.metrics import Metrics
from rag.serve.starters import starter_questions
from rag.settings import Settings
from rag.store.index import current_generation

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 600.0
_PATH = re.compile(r"(?:[\w.~-]*/)+([\w.-]+)")


def without_paths(message: str) -> str:
    """A message fit for an unauthenticated client: every path cut to its last part.

    Example:
        >>> without_paths("no index at /srv/rag/index/default: run rag ingest")
        'no index at default: run rag ingest'
    """
    return _PATH.sub(r"\1", message)


def trim_memory() -> None:
    """Give the memory of a replaced generation back to the system.

    Requests still running on it keep it alive until they end; what is already free sits in glibc's
    per-thread arenas, which a long-running server would otherwise grow by about one generation per
    reload (bench/soak.py: RSS +12% over one reload under load without this).
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


@dataclass(frozen=True)
class FailedLoad:
    """A generation that did not open: when to try it again, and a reason without paths."""

    generation: Path
    attempts: int
    retry_at: float  # time.monotonic()
    reason: str


class ServiceState:
    """The loaded model and pipeline (and the feedback store beside the index). The index is (re)opened
    when a new generation is published.

    Until one is, ``pipeline`` is None and ``load_error`` says why (the API answers 503).
    """

    def __init__(self, settings: Settings, embedder: Embedder | None, clock=time.monotonic,
                 ingest_embedder: Embedder | None = None):
        self.settings, self.embedder, self.clock = settings, embedder, clock
        self._ingest_embedder = ingest_embedder  # uploads' chunk model: built on the first upload, then kept
        self.writes = asyncio.Lock()  # uploads and deletes of this server, one at a time
        self._loading = threading.Lock()
        self.pipeline: Pipeline | None = None
        self.failed: FailedLoad | None = None
        self.metrics = Metrics()
        self.feedback = FeedbackStore.beside(settings.index_dir)  # opened on its first write
        self._generator: Generator | None = None  # built once, reused by every generation
        self._selector: AnswerSelector | None = None
        self._starters: tuple[Path | None, list[str]] = (None, [])
        self._lock = threading.Lock()

    def ingester(self) -> tuple[Embedder, Chunker]:
        """The chunk model and chunker the index is built with (``rag ingest``'s), loaded once, on first use.

        The query model cannot stand in: it is another runtime (int8 ONNX), and an index never mixes chunk
        vectors of two (``rag.ingest.pipeline.vectors_by``).
        """
        with self._loading:
            if self._ingest_embedder is None:
                self._ingest_embedder = build_embedder(self.settings)
            return self._ingest_embedder, build_chunker(self.settings, self._ingest_embedder)

    @property
    def load_error(self) -> str:
        return self.failed.reason if self.failed else ""

    def newer(self) -> Path | None:
        """The live generation when it should be opened now: not the loaded one, not one backing off."""
        if self.embedder is None:
            return None
        try:
            live = current_generation(self.settings.index_dir)
        except OSError:
            log.exception("cannot read the index's CURRENT pointer")
            return None
        loaded = self.pipeline.index.generation if self.pipeline else None
        if live is None or live == loaded:
            return None
        if self.failed and self.failed.generation == live and self.clock() < self.failed.retry_at:
            return None
        return live

    def refresh(self) -> Pipeline | None:
        """Open the live generation if it should be (cheap when nothing changed); keep the loaded one on failure."""
        if self.newer() is None:
            return self.pipeline
        with self._lock:
            live = self.newer()  # another thread may have opened it while this one waited
            if live is None:
                return self.pipeline
            try:
                # open_pipeline opens (and checks) the index before anything is built on it.
                pipeline = open_pipeline(self.settings, self.embedder, generator=self._generator,
                                         selector=self._selector)
            except Exception as exc:  # any failure: a half-written or corrupt generation, a bad model file
                self._remember_failure(live, exc)
                return self.pipeline
            self.pipeline, self.failed = pipeline, None  # the replaced one lives on only in running requests
            self._generator, self._selector = pipeline.answerer.generator, pipeline.answerer.selector
            index = pipeline.index
            self.metrics.documents.set(index.manifest.documents)
            self.metrics.chunks.set(index.manifest.chunks)
            self.metrics.index_bytes.set(index.size_bytes())
        trim_memory()
        return self.pipeline

    def _remember_failure(self, live: Path, exc: Exception) -> None:
        attempts = self.failed.attempts + 1 if self.failed and self.failed.generation == live else 1
        backoff = min(self.settings.reload_backoff_s * 2 ** (attempts - 1), MAX_BACKOFF_S)
        serving = f"still serving generation {self.pipeline.index.generation.name}" if self.pipeline else "nothing loaded"
        log.error("index generation %s failed to open (attempt %d; %s; next try in %.0f s): %s",
                  live, attempts, serving, backoff, exc, exc_info=not isinstance(exc, OSError | ValueError))
        # The HTTP side sees this reason: a user-facing message with its paths cut to their last part.
        what = without_paths(str(exc)) if isinstance(exc, UserError) else type(exc).__name__
        reason = f"index generation {live.name} failed to open ({what}); next try in {backoff:.0f} s"
        self.failed = FailedLoad(live, attempts, self.clock() + backoff, reason)
        self.metrics.reload_failures.inc()

    def starters(self, pipeline: Pipeline) -> list[str]:
        """Starter questions, computed once per index generation."""
        generation, questions = self._starters
        if generation != pipeline.index.generation:
            questions = starter_questions(pipeline.index)
            self._starters = (pipeline.index.generation, questions)
        return questions
