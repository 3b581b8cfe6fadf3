"""`rag ingest --engine ray`: loading, chunking and embedding as Ray Data stages, the rest as a local ingest.

The driver lists the files (``iter_files``), Ray loads them (one task per file), and the driver admits
the documents in file order, as ``iter_documents`` does (doc_ids unique, the first kept), and diffs them
against the live index. The changed documents go back to Ray: a chunking stage and an embedding stage,
each a pool of actors that build their chunker or embedding model once, from the same ``Settings``.
The driver sorts the chunks back into document order, so they get the ids a local ingest gives them,
and publishes through the same ``write_generation`` (atomic, incremental, deletes included). The
evidence-sentence pass and the near-duplicate pass run on the driver.

Without ``address`` a local Ray is started with this machine's CPUs and stopped afterwards; with one
(``ray://host:10001`` or ``auto``) the stages run on that cluster, whose workers need this package
installed. ``ray`` is the optional extra ``.[ray]``.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from rag.embedding.model import Embedder
from rag.errors import UserError
from rag.ingest.chunking import Chunker
from rag.ingest.documents import Limits, admit, iter_files, load_file
from rag.ingest.vectors import ProgressFn
from rag.records import Chunk, Document, Skipped
from rag.settings import Settings

DOCS_PER_BATCH = 16


class RayUnavailable(UserError, RuntimeError):
    """ray is not installed, or the cluster at the address cannot be reached."""


@contextmanager
def ray_session(address: str | None, cpus: int | None = None) -> Iterator[None]:
    """A connection to ``address``, or a local Ray of ``cpus`` CPUs started (and stopped) here."""
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable("--engine ray needs ray: pip install -e '.[ray]'") from exc
    env = {"env_vars": {"HF_HUB_OFFLINE": "1"}}
    started = not ray.is_initialized()
    if started:
        try:
            if address:
                ray.init(address=address, runtime_env=env, log_to_driver=False)
            else:
                ray.init(num_cpus=cpus or os.cpu_count() or 1, include_dashboard=False, runtime_env=env,
                         log_to_driver=False)
        except Exception as exc:  # noqa: BLE001  (Ray raises several kinds; the message is what helps)
            raise RayUnavailable(f"cannot start or reach Ray{f' at {address}' if address else ''}: {exc}") from exc
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _load(batch: dict) -> dict:
    """Ray task: the documents (and skips) of each file, pickled, with the file's position."""
    orders, payloads = [], []
    for order, file, root, limits in zip(batch["order"], batch["file"], batch["root"], batch["limits"]):
        found = list(load_file(Path(file), Path(root), pickle.loads(limits)))
        orders.append(int(order))
        payloads.append(pickle.dumps(found))
    return {"order": orders, "payload": payloads}


class _Chunk:
    """Ray actor: the ingest's chunker, built once (its token counts need the model's tokenizer)."""

    def __init__(self, settings: bytes):
        from rag.embedding.factory import build_embedder
        from rag.ingest.pipeline import build_chunker

        config = pickle.loads(settings)
        self.chunker = build_chunker(config, build_embedder(config))

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {"order": [], "ordinal": [], "chunk": [], "text": []}
        for order, payload in zip(batch["order"], batch["doc"]):
            doc: Document = pickle.loads(payload)
            for chunk in self.chunker.chunk(doc):
                out["order"].append(int(order))
                out["ordinal"].append(chunk.ordinal)
                out["chunk"].append(pickle.dumps(chunk))
                out["text"].append(self.chunker.embedding_text(chunk, doc.title))
        return out


class _Embed:
    """Ray actor: the chunk embedding model, loaded once."""

    def __init__(self, settings: bytes):
        from rag.embedding.factory import build_embedder

        config = pickle.loads(settings)
        self.embedder, self.batch_size = build_embedder(config), config.embedding_batch_size

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch["text"]]
        t0 = time.perf_counter()
        vectors = self.embedder.encode(texts, batch_size=self.batch_size)
        seconds = time.perf_counter() - t0
        return {"order": batch["order"], "ordinal": batch["ordinal"], "chunk": batch["chunk"],
                "vector": np.asarray(vectors, dtype=np.float32), "seconds": [seconds / max(len(texts), 1)] * len(texts)}


class RayEngine:
    """What ``ingest`` asks of an engine, on Ray: documents to diff, then chunks and their vectors."""

    def __init__(self, settings: Settings, actors: int | None = None):
        self.settings, self.actors = settings, actors or max(1, (os.cpu_count() or 2) // 2)

    def documents(self, paths: list[Path], limits: Limits) -> Iterator[Document | Skipped]:
        import ray

        files, early = [], []
        for item in iter_files(paths):
            (early if isinstance(item, Skipped) else files).append(item)
        yield from early
        if not files:
            return
        packed = pickle.dumps(limits)
        ds = ray.data.from_items([{"order": i, "file": str(f), "root": str(r), "limits": packed}
                                  for i, (f, r) in enumerate(files)])
        loaded = ds.map_batches(_load, batch_size=8).take_all()
        seen: set[str] = set()
        for row in sorted(loaded, key=lambda r: r["order"]):
            file = files[row["order"]][0]
            for item in pickle.loads(row["payload"]):
                yield item if isinstance(item, Skipped) else admit(item, file, seen, limits)

    def chunk_and_embed(self, changed: list[Document], chunker: Chunker, embedder: Embedder, batch_size: int,
                        progress: ProgressFn | None = None) -> tuple[list[Chunk], np.ndarray, float]:
        """Chunks of ``changed`` in document order (the ids a local ingest gives), their vectors and the
        model's seconds. The actors build ``chunker`` and ``embedder`` anew from the settings."""
        import ray

        if not changed:
            return [], np.zeros((0, embedder.dimension), dtype=np.float32), 0.0
        config = pickle.dumps(self.settings)
        ds = ray.data.from_items([{"order": i, "doc": pickle.dumps(d)} for i, d in enumerate(changed)])
        ds = ds.map_batches(_Chunk, fn_constructor_kwargs={"settings": config}, batch_size=DOCS_PER_BATCH,
                            concurrency=self.actors, num_cpus=1)
        ds = ds.map_batches(_Embed, fn_constructor_kwargs={"settings": config},
                            batch_size=self.settings.embedding_batch_size * 4, concurrency=self.actors, num_cpus=1)
        rows = sorted(ds.take_all(), key=lambda r: (r["order"], r["ordinal"]))
        if progress:
            progress("chunks", len(rows), len(rows))
        chunks = [pickle.loads(r["chunk"]) for r in rows]
        vectors = np.stack([np.asarray(r["vector"], dtype=np.float32) for r in rows])
        return chunks, vectors, float(sum(r["seconds"] for r in rows))
