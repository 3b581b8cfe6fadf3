"""Near-duplicate articles (the same wire story filed again, re-headlined, trimmed): found at ingest by
MinHash over word shingles with LSH (datasketch), collapsed at answer time.

Each cluster keeps one canonical article, the earliest published (then the smallest doc_id); the others
are linked to it. Every article stays indexed (a filter on the duplicate's source still finds it), but
retrieval lets one article per cluster contribute passages, so an answer never cites one story twice.

Signatures of the articles already indexed are kept in the generation (``dedup/``) and reused, so an
incremental ingest hashes only what changed. ``THRESHOLD`` was measured on BBC stories and perturbed
copies of them (``python bench/dedup.py``; README "Benchmarks").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.filters import published_timestamp
from rag.records import Document
from rag.store.index import DEDUP_DIR

NUM_PERM = 128
SCHEME = "affine32"  # datasketch 2's permutation scheme (32-bit hash values); recorded, so a change recomputes
SHINGLE = 3  # words per shingle
THRESHOLD = 0.5  # estimated Jaccard of shingle sets at which two articles are one story (bench/dedup.py)
OVERLAP = 0.8  # ... or the share of the shorter one's shingles found in the longer (a story cut short)
CANDIDATE = 0.3  # LSH proposes pairs from this estimated Jaccard on; THRESHOLD or OVERLAP decides
SEED = 1
_WORD = re.compile(r"\w+")


def shingles(text: str, size: int = SHINGLE) -> set[bytes]:
    """The article's word ``size``-grams, lowercased (a text shorter than ``size`` words is one shingle)."""
    words = _WORD.findall(text.lower())
    if len(words) <= size:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i:i + size]).encode() for i in range(len(words) - size + 1)}


def signatures(texts: list[str]) -> np.ndarray:
    """MinHash signatures (uint32, ``NUM_PERM`` per text), one row per text."""
    from datasketch import MinHash

    out = np.empty((len(texts), NUM_PERM), dtype=np.uint32)
    for i, text in enumerate(texts):
        m = MinHash(num_perm=NUM_PERM, seed=SEED, scheme=SCHEME)
        m.update_batch(list(shingles(text)) or [b""])
        out[i] = m.hashvalues
    return out


@dataclass(frozen=True)
class Signatures:
    """The signatures of a generation's articles, by doc_id, with what picks a cluster's canonical one."""

    doc_ids: list[str]
    values: np.ndarray  # uint32 [len(doc_ids), NUM_PERM]
    published: list[str]
    sizes: np.ndarray  # shingles per article (what turns a Jaccard estimate into an overlap)

    @classmethod
    def load(cls, generation: Path) -> Signatures | None:
        folder = generation / DEDUP_DIR
        if not (folder / "signatures.npy").is_file():
            return None
        meta = json.loads((folder / "documents.json").read_text(encoding="utf-8"))
        values = np.load(folder / "signatures.npy")
        if values.shape != (len(meta["doc_ids"]), NUM_PERM) or meta.get("scheme") != SCHEME:
            return None  # another signature layout: recomputed
        return cls(meta["doc_ids"], values, meta["published"], np.asarray(meta["sizes"], dtype=np.int64))


def update(previous: Signatures | None, removed: set[str], documents: list[Document]) -> Signatures:
    """``previous`` without ``removed`` (and without the documents being replaced), plus ``documents``."""
    replaced = removed | {d.doc_id for d in documents}
    keep = [i for i, d in enumerate(previous.doc_ids) if d not in replaced] if previous else []
    old_ids = [previous.doc_ids[i] for i in keep] if previous else []
    old_published = [previous.published[i] for i in keep] if previous else []
    old = previous.values[keep] if previous else np.empty((0, NUM_PERM), dtype=np.uint32)
    old_sizes = previous.sizes[keep] if previous else np.empty(0, dtype=np.int64)
    texts = [f"{d.title}\n{d.text}" for d in documents]
    sizes = np.asarray([len(shingles(t)) for t in texts], dtype=np.int64)
    return Signatures(old_ids + [d.doc_id for d in documents], np.concatenate([old, signatures(texts)]),
                      old_published + [d.published for d in documents], np.concatenate([old_sizes, sizes]))


def same_story(sigs: Signatures, i: int, j: int, threshold: float = THRESHOLD, overlap: float = OVERLAP) -> bool:
    """Whether articles ``i`` and ``j`` are one story: estimated Jaccard ≥ ``threshold``, or the shorter's
    shingles mostly (``overlap``) in the longer, from |A∩B| = J·(|A|+|B|)/(1+J)."""
    jaccard = float(np.mean(sigs.values[i] == sigs.values[j]))
    if jaccard >= threshold:
        return True
    a, b = int(sigs.sizes[i]), int(sigs.sizes[j])
    return bool(min(a, b)) and jaccard * (a + b) / (1 + jaccard) / min(a, b) >= overlap


def clusters(sigs: Signatures, threshold: float = THRESHOLD, overlap: float = OVERLAP) -> dict[str, str]:
    """Each article that duplicates another → its cluster's canonical doc_id (canonical ones are absent).

    LSH proposes candidate pairs (estimated Jaccard from about ``CANDIDATE``); ``same_story`` decides;
    clusters are the connected components of the pairs kept.
    """
    from datasketch import LeanMinHash, MinHashLSH

    n = len(sigs.doc_ids)
    if n < 2:
        return {}
    lsh = MinHashLSH(threshold=min(CANDIDATE, threshold), num_perm=NUM_PERM)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    hashes = [LeanMinHash(seed=SEED, hashvalues=row, scheme=SCHEME) for row in sigs.values]
    for i, h in enumerate(hashes):
        for j in lsh.query(h):
            if same_story(sigs, i, j, threshold, overlap):
                parent[root(i)] = root(j)
        lsh.insert(i, h)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(root(i), []).append(i)
    linked = {}
    for group in members.values():
        if len(group) < 2:
            continue
        stamps = {i: published_timestamp(sigs.published[i]) for i in group}
        canonical = min(group, key=lambda i: (stamps[i] is None, stamps[i] or 0.0, sigs.doc_ids[i]))
        for i in group:
            if i != canonical:
                linked[sigs.doc_ids[i]] = sigs.doc_ids[canonical]
    return linked


def write(folder: Path, sigs: Signatures, linked: dict[str, str]) -> None:
    """``folder/dedup``: the signatures (reused by the next ingest) and the duplicate → canonical links."""
    out = folder / DEDUP_DIR
    out.mkdir(exist_ok=True)
    np.save(out / "signatures.npy", sigs.values)
    (out / "documents.json").write_text(json.dumps({"scheme": SCHEME, "doc_ids": sigs.doc_ids,
                                                    "published": sigs.published, "sizes": sigs.sizes.tolist()}),
                                        encoding="utf-8")
    (out / "duplicates.json").write_text(json.dumps(linked, ensure_ascii=False, sort_keys=True), encoding="utf-8")
