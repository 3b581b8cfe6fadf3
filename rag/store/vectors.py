"""Chunk vectors in FAISS, keyed by docstore ids: exact search on small corpora, approximate on large ones.

Three kinds (``VectorKind``), all inner product on normalised vectors (cosine), all with our own int64
ids, all able to give a stored vector back exactly (``vectors``):

- ``flat``: ``IndexIDMap2(IndexFlatIP)``, exact. ``auto`` keeps it up to ``exact_max`` vectors: a
  query scans every vector, 0.11-0.15 ms per thousand on one core (384 dimensions, 50 hits; on a
  busy 2-core VM: 0.9 ms at 8k, 3.3 ms at 25k, 7.5 ms at 50k; ``python bench/scale.py --flat-cost``).
- ``ivf``: ``IndexIVFFlat`` with ≈4·√n cells (``ivf_lists``) and a hash-table direct map (our ids
  and ``vectors``); a query scans the ``nprobe`` nearest cells. What ``auto`` picks above
  ``exact_max``: k-means runs on a sample (64 vectors a cell), removal is native, the lists map from
  disk; scanning 1.6% of the cells (64 of 4096 at 10^6) kept recall@10 at 0.98-1.0 on 40k BBC-derived vectors.
- ``hnsw``: ``IndexIDMap2(IndexHNSWFlat)``, a graph; faster queries, slower builds. FAISS cannot
  remove from it, so a removed vector's id becomes the tombstone -1 in the id map and every search
  filters it out (an ``IDSelector``), while the graph still routes through it; past
  ``MAX_TOMBSTONES`` of the graph the next write rebuilds it without them.

The file is FAISS's own format, which records the kind and its search parameters (nprobe,
efSearch), so a reader opens it right without a sidecar. It is memory-mapped
(``IO_FLAG_MMAP_IFC``: flat codes, IVF lists, HNSW links), so opening 10^6 vectors reads tens of
megabytes (IVF centroids and id map) instead of 1.5 GB, and pages come in as searches touch them. A
mapped index is read-only (FAISS aborts on a change): the first change reads a private copy, and
``clone`` shares the mapping until then.

The writer calls ``updated`` with what changed and a ``VectorPolicy``; it returns the index in the
layout that the new size calls for (``VectorPolicy.layout_for``), converting when the kind changes
or an IVF outgrows its cells; the vectors are reconstructed, never re-embedded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from rag.choices import parse_choice
from rag.records import Hit, Ranked

if TYPE_CHECKING:
    from rag.settings import Settings

TOMBSTONE = -1  # the id a removed vector of an HNSW graph carries in its id map
MAX_TOMBSTONES = 0.1  # share of an HNSW graph's vectors that may be tombstones before a write rebuilds it
AUTO_SHRINK = 0.8  # auto turns an IVF back into exact search only below this share of exact_max
IVF_TRAIN_POINTS_PER_LIST = 64  # k-means sample: 262k points for 4096 lists (FAISS's default 256 takes all 10^6)
IVF_MIN_POINTS_PER_LIST = 39  # FAISS warns when a list is trained on fewer
FILTER_EXACT_MAX = 20_000  # a filter allowing at most this many ids is scored exactly (~10 ms at 20k)
FILTER_MAX_EF = 4096  # HNSW candidates a filtered search may read


class VectorKind(StrEnum):
    """How vectors are indexed; ``auto`` lets the corpus size decide (``VectorPolicy.layout_for``)."""

    AUTO = "auto"
    FLAT = "flat"
    IVF = "ivf"
    HNSW = "hnsw"

    @classmethod
    def from_str(cls, value: str) -> VectorKind:
        """Example:
            >>> VectorKind.from_str("HNSW")
            <VectorKind.HNSW: 'hnsw'>
        """
        return parse_choice(cls, value, "vector index")


@dataclass(frozen=True)
class Layout:
    """The shape of an index: its kind and, for IVF, its number of cells (lists)."""

    kind: VectorKind
    nlist: int = 0


def ivf_lists(n: int) -> int:
    """IVF cells for ``n`` vectors: the power of two nearest 4·√n, at most n/39 (each trained on 39+).

    Example:
        >>> ivf_lists(100_000), ivf_lists(1_000_000)
        (1024, 4096)
    """
    target = 2 ** round(math.log2(max(4 * math.sqrt(n), 1)))
    cap = 2 ** int(math.log2(max(n // IVF_MIN_POINTS_PER_LIST, 1)))
    return max(1, min(target, cap))


@dataclass(frozen=True)
class VectorPolicy:
    """Which kind of index a write produces, and its parameters (defaults: ``rag.settings``).

    Args:
        kind: ``auto`` (flat up to ``exact_max`` vectors, IVF above) or a kind to force.
        exact_max: the largest index ``auto`` keeps exact.
        ivf_nprobe: cells an IVF query scans (64 of 4096 at 10^6: 1.6% of the vectors).
        hnsw_m, hnsw_ef_construction, hnsw_ef_search: HNSW links per node, and the candidate
            lists of a build and of a query.
        store: ``faiss`` (vectors.faiss in the generation) or ``milvus`` (``rag.store.milvus``).
        milvus_uri: the Milvus a ``milvus`` store writes to ("": ``<index>/milvus.db``, Milvus Lite).
    """

    kind: VectorKind = VectorKind.AUTO
    exact_max: int = 20_000
    ivf_nprobe: int = 64
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    store: str = "faiss"
    milvus_uri: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> VectorPolicy:
        return cls(VectorKind.from_str(settings.vector_index), settings.vector_exact_max, settings.ivf_nprobe,
                   settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search,
                   settings.vector_store, settings.milvus_uri)

    def layout_for(self, n: int) -> Layout:
        """The layout an index of ``n`` vectors gets; an empty one is flat (nothing to train on).

        Example:
            >>> VectorPolicy().layout_for(5_000), VectorPolicy().layout_for(1_000_000)
            (Layout(kind=<VectorKind.FLAT: 'flat'>, nlist=0), Layout(kind=<VectorKind.IVF: 'ivf'>, nlist=4096))
        """
        kind = self.kind
        if kind is VectorKind.AUTO:
            kind = VectorKind.FLAT if n <= self.exact_max else VectorKind.IVF
        if n == 0:
            kind = VectorKind.FLAT
        return Layout(kind, ivf_lists(n) if kind is VectorKind.IVF else 0)


@contextmanager
def _all_cores() -> Iterator[None]:
    """Builds (k-means, graph inserts, cell assignment) use every core; searches stay on one (``load``)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class VectorIndex:
    """Chunk vectors under our int64 ids: search, add, remove, and the stored vectors back.

    Args:
        index: the FAISS index (one of the three kinds in the module docstring).
        mapped: the file ``index`` is memory-mapped from (read-only; a change reads a private copy).
    """

    def __init__(self, index: faiss.Index, mapped: Path | None = None):
        self._index, self._mapped = index, mapped
        self._kind = _kind_of(index)
        self._tombstones = _tombstones(index) if self._kind is VectorKind.HNSW else 0
        # Searches skip tombstones; the selector is immutable, so threads share it.
        self._live = faiss.IDSelectorNot(faiss.IDSelectorRange(TOMBSTONE, TOMBSTONE + 1))

    @classmethod
    def new(cls, dimension: int) -> VectorIndex:
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dimension)))

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, layout: Layout, policy: VectorPolicy) -> VectorIndex:
        """A new index of ``layout`` holding ``vectors`` under ``ids`` (an IVF is trained on them)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        dimension = vectors.shape[1]
        with _all_cores():
            if layout.kind is VectorKind.IVF:
                index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dimension), dimension, layout.nlist,
                                           faiss.METRIC_INNER_PRODUCT)
                index.cp.max_points_per_centroid = IVF_TRAIN_POINTS_PER_LIST
                index.train(vectors)
                index.set_direct_map_type(faiss.DirectMap.Hashtable)
            elif layout.kind is VectorKind.HNSW:
                graph = faiss.IndexHNSWFlat(dimension, policy.hnsw_m, faiss.METRIC_INNER_PRODUCT)
                graph.hnsw.efConstruction = policy.hnsw_ef_construction
                index = faiss.IndexIDMap2(graph)
            else:
                index = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
            if len(ids):
                index.add_with_ids(vectors, ids)
        built = cls(index)
        built._tune(policy)
        return built

    @classmethod
    def load(cls, path: Path, mmap: bool = True) -> VectorIndex:
        """Open a saved index, memory-mapped unless ``mmap`` is false (then it is read whole, writable)."""
        # One query vector is searched faster on one thread, and FAISS's OpenMP pool spinning beside
        # torch's doubled query latency (22 → 12 ms p50 on SciFact, bench in README).
        faiss.omp_set_num_threads(1)
        if mmap:
            return cls(faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC), mapped=path)
        return cls(faiss.read_index(str(path)))

    def save(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))

    def clone(self) -> VectorIndex:
        """An independent copy to change; a mapped index shares its read-only mapping until then."""
        if self._mapped is not None:
            return VectorIndex(self._index, mapped=self._mapped)
        return VectorIndex(faiss.clone_index(self._index))

    @property
    def dimension(self) -> int:
        return int(self._index.d)

    @property
    def kind(self) -> VectorKind:
        return self._kind

    @property
    def layout(self) -> Layout:
        return Layout(self._kind, int(self._index.nlist) if self._kind is VectorKind.IVF else 0)

    def describe(self) -> str:
        """The kind and its parameters, e.g. ``ivf nlist=4096 nprobe=64``."""
        if self._kind is VectorKind.IVF:
            return f"ivf nlist={self._index.nlist} nprobe={self._index.nprobe}"
        if self._kind is VectorKind.HNSW:
            hnsw = _graph(self._index).hnsw
            m = hnsw.nb_neighbors(1)
            return f"hnsw M={m} efSearch={hnsw.efSearch} tombstones={self._tombstones}"
        return "flat"

    def __len__(self) -> int:
        """Vectors a search can return (tombstones excluded)."""
        return int(self._index.ntotal) - self._tombstones

    def ids(self) -> np.ndarray:
        """Every live id, in storage order."""
        if self._kind is VectorKind.IVF:
            lists = self._index.invlists
            parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                     for i in range(self._index.nlist) if lists.list_size(i)]
            return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        ids = faiss.vector_to_array(self._index.id_map)
        return ids[ids != TOMBSTONE] if self._tombstones else ids

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self._writable()
            with _all_cores():
                self._index.add_with_ids(vectors, ids)

    def remove(self, ids: list[int]) -> None:
        """Drop ``ids`` (absent ones are ignored); in an HNSW graph they become tombstones."""
        if not ids:
            return
        self._writable()
        if self._kind is not VectorKind.HNSW:
            self._index.remove_ids(np.asarray(ids, dtype=np.int64))
            return
        id_map = faiss.vector_to_array(self._index.id_map)
        gone = np.isin(id_map, np.asarray(ids, dtype=np.int64))
        if gone.any():
            id_map[gone] = TOMBSTONE
            faiss.copy_array_to_vector(id_map, self._index.id_map)
            self._index.construct_rev_map()
            self._tombstones = int(np.count_nonzero(id_map == TOMBSTONE))

    def updated(self, removed: list[int], ids: np.ndarray, vectors: np.ndarray,
                policy: VectorPolicy) -> VectorIndex:
        """This index without ``removed`` and with ``vectors`` under ``ids``, laid out as ``policy`` asks.

        Returns ``self`` changed in place, or a new index built from the kept vectors and the new
        ones when the layout must change: another kind (``auto`` growing past ``exact_max``, or shrinking
        below ``AUTO_SHRINK`` of it, or another
        forced kind), an IVF whose size now calls for more cells (or under half as many), an HNSW
        graph with more than ``MAX_TOMBSTONES`` of tombstones.
        """
        kept = self.ids()
        if removed:
            kept = kept[~np.isin(kept, np.asarray(removed, dtype=np.int64))]
        n = len(kept) + len(ids)
        target = policy.layout_for(n)
        if (policy.kind is VectorKind.AUTO and self.kind is VectorKind.IVF and target.kind is VectorKind.FLAT
                and n > AUTO_SHRINK * policy.exact_max):  # an index hovering at the threshold is not retrained each time
            target = Layout(VectorKind.IVF, ivf_lists(n))
        if not self._needs_rebuild(target, len(self) - len(kept)):
            self.remove(removed)
            self.add(ids, vectors)
            self._tune(policy)
            return self
        new_ids = np.concatenate([kept, np.asarray(ids, dtype=np.int64)])
        new_vectors = np.concatenate([self.vectors(kept),
                                      np.asarray(vectors, dtype=np.float32).reshape(-1, self.dimension)])
        return VectorIndex.build(new_ids, new_vectors, target, policy)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Ranked:
        """Top-k (chunk id, cosine) pairs, best first; only ids in ``allowed`` (ascending) when given."""
        n = len(self)
        if n == 0 or (allowed is not None and not len(allowed)):
            return []
        faiss.omp_set_num_threads(1)  # per thread in OpenMP: a server's worker threads would otherwise use every core
        query = query.reshape(1, -1)
        if allowed is not None:
            return self._search_within(query, k, allowed)
        if self._tombstones:
            # Parameters per call: IndexIDMap swaps in its own selector while it searches.
            params = faiss.SearchParametersHNSW(sel=self._live, efSearch=_graph(self._index).hnsw.efSearch)
            scores, ids = self._index.search(query, min(k, n), params=params)
        else:
            scores, ids = self._index.search(query, min(k, n))
        return [Hit(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def _search_within(self, query: np.ndarray, k: int, allowed: np.ndarray) -> Ranked:
        """A filtered search. Few allowed ids: scored exactly from their stored vectors. Many: the index's
        own search with an ``IDSelector``, reading proportionally more (IVF cells, HNSW candidates) so
        that about as many allowed vectors are seen as an unfiltered search sees."""
        allowed = np.ascontiguousarray(allowed, dtype=np.int64)
        if len(allowed) <= FILTER_EXACT_MAX:
            scores = self.vectors(allowed) @ query[0]
            top = np.argsort(-scores, kind="stable")[:k]
            return [Hit(int(allowed[i]), float(scores[i])) for i in top]
        share = len(allowed) / len(self)
        chosen = faiss.IDSelectorBatch(allowed)
        if self._kind is VectorKind.IVF:
            nprobe = min(int(self._index.nlist), math.ceil(self._index.nprobe / share))
            params = faiss.SearchParametersIVF(sel=chosen, nprobe=nprobe)
        elif self._kind is VectorKind.HNSW:
            ef = min(FILTER_MAX_EF, math.ceil(max(_graph(self._index).hnsw.efSearch, k) / share))
            live = faiss.IDSelectorAnd(self._live, chosen) if self._tombstones else chosen
            params = faiss.SearchParametersHNSW(sel=live, efSearch=ef)
        else:
            params = faiss.SearchParameters(sel=chosen)
        scores, ids = self._index.search(query, min(k, len(allowed)), params=params)
        return [Hit(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def vectors(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids``, in order."""
        if not len(ids):
            return np.empty((0, self.dimension), dtype=np.float32)
        return self._index.reconstruct_batch(np.asarray(ids, dtype=np.int64))

    # ---- internals --------------------------------------------------------------------------
    def _needs_rebuild(self, target: Layout, dropping: int) -> bool:
        current = self.layout
        if target.kind is not current.kind:
            return True
        if current.kind is VectorKind.IVF:
            return current.nlist < target.nlist or current.nlist > 2 * target.nlist
        if current.kind is VectorKind.HNSW:
            return self._tombstones + dropping > MAX_TOMBSTONES * max(int(self._index.ntotal), 1)
        return False

    def _tune(self, policy: VectorPolicy) -> None:
        """Search parameters a write may change without a rebuild (FAISS stores them in the file)."""
        if self._kind is VectorKind.IVF and self._index.nprobe != min(policy.ivf_nprobe, self._index.nlist):
            self._writable()
            self._index.nprobe = min(policy.ivf_nprobe, self._index.nlist)
        elif self._kind is VectorKind.HNSW and _graph(self._index).hnsw.efSearch != policy.hnsw_ef_search:
            self._writable()
            _graph(self._index).hnsw.efSearch = policy.hnsw_ef_search

    def _writable(self) -> None:
        """A mapped index is read-only (FAISS aborts on a change): read a private copy first."""
        if self._mapped is not None:
            self._index, self._mapped = faiss.read_index(str(self._mapped)), None


def _graph(index: faiss.Index) -> faiss.IndexHNSW:
    return faiss.downcast_index(index.index)


def _kind_of(index: faiss.Index) -> VectorKind:
    if isinstance(index, faiss.IndexIVF):
        return VectorKind.IVF
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else None
    if isinstance(inner, faiss.IndexHNSW):
        return VectorKind.HNSW
    if isinstance(inner, faiss.IndexFlat):
        return VectorKind.FLAT
    raise TypeError(f"unsupported FAISS index {type(index).__name__}: re-ingest with --rebuild")


def _tombstones(index: faiss.Index) -> int:
    return int(np.count_nonzero(faiss.vector_to_array(index.id_map) == TOMBSTONE))
