"""Which chunks belong to which article, with each article's source and date: what a filter selects by.

Built from the docstore the first time a filtered search needs it (a plain search never pays for it),
then held as arrays, so a filter over 10^6 chunks is a few vectorised comparisons, not a SQL scan.
"""

from __future__ import annotations

import numpy as np

from rag.filters import Filters, published_timestamp, source_key
from rag.store.docstore import DocStore


class Catalogue:
    """Articles (id, source, date) and the chunk ids of each, of one generation.

    Args:
        docstore: the generation's docstore (read once, here).
    """

    def __init__(self, docstore: DocStore):
        docs = docstore.catalogue_rows()
        self.doc_ids = [d for d, _, _ in docs]
        self._row = {d: i for i, d in enumerate(self.doc_ids)}
        self._names = [s for _, s, _ in docs]
        self._sources = np.array([source_key(s) for s in self._names], dtype=object)
        self._dates = [p for _, _, p in docs]
        stamps = [published_timestamp(p) for p in self._dates]
        self._published = np.array([np.nan if t is None else t for t in stamps], dtype=np.float64)
        dated = ~np.isnan(self._published)
        # What "this week" counts back from; asked for by every question that says week, month or year.
        self.newest: str | None = self._dates[int(np.nanargmax(self._published))] if dated.any() else None
        chunk_ids, chunk_docs = docstore.chunk_doc_rows()
        self._chunk_ids = np.asarray(chunk_ids, dtype=np.int64)
        self._chunk_doc = np.fromiter((self._row[d] for d in chunk_docs), dtype=np.int64, count=len(chunk_docs))

    def matching_documents(self, filters: Filters) -> np.ndarray:
        """Boolean mask over ``doc_ids``: the articles that pass ``filters``."""
        mask = np.ones(len(self.doc_ids), dtype=bool)
        if filters.doc_ids:
            wanted = np.zeros(len(self.doc_ids), dtype=bool)
            wanted[[self._row[d] for d in filters.doc_ids if d in self._row]] = True
            mask &= wanted
        if filters.sources:
            mask &= np.isin(self._sources, [source_key(s) for s in filters.sources])
        if filters.published_after is not None:
            mask &= self._published >= filters.published_after.timestamp()  # NaN (no date) compares False
        if filters.published_before is not None:
            mask &= self._published <= filters.published_before.timestamp()
        return mask

    def allowed_ids(self, filters: Filters) -> np.ndarray:
        """The chunk ids (ascending) of the articles that pass ``filters``."""
        return self._chunk_ids[self.matching_documents(filters)[self._chunk_doc]]

    def facets(self) -> dict:
        """What a filter can choose from: each source (as first written) with its article count, and the
        first and last publication dates (``None`` when no article is dated)."""
        counts: dict[str, list] = {}
        for name, key in zip(self._names, self._sources):
            if key:
                counts.setdefault(key, [name, 0])[1] += 1
        dated = ~np.isnan(self._published)
        first = last = None
        if dated.any():
            first = self._dates[int(np.nanargmin(self._published))]
            last = self._dates[int(np.nanargmax(self._published))]
        return {"sources": [{"source": name, "documents": n} for name, n in sorted(counts.values(), key=lambda v: -v[1])],
                "published": {"first": first, "last": last}, "undated": int((~dated).sum()),
                "documents": len(self.doc_ids)}
