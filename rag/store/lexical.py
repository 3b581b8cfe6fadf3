"""BM25 over chunks: a segmented index that an ingest extends instead of rebuilding.

Scores are bm25s's (``method="lucene"``, k1=1.5, b=0.75, its tokenizer with the PyStemmer english
stemmer and its "en" stopwords): ``idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))`` with
``idf = ln(1 + (N - df + 0.5) / (df + 0.5))``, each query token counted as often as it occurs, summed
in float32 as bm25s sums.
bm25s bakes N, avgdl and df into the scores it stores; here the postings keep raw term frequencies
and N, avgdl and df are taken at query time over the live chunks of every segment, so an ingest adds
one segment and tombstones instead of rebuilding, and a query scores what a rebuild would.

Layout of ``bm25/`` in a generation::

    segments.json       the segments in chunk-id order, their sizes and tombstone counts
    seg-000012/         ids.npy (chunk id of each row, ascending), lengths.npy (tokens per row),
                        terms_hi.npy, terms_lo.npy (the 128-bit blake2b key of each stem, sorted),
                        indptr.npy, rows.npy, tfs.npy (CSC postings: term -> rows, term frequencies),
                        deletes.npy (tombstoned rows, sorted; only when there are any)

A segment is written once and never again: the next generation hard-links its files (a copy
across devices) and writes a new ``deletes.npy`` beside the links when rows of it are removed.
Files are created exclusively (``xb``), so a write can never land in a file an old generation shares.
Every array is memory-mapped, so opening is O(segments) and the resident set is what queries touch.
An index written before segments (bm25s's own files and ``ids.npy``) is still read by
``Bm25sIndex``; the next ingest replaces it with a segmented one.

Cost: an ingest adding m chunks tokenizes m texts and writes one segment (O(m)); ``MergePolicy``
merges adjacent segments of one size tier, so a chunk is rewritten O(log_F N) times in its life and
the segment count stays O(F log_F N); a merge is linear in its postings. A query reads the postings
of its terms in every segment (a binary search of the keys each) and skips, exactly (MaxScore), the
postings of common terms that cannot change its top k.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import threading
from collections import Counter
from dataclasses import dataclass
from functools import cached_property, lru_cache
from itertools import chain, count
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from bm25s.tokenization import Tokenizer

from rag.errors import UserError
from rag.records import Hit, Ranked

K1, B = 1.5, 0.75  # bm25s's defaults
SEGMENTS = "segments.json"
FORMAT, VERSION = "rag-bm25-segments", 1
ARRAYS = ("ids", "lengths", "terms_hi", "terms_lo", "indptr", "rows", "tfs")
DELETES = "deletes"
BUILD_BATCH = 32_768  # chunks tokenized per pass: bounds the flat token arrays (~10^7 ints) at build
PRUNE_DF = 1_024  # a query term this common is skipped where it cannot change the top k (below: scored whole)
# A longer query (a sentence, a pasted paragraph) is ranked by its weightiest terms first, then its candidates get every
# term: its slowest part was adding the postings of 20-40 common terms (bench/scale.py at 10^6 chunks).
EXACT_TERMS = 8  # at 10^6 chunks: BM25 p99 349 → 50 ms, top 50 as exact (0.9995); SciFact nDCG@10 unchanged
RESCORE = 8  # candidates per hit asked for, rescored with every term
MERGE_BLOCK = 1 << 21  # postings moved per step of a merge: bounds its scratch arrays (~50 MB)


class LexicalIndexUnreadable(UserError, RuntimeError):
    """The ``bm25/`` folder is missing, damaged or from a newer rag."""


def chunk_text(title: str, text: str) -> str:
    """What BM25 indexes of a chunk: its document's title, then its text."""
    return f"{title}\n{text}"


def _tokenizer() -> Tokenizer:
    return Tokenizer(stemmer=Stemmer.Stemmer("english"), stopwords="en")


def term_keys(stems: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The (hi, lo) halves of each stem's 128-bit blake2b key, as two uint64 arrays.

    Segments find terms by these keys, so the vocabulary is two sorted memory-mapped arrays, opened in
    ~2 ms whatever their size, instead of a dictionary to parse at load (json: 0.15 s per 10^5 terms,
    measured on a busy 2-core box). Two stems sharing a key would be one term; at 10^7 stems the
    chance is ~10^-25.
    """
    digests = b"".join(hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=16).digest() for s in stems)
    pairs = np.frombuffer(digests, dtype="<u8").reshape(-1, 2)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


def _smallest_uint(largest: int) -> np.dtype:
    return np.dtype(next(t for t in (np.uint8, np.uint16, np.uint32) if largest <= np.iinfo(t).max))


@dataclass(frozen=True, eq=False)
class _Segment:
    """One immutable slice of the index: chunks ``ids`` (ascending) as rows, their postings and tombstones."""

    name: str
    ids: np.ndarray       # int64, row -> chunk id
    lengths: np.ndarray   # int32, row -> tokens (bm25s's document length)
    terms_hi: np.ndarray  # uint64, sorted together with terms_lo
    terms_lo: np.ndarray
    indptr: np.ndarray    # int64, term -> its postings' span
    rows: np.ndarray      # int32, ascending within a term
    tfs: np.ndarray       # uint8/16/32
    tokens: int           # sum of lengths
    deletes: np.ndarray | None = None  # int32 tombstoned rows, sorted
    deleted_tokens: int = 0
    source: Path | None = None  # the folder its arrays are mapped from; None: in memory, not yet written
    deletes_written: bool = False  # ``deletes`` is the one in ``source``

    @property
    def docs(self) -> int:
        return len(self.ids)

    @property
    def deleted(self) -> int:
        return 0 if self.deletes is None else len(self.deletes)

    @property
    def live_docs(self) -> int:
        return self.docs - self.deleted

    @cached_property
    def live(self) -> np.ndarray | None:
        """Row -> not tombstoned, or None when no row is."""
        if self.deletes is None:
            return None
        mask = np.ones(self.docs, dtype=bool)
        mask[self.deletes] = False
        return mask

    def span(self, hi: np.uint64, lo: np.uint64) -> tuple[int, int] | None:
        """The postings span of the term with key (hi, lo), or None when the segment lacks it."""
        i = int(np.searchsorted(self.terms_hi, hi))
        while i < len(self.terms_hi) and self.terms_hi[i] == hi:
            if self.terms_lo[i] == lo:
                return int(self.indptr[i]), int(self.indptr[i + 1])
            i += 1
        return None

    def dead_in(self, start: int, end: int) -> int:
        """Tombstoned rows among the postings ``[start, end)``."""
        if self.deletes is None:
            return 0
        rows = self.rows[start:end]
        if len(self.deletes) * 8 < len(rows):  # few tombstones: look each up
            at = np.minimum(np.searchsorted(rows, self.deletes), len(rows) - 1)
            return int(np.count_nonzero(rows[at] == self.deletes))
        return len(rows) - int(np.count_nonzero(self.live[rows]))

    def with_deletes(self, rows: np.ndarray) -> _Segment:
        """This segment with ``rows`` (sorted, live) tombstoned too."""
        if len(rows) == 0:
            return self
        deletes = rows if self.deletes is None else np.union1d(self.deletes, rows)
        if len(deletes) != self.deleted + len(rows):
            raise ValueError(f"chunk ids removed twice from BM25 segment {self.name}")
        return dataclasses.replace(self, deletes=deletes.astype(np.int32), deletes_written=False,
                                   deleted_tokens=self.deleted_tokens + int(self.lengths[rows].sum()))

    # ---- files ------------------------------------------------------------------------------
    def save(self, folder: Path) -> dict:
        """Write (or hard-link, when it came from disk) this segment into ``folder``; its manifest entry."""
        target = folder / self.name
        target.mkdir()
        for name in ARRAYS:
            if self.source is not None:
                _link(self.source / f"{name}.npy", target / f"{name}.npy")
            else:
                _write_array(target / f"{name}.npy", getattr(self, name))
        if self.deletes is not None:
            if self.deletes_written and self.source is not None:
                _link(self.source / f"{DELETES}.npy", target / f"{DELETES}.npy")
            else:
                _write_array(target / f"{DELETES}.npy", self.deletes)
        return {"name": self.name, "docs": self.docs, "tokens": self.tokens,
                "deleted": self.deleted, "deleted_tokens": self.deleted_tokens}

    @classmethod
    def load(cls, folder: Path, entry: dict) -> _Segment:
        source = folder / entry["name"]
        arrays = {name: np.load(source / f"{name}.npy", mmap_mode="r").view(np.ndarray) for name in ARRAYS}
        deletes = np.load(source / f"{DELETES}.npy") if entry["deleted"] else None
        segment = cls(entry["name"], **arrays, tokens=entry["tokens"], deletes=deletes,
                      deleted_tokens=entry["deleted_tokens"], source=source, deletes_written=True)
        if segment.docs != entry["docs"] or segment.deleted != entry["deleted"]:
            raise LexicalIndexUnreadable(f"BM25 segment {source} does not match {SEGMENTS}: "
                                         "re-ingest (rag ingest ... --rebuild)")
        return segment


def _write_array(path: Path, array: np.ndarray) -> None:
    with open(path, "xb") as fh:  # never into an existing file: it may be a link into a published generation
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def _link(source: Path, target: Path) -> None:
    """Carry an immutable file into a new generation: a hard link, or a copy where links cannot go."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copyfile(source, target)


# ---- building and merging segments -----------------------------------------------------------

def _build_segment(name: str, ids: np.ndarray, texts: list[str], batch: int = BUILD_BATCH) -> _Segment:
    """One segment of ``texts`` (row i is chunk ``ids[i]``), tokenized as bm25s tokenizes a corpus."""
    tokenizer = _tokenizer()
    keys_hi, keys_lo = np.empty(0, np.uint64), np.empty(0, np.uint64)
    parts = []
    for start in range(0, len(texts), batch):
        lists = tokenizer.tokenize(texts[start:start + batch], update_vocab=True, return_as="ids", show_progress=False)
        new = sorted((sid, stem) for stem, sid in tokenizer.stem_to_sid.items() if sid >= len(keys_hi))
        assert [sid for sid, _ in new] == list(range(len(keys_hi), len(keys_hi) + len(new)))  # bm25s numbers stems 0..V-1
        hi, lo = term_keys([stem for _, stem in new])
        keys_hi, keys_lo = np.concatenate([keys_hi, hi]), np.concatenate([keys_lo, lo])
        parts.append(_batch_segment(name, ids[start:start + batch], lists, keys_hi, keys_lo))
    return parts[0] if len(parts) == 1 else _merge(name, parts)


def _batch_segment(name: str, ids: np.ndarray, lists: list[list[int]], keys_hi: np.ndarray,
                   keys_lo: np.ndarray) -> _Segment:
    """A segment from token ids (``keys_*[sid]`` is stem sid's key): one sort of (term, row) pairs."""
    n = len(lists)
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=n)
    flat = np.fromiter(chain.from_iterable(lists), dtype=np.int64, count=int(lengths.sum()))
    present = np.flatnonzero(np.bincount(flat, minlength=len(keys_hi)))
    vocab = present[np.lexsort((keys_lo[present], keys_hi[present]))]
    rank = np.empty(len(keys_hi), dtype=np.int64)
    rank[vocab] = np.arange(len(vocab))
    pairs = rank[flat] * n + np.repeat(np.arange(n, dtype=np.int64), lengths)
    pairs.sort()
    starts = np.flatnonzero(np.diff(pairs, prepend=-1))
    tfs = np.diff(np.append(starts, len(pairs)))
    terms, rows = np.divmod(pairs[starts], n)
    indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
    np.cumsum(np.bincount(terms, minlength=len(vocab)), out=indptr[1:])
    return _Segment(name, np.asarray(ids, dtype=np.int64), lengths.astype(np.int32), keys_hi[vocab], keys_lo[vocab],
                    indptr, rows.astype(np.int32), tfs.astype(_smallest_uint(int(tfs.max()))), int(lengths.sum()))


def _terms_of(segment: _Segment, start: int, end: int) -> np.ndarray:
    """The term of each posting in ``[start, end)``."""
    return np.searchsorted(segment.indptr, np.arange(start, end), side="right") - 1


def _live_counts(segment: _Segment, block: int) -> np.ndarray:
    """Live postings per term."""
    if segment.live is None:
        return np.diff(segment.indptr)
    counts = np.zeros(len(segment.terms_hi), dtype=np.int64)
    for start in range(0, len(segment.rows), block):
        end = min(start + block, len(segment.rows))
        alive = segment.live[segment.rows[start:end]]
        counts += np.bincount(_terms_of(segment, start, end)[alive], minlength=len(counts))
    return counts


def _merge(name: str, parts: list[_Segment], block: int = MERGE_BLOCK) -> _Segment | None:
    """One segment of the live rows of adjacent ``parts``, in order; None when none is live.

    Linear in the postings: every part's terms are sorted by key, so each maps monotonically into the
    union, and its postings are scattered term by term into their place; no global sort.
    """
    if sum(p.live_docs for p in parts) == 0:
        return None
    hi = np.concatenate([p.terms_hi for p in parts])
    lo = np.concatenate([p.terms_lo for p in parts])
    order = np.lexsort((lo, hi))
    hi, lo = hi[order], lo[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    code = np.empty(len(order), dtype=np.int64)
    code[order] = np.cumsum(first) - 1
    bounds = np.cumsum([0] + [len(p.terms_hi) for p in parts])
    maps = [code[bounds[i]:bounds[i + 1]] for i in range(len(parts))]
    counts = np.zeros(int(first.sum()), dtype=np.int64)
    for part, term_map in zip(parts, maps):
        counts[term_map] += _live_counts(part, block)
    kept = counts > 0  # a term all of whose chunks were removed goes
    renumber = np.cumsum(kept) - 1
    indptr = np.zeros(int(kept.sum()) + 1, dtype=np.int64)
    np.cumsum(counts[kept], out=indptr[1:])
    rows = np.empty(int(indptr[-1]), dtype=np.int32)
    tfs = np.empty(int(indptr[-1]), dtype=np.result_type(*[p.tfs.dtype for p in parts]))
    cursor = indptr[:-1].copy()
    offset = 0
    for part, term_map in zip(parts, maps):
        new_row = None if part.live is None else np.cumsum(part.live) - 1
        for start in range(0, len(part.rows), block):
            end = min(start + block, len(part.rows))
            r, f, t = part.rows[start:end], part.tfs[start:end], _terms_of(part, start, end)
            if new_row is not None:
                alive = part.live[r]
                r, f, t = new_row[r[alive]], f[alive], t[alive]
            g = renumber[term_map[t]]
            run_starts = np.flatnonzero(np.diff(t, prepend=-1))
            run_lengths = np.diff(np.append(run_starts, len(t)))
            place = cursor[g] + np.arange(len(t)) - np.repeat(run_starts, run_lengths)
            rows[place], tfs[place] = r + offset, f
            cursor[g[run_starts]] += run_lengths
        offset += part.live_docs
    live = [slice(None) if p.live is None else p.live for p in parts]
    return _Segment(name, np.concatenate([p.ids[m] for p, m in zip(parts, live)]),
                    np.concatenate([p.lengths[m] for p, m in zip(parts, live)]),
                    hi[first][kept], lo[first][kept], indptr, rows, tfs,
                    sum(p.tokens - p.deleted_tokens for p in parts))


@dataclass(frozen=True)
class MergePolicy:
    """When adjacent segments merge (log-structured, like Lucene's LogMergePolicy), checked after each ingest.

    In order: a segment whose tombstoned share reaches ``purge_fraction`` is rewritten without them
    (so at most that share of all rows is dead); ``merge_factor`` adjacent segments of one size tier
    merge into one of the next tier; beyond ``max_segments`` the adjacent pair smallest together merges.
    Tier of a segment of d live chunks: 0 below ``floor_docs``, else 1 + floor(log_F(d / floor_docs)).
    At the defaults and 10^6 chunks: about 7 tiers, at most ~21 segments, a chunk rewritten ~6 times.
    """

    merge_factor: int = 4
    floor_docs: int = 1_000
    purge_fraction: float = 0.25
    max_segments: int = 32

    def tier(self, docs: int) -> int:
        level, bound = 0, self.floor_docs
        while docs >= bound:
            level, bound = level + 1, bound * self.merge_factor
        return level

    def next_merge(self, segments: list[_Segment]) -> tuple[int, int] | None:
        """The span ``[start, end)`` of segments to merge next, or None when none should."""
        for i, s in enumerate(segments):
            if s.deleted and s.deleted >= self.purge_fraction * s.docs:
                return i, i + 1
        tiers = [self.tier(s.live_docs) for s in segments]
        f = self.merge_factor
        for i in range(len(segments) - f + 1):
            if len(set(tiers[i:i + f])) == 1:
                return i, i + f
        if len(segments) > self.max_segments:
            sizes = [a.live_docs + b.live_docs for a, b in zip(segments, segments[1:])]
            i = sizes.index(min(sizes))
            return i, i + 2
        return None

    def apply(self, segments: list[_Segment], names: count) -> list[_Segment]:
        """``segments`` after every merge due; merged segments are named from ``names``."""
        segments = list(segments)
        while (span := self.next_merge(segments)) is not None:
            start, end = span
            merged = _merge(f"seg-{next(names):06d}", segments[start:end])
            segments[start:end] = [] if merged is None else [merged]
        return segments


# ---- the index ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Matches:
    """Where a term's postings are: (segment, start, end) per segment with live ones; df counts the live."""

    df: int
    parts: list[tuple[int, int, int]]


class LexicalIndex:
    """BM25 scores for chunk ids over segments; what bm25s would score over the live chunks.

    Example:
        >>> index = LexicalIndex.build([0, 1], ["Rice\\nFloods hit the rice crop.", "Tea\\nTea prices rose."])
        >>> index = index.updated([2], ["Rice\\nThe rice harvest recovered."], removed=[0])
        >>> index.search("rice harvest", k=5)
        [Hit(id=2, score=0.673...)]
    """

    incremental = True  # ``updated`` works (an old-format ``Bm25sIndex`` must be rebuilt)

    def __init__(self, segments: list[_Segment], next_segment: int = 1):
        self.segments, self.next_segment = segments, next_segment
        self.docs = sum(s.live_docs for s in segments)
        tokens = sum(s.tokens - s.deleted_tokens for s in segments)
        self.avgdl = tokens / self.docs if self.docs else 0.0
        self._offsets = np.cumsum([0] + [s.docs for s in segments])
        self._tokenizer = _tokenizer()
        self._stopwords = frozenset(self._tokenizer.stopwords)
        self._stem_lock = threading.Lock()  # a PyStemmer stemmer is not thread-safe; the server searches from threads
        self._df = lru_cache(maxsize=65_536)(self._live_df)
        self._pool: list[np.ndarray] = []  # score arrays for searches, one per search running at once
        self._pool_lock = threading.Lock()

    # ---- writing ------------------------------------------------------------------------------
    @classmethod
    def build(cls, ids: list[int], texts: list[str]) -> LexicalIndex:
        """An index of ``texts`` (chunk ``ids[i]`` is ``texts[i]``), from scratch."""
        return cls([]).updated(ids, texts, removed=[])

    def updated(self, ids: list[int], texts: list[str], removed: list[int],
                policy: MergePolicy = MergePolicy()) -> LexicalIndex:
        """This index without the chunks ``removed`` and with ``texts`` as chunks ``ids``; self is unchanged.

        Args:
            ids: the new chunks' ids, ascending and above every id already indexed.
            texts: their BM25 texts (``chunk_text``).
            removed: ids of indexed chunks that go (tombstoned; purged when their segment is merged).
            policy: when segments merge.
        """
        ids_array = np.asarray(ids, dtype=np.int64)
        if len(ids_array) != len(texts):
            raise ValueError(f"{len(ids_array)} ids for {len(texts)} texts")
        last = int(self.segments[-1].ids[-1]) if self.segments else -1
        if len(ids_array) and (ids_array[0] <= last or np.any(np.diff(ids_array) <= 0)):
            raise ValueError(f"new chunk ids must be ascending and above {last}, the highest indexed")
        segments = self._tombstoned(np.unique(np.asarray(removed, dtype=np.int64)))
        names = count(self.next_segment)
        if len(ids_array):
            segments.append(_build_segment(f"seg-{next(names):06d}", ids_array, texts))
        segments = policy.apply(segments, names)
        return LexicalIndex(segments, next(names))

    def _tombstoned(self, removed: np.ndarray) -> list[_Segment]:
        """The segments with the rows of ``removed`` (sorted chunk ids) tombstoned: O(removed), not O(rows)."""
        segments, found = [], 0
        for segment in self.segments:
            wanted = removed[np.searchsorted(removed, segment.ids[0]):np.searchsorted(removed, segment.ids[-1], "right")]
            rows = np.searchsorted(segment.ids, wanted)
            rows = rows[segment.ids[np.minimum(rows, segment.docs - 1)] == wanted]
            if segment.deletes is not None:
                rows = rows[~np.isin(rows, segment.deletes, assume_unique=True)]
            found += len(rows)
            segments.append(segment.with_deletes(rows))
        if found != len(removed):
            raise ValueError(f"{len(removed) - found} of the {len(removed)} chunk ids to remove are not in the BM25 "
                             "index: the index is damaged, re-ingest it (rag ingest ... --rebuild)")
        return segments

    def save(self, folder: Path) -> None:
        """Write the index into ``folder`` (new): segments that came from disk are hard-linked, not rewritten."""
        folder.mkdir(parents=True, exist_ok=True)
        entries = [segment.save(folder) for segment in self.segments]
        manifest = {"format": FORMAT, "version": VERSION, "next_segment": self.next_segment,
                    "tokenizer": {"stemmer": "english", "stopwords": "en", "pattern": r"(?u)\b\w\w+\b"},
                    "scoring": {"method": "lucene", "k1": K1, "b": B}, "segments": entries}
        with open(folder / SEGMENTS, "xb") as fh:
            fh.write(json.dumps(manifest, indent=1).encode("utf-8"))

    # ---- reading ------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: Path) -> LexicalIndex | Bm25sIndex:
        """Open ``folder`` memory-mapped; a ``bm25/`` from before segments opens as a ``Bm25sIndex``."""
        if not (folder / SEGMENTS).is_file():
            if (folder / "ids.npy").is_file() and (folder / "params.index.json").is_file():
                return Bm25sIndex.load(folder)
            raise LexicalIndexUnreadable(f"no BM25 index at {folder}: re-ingest (rag ingest ... --rebuild)")
        manifest = json.loads((folder / SEGMENTS).read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise LexicalIndexUnreadable(
                f"BM25 index at {folder} is {manifest.get('format')} version {manifest.get('version')}, this rag reads "
                f"{FORMAT} version {VERSION}: re-ingest (rag ingest ... --rebuild)")
        index = cls([_Segment.load(folder, e) for e in manifest["segments"]], manifest["next_segment"])
        index._norms  # noqa: B018  (computed now, so that the first query does not pay for it)
        return index

    @cached_property
    def _norms(self) -> np.ndarray:
        """Global row -> k1 * (1 - b + b * dl / avgdl): the length part of every score (float32, 4 MB per 10^6)."""
        avgdl = self.avgdl or 1.0  # no live chunk: nothing is scored
        parts = [(K1 * (1 - B + B * s.lengths / avgdl)).astype(np.float32) for s in self.segments]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.float32)

    def stems(self, text: str) -> list[str]:
        """bm25s's tokens of ``text``: lowercased words of its pattern, less stopwords, stemmed (what a
        chunk is indexed by and a query searches with)."""
        words = self._tokenizer.splitter(text.lower())
        with self._stem_lock:
            return [self._tokenizer.stemmer(w) for w in words if w not in self._stopwords]

    def _matches(self, stems: list[str]) -> list[_Matches]:
        """Where each stem's postings are, with one binary search per segment for all of them."""
        his, los = term_keys(stems)
        found: list[list[tuple[int, int, int]]] = [[] for _ in stems]
        dfs = [0] * len(stems)
        for i, segment in enumerate(self.segments):
            at = np.minimum(np.searchsorted(segment.terms_hi, his), len(segment.terms_hi) - 1)
            same_hi = segment.terms_hi[at] == his
            exact = same_hi & (segment.terms_lo[at] == los)
            starts, ends = segment.indptr[at].tolist(), segment.indptr[at + 1].tolist()
            for j in np.flatnonzero(same_hi).tolist():
                # not exact: another stem sharing the first 64 bits sorts first (~never), so search on
                span = (starts[j], ends[j]) if exact[j] else segment.span(his[j], los[j])
                if span is not None and (live := span[1] - span[0] - segment.dead_in(*span)):
                    found[j].append((i, *span))
                    dfs[j] += live
        return [_Matches(df, parts) for df, parts in zip(dfs, found)]

    def _live_df(self, stem: str) -> int:
        return self._matches([stem])[0].df

    def _idf(self, df: int) -> float:
        n = max(self.docs, 1)
        return float(np.log(1 + (n - df + 0.5) / (df + 0.5)))

    def idf(self, stem: str) -> float:
        """BM25's idf of a stemmed term over the live chunks; a term they lack gets the highest idf."""
        return self._idf(self._df(stem))

    def _query_terms(self, query: str) -> list[tuple[float, _Matches]]:
        """(occurrences * idf, postings) of each indexed query term, largest weight first."""
        weights = Counter(self.stems(query))
        matches = {stem: m for stem, m in zip(weights, self._matches(list(weights))) if m.df > 0}
        if not matches:  # as bm25s: a query with no indexed term is the empty text, which matches empty chunks
            weights, matches = Counter([""]), {"": self._matches([""])[0]}
        terms = [(weights[stem] * self._idf(m.df), m) for stem, m in matches.items() if m.df > 0]
        return sorted(terms, key=lambda t: -t[0])

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> Ranked:
        """Top-k (chunk id, BM25 score) pairs with a positive score, best first; ties by ascending id.

        Exact, with MaxScore pruning: a term adds less than its weight to a score (tf / (tf + K) < 1),
        so once the terms left (the common ones, last) cannot lift a row to the k-th best score so far,
        they are only looked up at the rows still in reach instead of scored over all their postings.
        A query of more than ``EXACT_TERMS`` indexed terms is ranked by its weightiest ``EXACT_TERMS``,
        and the best ``RESCORE`` · k of those are scored with every term: the scores returned are exact,
        but a chunk that only the query's lightest terms would lift can be missed.
        With ``allowed`` (chunk ids, ascending) only those chunks are scored; N, avgdl and idf stay the
        whole corpus's, so a filtered chunk scores what it scores unfiltered.
        """
        if k <= 0 or self.docs == 0:
            return []
        terms = self._query_terms(query)
        if allowed is not None:
            return self._search_rows(terms, self._rows_of(allowed), k)
        if len(terms) > EXACT_TERMS:
            pool = self._search_terms(terms[:EXACT_TERMS], k * RESCORE)
            return self._search_rows(terms, self._rows_of(np.sort([hit.id for hit in pool])), k)
        return self._search_terms(terms, k)

    def _search_terms(self, terms: list[tuple[float, _Matches]], k: int) -> Ranked:
        """The exact top k for ``terms`` (weightiest first) over every live chunk."""
        weights = [w for w, _ in terms]
        reach = np.cumsum(weights[::-1])[::-1] * (1 + 1e-5)  # the most terms j.. add (float32 rounding: < 1e-6)
        left = np.cumsum([m.df for _, m in terms][::-1])[::-1]  # postings of terms j..
        scored: list[np.ndarray] = []  # the rows each term's postings touched (a row once per term)
        totals = self._borrow()
        try:
            for j, (weight, matches) in enumerate(terms):
                if (j and matches.df >= PRUNE_DF and left[j] > 4 * sum(map(len, scored))
                        and reach[j] < sum(weights[:j])):  # worth a look, and a row may be out of reach
                    near = self._in_reach(totals, scored, k * j, reach[j])
                    if near is not None:
                        for weight_left, matches_left in terms[j:]:
                            probe = len(near) * 8 < matches_left.df
                            self._add(totals, weight_left, matches_left, scored, near if probe else None)
                        return self._top(near, totals[near], k)
                self._add(totals, weight, matches, scored)
            if not scored:
                return []
            rows = np.concatenate(scored)
            best = self._best_distinct(rows, totals[rows], k * len(terms))
            return self._top(best, totals[best], k)
        finally:
            self._give_back(totals, scored)

    def _rows_of(self, ids: np.ndarray) -> np.ndarray:
        """The live global rows (ascending) of chunk ids ``ids`` (ascending); unknown ids are skipped."""
        ids = np.asarray(ids, dtype=np.int64)
        found = []
        for segment, offset in zip(self.segments, self._offsets):
            if not segment.docs:
                continue
            lo, hi = np.searchsorted(ids, [segment.ids[0], segment.ids[-1] + 1])
            wanted = ids[lo:hi]
            at = np.minimum(np.searchsorted(segment.ids, wanted), segment.docs - 1)
            rows = at[segment.ids[at] == wanted]
            if segment.live is not None:
                rows = rows[segment.live[rows]]
            found.append(rows + offset)
        return np.concatenate(found) if found else np.empty(0, dtype=np.int64)

    def _search_rows(self, terms: list[tuple[float, _Matches]], rows: np.ndarray, k: int) -> Ranked:
        """The top k of ``rows`` alone: each term is looked up at them, or scored over its postings when
        those are fewer (then only ``rows`` are read back)."""
        if not len(rows):
            return []
        scored: list[np.ndarray] = []
        totals = self._borrow()
        try:
            for weight, matches in terms:
                self._add(totals, weight, matches, scored, rows if len(rows) * 8 < matches.df else None)
            return self._top(rows, totals[rows], k)
        finally:
            totals[rows] = 0.0
            self._give_back(totals, scored)

    def _borrow(self) -> np.ndarray:
        """A zeroed score array by global row. Reused: a fresh one per query costs more than the query on
        some machines (page faults on every page it touches; 0.7 of 0.9 ms at 40k chunks)."""
        with self._pool_lock:
            return self._pool.pop() if self._pool else np.zeros(int(self._offsets[-1]), dtype=np.float32)

    def _give_back(self, totals: np.ndarray, scored: list[np.ndarray]) -> None:
        for rows in scored:
            totals[rows] = 0.0
        with self._pool_lock:
            self._pool.append(totals)

    def _add(self, totals: np.ndarray, weight: float, matches: _Matches, scored: list[np.ndarray],
             only: np.ndarray | None = None) -> None:
        """Add a term's scores into ``totals``: at every live posting, or only at the rows ``only`` (sorted,
        live, already in ``scored``); rows newly touched go into ``scored``."""
        rows_of, tfs_of = [], []
        for i, start, end in matches.parts:
            segment, offset = self.segments[i], self._offsets[i]
            rows, tf = segment.rows[start:end], segment.tfs[start:end]
            if only is not None:
                lo, hi = np.searchsorted(only, self._offsets[i:i + 2])
                wanted = only[lo:hi] - offset
                at = np.minimum(np.searchsorted(rows, wanted), len(rows) - 1)
                found = rows[at] == wanted
                rows, tf = wanted[found], tf[at[found]]
            elif segment.live is not None:
                alive = segment.live[rows]
                rows, tf = rows[alive], tf[alive]
            rows_of.append(rows + offset)
            tfs_of.append(tf)
        touched = np.concatenate(rows_of)
        if only is None:
            scored.append(touched)
        tf = np.concatenate(tfs_of).astype(np.float32)  # float32 as bm25s: 1.5x float64's speed (3.4 vs 5.3 ms / 0.3 M)
        totals[touched] += weight * tf / (tf + self._norms[touched])  # rows are distinct: no add is lost

    @staticmethod
    def _best_distinct(rows: np.ndarray, values: np.ndarray, entries: int) -> np.ndarray:
        """The distinct rows among the ``entries`` best of (rows, values): when no row occurs more than
        entries / k times, they hold the k best distinct rows (ties included)."""
        if entries < len(values):
            kth = np.partition(values, len(values) - entries)[len(values) - entries]
            rows = rows[values >= kth]
        return np.unique(rows)

    @staticmethod
    def _in_reach(totals: np.ndarray, scored: list[np.ndarray], entries: int, reach: float) -> np.ndarray | None:
        """The rows that can still reach the top k when the terms left add at most ``reach``, or None when
        any row still can. ``entries``: k * terms scored (a row occurs once per term, so the best k * terms
        entries of ``scored`` hold k distinct rows)."""
        rows = np.concatenate(scored)
        values = totals[rows]
        if len(values) < entries:
            return None
        kth = np.partition(values, len(values) - entries)[len(values) - entries]  # <= the k-th best row so far
        if reach >= kth:
            return None
        return np.unique(rows[values + reach >= kth])

    def _top(self, rows: np.ndarray, values: np.ndarray, k: int) -> Ranked:
        """The k best of ``rows`` (distinct, ascending, so ascending chunk ids) by ``values``; ties by id."""
        if len(rows) > k:
            kth = np.partition(values, len(values) - k)[len(values) - k]
            keep = values >= kth
            rows, values = rows[keep], values[keep]
        order = np.argsort(-values, kind="stable")[:k]
        segment = np.searchsorted(self._offsets, rows[order], side="right") - 1
        return [Hit(int(self.segments[s].ids[row - self._offsets[s]]), float(score))
                for s, row, score in zip(segment, rows[order], values[order]) if score > 0]


class Bm25sIndex:
    """A ``bm25/`` written before segments (bm25s's files, row ``i`` is chunk ``ids[i]``): read-only.

    Kept so that existing indexes open; ``incremental`` is False, so the next ingest builds a
    segmented ``LexicalIndex`` from every chunk once.
    """

    incremental = False

    def __init__(self, bm25: bm25s.BM25, tokenizer: Tokenizer, ids: np.ndarray):
        self.bm25, self.tokenizer, self.ids = bm25, tokenizer, ids
        self._df: dict[str, int] | None = None

    @classmethod
    def load(cls, folder: Path) -> Bm25sIndex:
        tokenizer = _tokenizer()
        tokenizer.load_vocab(str(folder))
        return cls(bm25s.BM25.load(str(folder), mmap=False), tokenizer, np.load(folder / "ids.npy"))

    def idf(self, stem: str) -> float:
        """BM25's idf of a stemmed term over chunks; a term the corpus lacks gets the highest idf."""
        if self._df is None:
            indptr = np.asarray(self.bm25.scores["indptr"])
            columns = self.bm25.vocab_dict
            self._df = {}
            for term, sid in self.tokenizer.stem_to_sid.items():
                col = columns.get(str(sid), columns.get(sid))
                if col is not None and col + 1 < len(indptr):
                    self._df[term] = int(indptr[col + 1] - indptr[col])
        n = max(len(self.ids), 1)
        df = self._df.get(stem, 0)
        return float(np.log(1 + (n - df + 0.5) / (df + 0.5)))

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> Ranked:
        """Top-k (chunk id, BM25 score) pairs with a positive score, best first; only ``allowed`` ids when given."""
        if len(self.ids) == 0 or k <= 0:
            return []
        tokens = self.tokenizer.tokenize([query], update_vocab=False, return_as="ids", show_progress=False)
        if not tokens or not tokens[0]:
            return []
        scores = self.bm25.get_scores(tokens[0])
        if allowed is not None:
            scores = np.where(np.isin(self.ids, allowed), scores, 0.0)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [Hit(int(self.ids[i]), float(scores[i])) for i in top if scores[i] > 0]
