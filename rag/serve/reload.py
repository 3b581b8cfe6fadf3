"""Hot reload: the server opens a newly published index generation without a restart."""

from __future__ import annotations

import threading
from pathlib import Path

from rag.answer.pipeline import Pipeline, open_pipeline
from rag.embedding.model import Embedder
from rag.errors import UserError
from rag.serve.metrics import Metrics
from rag.settings import Settings
from rag.store.index import current_generation


class ServiceState:
    """The loaded model and pipeline. The index is (re)opened when a new generation is published.

    Until one is, ``pipeline`` is None and ``load_error`` says why (the API answers 503).
    """

    def __init__(self, settings: Settings, embedder: Embedder | None):
        self.settings, self.embedder = settings, embedder
        self.pipeline: Pipeline | None = None
        self.load_error = ""
        self.metrics = Metrics()
        self._lock = threading.Lock()

    def newer(self) -> Path | None:
        """The live generation when it is not the loaded one; None when there is nothing to open."""
        live = current_generation(self.settings.index_dir)
        loaded = self.pipeline.index.generation if self.pipeline else None
        return live if live is not None and live != loaded and self.embedder is not None else None

    def refresh(self) -> Pipeline | None:
        """Open the live generation if it is not the one loaded (cheap when nothing changed)."""
        live = self.newer()
        if live is None:
            return self.pipeline
        with self._lock:
            if self.pipeline is None or self.pipeline.index.generation != live:
                try:
                    self.pipeline = open_pipeline(self.settings, self.embedder)
                    self.load_error = ""
                except UserError as exc:
                    self.load_error = str(exc)
                    return self.pipeline
                index = self.pipeline.index
                self.metrics.documents.set(index.manifest.documents)
                self.metrics.chunks.set(index.manifest.chunks)
                self.metrics.index_bytes.set(index.size_bytes())
        return self.pipeline
