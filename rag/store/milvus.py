"""Milvus behind the index (``RAG_VECTOR_STORE=milvus``): chunk vectors and BM25 in a Milvus collection.

Each generation writes its own collection, ``<prefix>_gen_000007``, and names it in its manifest, so a
reader, which resolves ``CURRENT`` once, never sees half an ingest: the collection it searches is
complete before ``CURRENT`` names it, and it is dropped only after a newer one is published and the
generation before that is gone (as the local generations are removed). ``prefix`` is random per index
folder, so one Milvus holds many indexes.

A row holds the chunk's id, doc_id, dense vector, text, and its BM25 terms: the words our own BM25
indexes (title and text, bm25s's tokenizer, stopwords dropped, Snowball-stemmed; ``rag.store.lexical``),
joined by spaces. Milvus's BM25 function reads that field with its ``standard`` analyzer (``\\w+``,
lowercase, no stopwords), so it indexes exactly our terms and its full-text search ranks as our BM25
does (same k1 and b; its scores carry a constant ``k1 + 1`` factor, which fusion's min-max removes).
The docstore (exact spans, catalogue, filters) and the BM25 term statistics the evidence step
weighs words by stay in the generation folder.

The URI is a Milvus Lite folder (the default: ``<index>/milvus.db``; one process at a time) or a server,
``http://host:19530`` (a Milvus cluster, or ``milvus-lite server --data-dir DIR`` on one machine, which
lets `rag ingest` and `rag serve` share it). Ingest copies the previous collection's rows into the new
one (O(corpus) per ingest, as the docstore copy is); docs/SCALING.md says what replaces that at 10^8.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import UserError
from rag.records import Hit, Ranked

STORE = "milvus"
DEFAULT_FILE = "milvus.db"
COPY_BATCH = 2_000  # rows per insert and per page of a copy
IN_LIST_MAX = 16_384  # a filter allowing more ids than this is searched wide and cut here
MAX_TEXT = 65_535  # Milvus's VARCHAR limit (bytes)


class MilvusUnavailable(UserError, RuntimeError):
    """pymilvus is not installed, or the Milvus at the URI cannot be opened."""


@dataclass(frozen=True)
class Collection:
    """Where a generation's rows live: recorded in its manifest as ``vector_store``."""

    uri: str
    name: str
    prefix: str
    index: str  # the dense index type: FLAT, HNSW, IVF_FLAT
    k1: float  # BM25's, as the collection's sparse index was built with

    def to_manifest(self) -> dict[str, Any]:
        return {"kind": STORE, "uri": self.uri, "collection": self.name, "prefix": self.prefix, "index": self.index,
                "bm25_k1": self.k1}

    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> Collection:
        return cls(data["uri"], data["collection"], data["prefix"], data["index"], data["bm25_k1"])


def default_uri(root: Path) -> str:
    return str((root / DEFAULT_FILE).resolve())


def resolve_uri(uri: str) -> str:
    """A server URI as it is; a Milvus Lite folder made absolute (the manifest records it for readers)."""
    return uri if "://" in uri else str(Path(uri).resolve())


def new_prefix() -> str:
    return f"rag_{secrets.token_hex(4)}"


def collection_name(prefix: str, generation: str) -> str:
    return f"{prefix}_{generation.replace('-', '_')}"


# One client per URI for the whole process, not per Index: Milvus Lite lets one process open a folder once,
# and a server opens a new Index (and its collection) on every generation.
_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def client(uri: str):
    """The process's MilvusClient for ``uri``."""
    with _clients_lock:
        if uri not in _clients:
            try:
                from pymilvus import MilvusClient
            except ImportError as exc:
                raise MilvusUnavailable("RAG_VECTOR_STORE=milvus needs pymilvus: pip install -e '.[milvus]'") from exc
            try:
                _clients[uri] = MilvusClient(uri)
            except Exception as exc:  # pymilvus wraps Milvus Lite's lock error in its own
                hint = (f"; a Milvus Lite folder opens in one process at a time: stop the other one, or share it "
                        f"through a server (milvus-lite server --data-dir {uri} --port 19530, then "
                        f"RAG_MILVUS_URI=http://127.0.0.1:19530)") if "://" not in uri else ""
                raise MilvusUnavailable(f"cannot open Milvus at {uri}: {exc}{hint}") from exc
        return _clients[uri]


def _dense_index(n: int, policy) -> tuple[str, dict]:
    """The Milvus index for a vector kind (``rag.store.vectors.VectorPolicy`` decides, by corpus size)."""
    from rag.store.vectors import VectorKind

    layout = policy.layout_for(n)
    if layout.kind is VectorKind.HNSW:
        return "HNSW", {"M": policy.hnsw_m, "efConstruction": policy.hnsw_ef_construction}
    if layout.kind is VectorKind.IVF:
        return "IVF_FLAT", {"nlist": layout.nlist}
    return "FLAT", {}


class MilvusVectors:
    """A generation's collection, read side: what ``Index`` asks of its vectors and of BM25 search."""

    store = STORE

    def __init__(self, collection: Collection, dimension: int, policy=None):
        self.collection, self.dimension = collection, dimension
        self._client = client(collection.uri)
        self._client.load_collection(collection.name)
        self._ef = getattr(policy, "hnsw_ef_search", 128)
        self._nprobe = getattr(policy, "ivf_nprobe", 64)
        self._count: int | None = None
        self._k1 = collection.k1

    def describe(self) -> str:
        return f"milvus {self.collection.index.lower()} ({self.collection.name})"

    def __len__(self) -> int:
        if self._count is None:
            stats = self._client.get_collection_stats(self.collection.name)
            self._count = int(stats.get("row_count", 0))
        return self._count

    def _filter(self, allowed: np.ndarray | list[int] | None) -> str:
        if allowed is None:
            return ""
        return f"id in [{','.join(map(str, np.asarray(allowed, dtype=np.int64).tolist()))}]"

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Ranked:
        """Top-k (chunk id, cosine) pairs, best first (inner product of normalised vectors)."""
        if k <= 0 or (allowed is not None and not len(allowed)):
            return []
        params = {"metric_type": "IP", "params": {"ef": max(self._ef, k), "nprobe": self._nprobe}}
        found = self._client.search(self.collection.name, data=[np.asarray(query, dtype=np.float32).tolist()],
                                    anns_field="dense", limit=k, search_params=params,
                                    filter=self._filter(allowed), output_fields=["id"])
        return [Hit(int(h["id"]), float(h["distance"])) for h in found[0]]

    def lexical_search(self, terms: list[str], k: int, allowed: np.ndarray | None = None) -> Ranked:
        """Top-k (chunk id, BM25 score) pairs by Milvus's full-text search over our terms."""
        if k <= 0 or not terms or (allowed is not None and not len(allowed)):
            return []
        found = self._client.search(self.collection.name, data=[" ".join(terms)], anns_field="sparse", limit=k,
                                    search_params={"metric_type": "BM25"}, filter=self._filter(allowed),
                                    output_fields=["id"])
        # A BM25 score is never negative; Milvus Lite reports it negated (as a distance), a Milvus server as it
        # is. Milvus multiplies every score by k1 + 1; divided out, a score is the one our BM25 gives.
        return [Hit(int(h["id"]), abs(float(h["distance"])) / (self._k1 + 1)) for h in found[0] if h["distance"]]

    def vectors(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids``, in order."""
        ids = [int(i) for i in ids]
        if not ids:
            return np.empty((0, self.dimension), dtype=np.float32)
        rows = self._client.query(self.collection.name, filter=self._filter(ids),
                                  output_fields=["id", "dense"], limit=len(ids))
        by_id = {int(r["id"]): r["dense"] for r in rows}  # Milvus returns them in no particular order
        return np.asarray([by_id[i] for i in ids], dtype=np.float32)

    def rows_of(self, ids: list[int]) -> list[dict]:
        """The rows (id, doc_id, text, terms, dense) of ``ids``: what the next generation copies."""
        if not ids:
            return []
        return self._client.query(self.collection.name, filter=self._filter(ids),
                                  output_fields=["id", "doc_id", "text", "terms", "dense"], limit=len(ids))


def _schema(mc, dimension: int):
    from pymilvus import DataType, Function, FunctionType

    schema = mc.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=4096)
    schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT)
    schema.add_field("terms", DataType.VARCHAR, max_length=MAX_TEXT, enable_analyzer=True,
                     analyzer_params={"tokenizer": "standard"})
    schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dimension)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["terms"],
                                 output_field_names=["sparse"]))
    return schema


def _clip(text: str) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= MAX_TEXT else data[:MAX_TEXT].decode("utf-8", errors="ignore")


def write_collection(uri: str, prefix: str, generation: str, dimension: int, policy, *, rows: int,
                     keep: Iterable[list[dict]], new: list[dict], k1: float, b: float) -> Collection:
    """Create the generation's collection of ``rows`` rows: ``keep`` (pages carried over) plus ``new``.

    A row is ``{"id", "doc_id", "text", "terms", "dense"}``. The collection is complete (flushed,
    indexed) when this returns; on any error it is dropped.
    """
    mc = client(uri)
    name = collection_name(prefix, generation)
    if mc.has_collection(name):  # left by an ingest that died before publishing this generation
        mc.drop_collection(name)
    kind, params = _dense_index(rows, policy)
    index_params = mc.prepare_index_params()
    index_params.add_index("dense", index_type=kind, metric_type="IP", params=params)
    index_params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                           params={"bm25_k1": k1, "bm25_b": b})
    mc.create_collection(name, schema=_schema(mc, dimension), index_params=index_params)
    try:
        for page in keep:
            mc.insert(name, [{**r, "text": _clip(r["text"]), "terms": _clip(r["terms"])} for r in page])
        for start in range(0, len(new), COPY_BATCH):
            mc.insert(name, [{**r, "text": _clip(r["text"]), "terms": _clip(r["terms"])}
                             for r in new[start:start + COPY_BATCH]])
        mc.flush(name)
    except BaseException:
        drop(uri, name)
        raise
    return Collection(uri, name, prefix, kind, k1)


def drop(uri: str, name: str) -> None:
    try:
        mc = client(uri)
        if mc.has_collection(name):
            mc.drop_collection(name)
    except Exception:  # cleanup never hides the error that caused it
        pass


def drop_except(uri: str, prefix: str, keep: set[str]) -> None:
    """Drop this index's collections other than ``keep`` (generations no longer on disk)."""
    mc = client(uri)
    for name in mc.list_collections():
        if name.startswith(f"{prefix}_gen_") and name not in keep:
            mc.drop_collection(name)
