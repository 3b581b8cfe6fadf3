"""The segmented BM25 index against bm25s itself, against a rebuild, and across generations on disk."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bm25s
import bm25s.utils.json_functions
import numpy as np
import pytest

from rag.records import Chunk, Document
from rag.store import lexical
from rag.store.index import BM25_DIR, Index
from rag.store.lexical import (
    ARRAYS,
    Bm25sIndex,
    LexicalIndex,
    LexicalIndexUnreadable,
    MergePolicy,
    _build_segment,
    _merge,
    _tokenizer,
    chunk_text,
)
from rag.store.writer import write_generation

WORDS = ("rice harvest floods crop farmers bank england interest rates march minister said running runs ran tea "
         "prices market temple restoration siem reap election votes parliament budget deficit football cup final "
         "goal striker storm coast warning rainfall drought exports tariffs").split()
STOPWORDS = ("the", "of", "and", "is", "it", "was")
QUERIES = ["rice harvest", "running rice rice", "interest rates in March", "Bank of England", "temple restoration",
           "storm warning for the coast", "football cup final goal", "tariffs", "the", "", "xyzzy unknown",
           "ran runs running"]
NEVER_MERGE = MergePolicy(merge_factor=10**9, purge_fraction=2.0, max_segments=10**9)
EAGER = MergePolicy(merge_factor=2, floor_docs=4, purge_fraction=0.2, max_segments=4)


@pytest.fixture(autouse=True)
def bm25s_writes_json_with_the_standard_library(monkeypatch):
    """Old-format folders are written by bm25s itself, which uses orjson when it is installed (pymilvus
    brings it) and orjson rejects bm25s's integer keys; its own fallback writes them."""
    monkeypatch.setattr(bm25s.utils.json_functions, "dumps", bm25s.utils.json_functions.dumps_with_builtin)


def _texts(rng: random.Random, n: int) -> list[str]:
    """Titled chunk texts of the vocabulary, with the edge cases bm25s treats specially (no tokens at all)."""
    texts = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.03:
            texts.append(chunk_text("", ""))
        elif roll < 0.06:
            texts.append(chunk_text("The", " ".join(rng.choices(STOPWORDS, k=4))))
        else:
            body = " ".join(rng.choices(WORDS + list(STOPWORDS), k=rng.randint(1, 40)))
            texts.append(chunk_text(" ".join(rng.choices(WORDS, k=2)).title(), body))
    return texts


def _bm25s(texts: list[str]) -> tuple[bm25s.BM25, object]:
    """bm25s as the index was built before segments."""
    tokenizer = _tokenizer()
    tokens = tokenizer.tokenize(texts, update_vocab=True, return_as="ids", show_progress=False)
    bm25 = bm25s.BM25()
    bm25.index(tokens, show_progress=False)
    return bm25, tokenizer


def _bm25s_scores(bm25: bm25s.BM25, tokenizer, query: str) -> np.ndarray:
    tokens = tokenizer.tokenize([query], update_vocab=False, return_as="ids", show_progress=False)[0]
    return bm25.get_scores(tokens)


def _all_hits(index: LexicalIndex, query: str) -> dict[int, float]:
    return dict(index.search(query, k=10**6))


def _stems(texts: list[str]) -> set[str]:
    tokenizer = _tokenizer()
    tokenizer.tokenize(texts, update_vocab=True, show_progress=False)
    return set(tokenizer.stem_to_sid) | {"unseen", ""}


def _assert_same(index: LexicalIndex, rebuilt: LexicalIndex, texts: list[str]) -> None:
    """Same hits, same order, same scores (bit for bit: the same sums in the same order), same idf."""
    for query in QUERIES:
        assert index.search(query, k=10**6) == rebuilt.search(query, k=10**6), query
        assert index.search(query, k=3) == rebuilt.search(query, k=3), query
    for stem in _stems(texts):
        assert index.idf(stem) == rebuilt.idf(stem), stem


def _digest(folder: Path) -> dict[str, tuple[str, int, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns, p.stat().st_ino)
            for p in sorted(folder.rglob("*")) if p.is_file()}


class _Corpus:
    """Live chunks by id, changed by the steps of a test the way ingest changes them."""

    def __init__(self, seed: int):
        self.rng, self.live, self.next_id = random.Random(seed), {}, 0

    def add(self, n: int) -> tuple[list[int], list[str]]:
        ids = list(range(self.next_id, self.next_id + n))
        texts = _texts(self.rng, n)
        self.next_id += n
        self.live.update(zip(ids, texts))
        return ids, texts

    def remove(self, n: int) -> list[int]:
        gone = self.rng.sample(sorted(self.live), min(n, len(self.live)))
        for i in gone:
            del self.live[i]
        return gone

    def step(self, index: LexicalIndex, added: int, removed: int, policy: MergePolicy = MergePolicy()) -> LexicalIndex:
        """``index`` with ``removed`` random live chunks gone and ``added`` new ones (removals first, as ingest)."""
        gone = self.remove(removed)
        return index.updated(*self.add(added), removed=gone, policy=policy)

    def rebuilt(self) -> LexicalIndex:
        ids = sorted(self.live)
        return LexicalIndex.build(ids, [self.live[i] for i in ids])


class TestScoresMatchBm25s:
    @pytest.mark.parametrize("query", QUERIES)
    def test_every_score_matches_bm25s(self, query):
        texts = _texts(random.Random(1), 300)
        bm25, tokenizer = _bm25s(texts)
        expected = _bm25s_scores(bm25, tokenizer, query)
        hits = _all_hits(LexicalIndex.build(list(range(len(texts))), texts), query)
        assert set(hits) == set(np.flatnonzero(expected > 0).tolist())
        for i, score in hits.items():
            assert score == pytest.approx(float(expected[i]), abs=1e-5)

    @pytest.mark.parametrize("k", [1, 3, 10, 1000])
    @pytest.mark.parametrize("prune_df", [1, 30, 10**9], ids=["prune always", "prune common", "never prune"])
    def test_pruned_top_k_is_the_exhaustive_top_k(self, monkeypatch, k, prune_df):
        corpus = _Corpus(seed=4)
        index = corpus.step(corpus.step(LexicalIndex.build(*corpus.add(300)), 40, 30), 20, 10, NEVER_MERGE)
        exhaustive = {q: index.search(q, k) for q in QUERIES}
        monkeypatch.setattr(lexical, "PRUNE_DF", prune_df)
        for query in QUERIES:
            assert index.search(query, k) == exhaustive[query], query

    def test_a_long_query_returns_exact_scores_and_the_exhaustive_leaders(self, monkeypatch):
        """Past EXACT_TERMS indexed terms a query is ranked by its weightiest terms, then its candidates are
        scored with all of them: every score returned is bm25s's, and the leaders are the exhaustive ones.
        Random text, where all 24 terms weigh about alike, is the worst case for ranking by a few: this
        ranks by 16 of them. The product's 8 is measured on BBC text (bench/scale.py) and SciFact."""
        texts = _texts(random.Random(6), 400)
        bm25, tokenizer = _bm25s(texts)
        index = LexicalIndex.build(list(range(len(texts))), texts)
        rng = random.Random(7)
        long_queries = [" ".join(rng.sample(WORDS, 24)) for _ in range(20)]
        monkeypatch.setattr(lexical, "EXACT_TERMS", 16)
        assert all(len(set(index.stems(q))) > lexical.EXACT_TERMS for q in long_queries)
        found = {q: index.search(q, 10) for q in long_queries}
        monkeypatch.setattr(lexical, "EXACT_TERMS", 10**9)
        for query in long_queries:
            expected = _bm25s_scores(bm25, tokenizer, query)
            assert all(score == pytest.approx(float(expected[i]), abs=1e-5) for i, score in found[query]), query
            assert [s for _, s in found[query]] == sorted((s for _, s in found[query]), reverse=True)
            exhaustive = index.search(query, 10)
            assert found[query][:3] == exhaustive[:3], query
            assert len({i for i, _ in found[query]} & {i for i, _ in exhaustive}) >= 9, query

    def test_searches_from_many_threads_agree_with_one(self):
        corpus = _Corpus(seed=5)
        index = corpus.step(LexicalIndex.build(*corpus.add(400)), 30, 40, NEVER_MERGE)
        expected = [index.search(q, 10) for q in QUERIES * 20]
        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(lambda q: index.search(q, 10), QUERIES * 20)) == expected

    def test_top_k_is_best_first_with_ties_by_id(self):
        texts = _texts(random.Random(2), 200)
        hits = LexicalIndex.build(list(range(len(texts))), texts).search("rice", k=50)
        assert len(hits) == 50
        assert hits == sorted(hits, key=lambda h: (-h.score, h.id))

    def test_idf_matches_the_bm25s_index(self):
        texts = _texts(random.Random(3), 250)
        bm25, tokenizer = _bm25s(texts)
        old = Bm25sIndex(bm25, tokenizer, np.arange(len(texts)))
        new = LexicalIndex.build(list(range(len(texts))), texts)
        for stem in _stems(texts) - {""}:
            assert new.idf(stem) == pytest.approx(old.idf(stem), abs=1e-12), stem


STEPS = {  # (chunks added, chunks removed) per generation after the first
    "adds only": [(20, 0), (1, 0), (35, 0), (3, 0), (8, 0)],
    "removes only": [(0, 10), (0, 1), (0, 30), (0, 5)],
    "changes": [(10, 10), (4, 4), (25, 25), (1, 1), (12, 12), (6, 6)],
    "mixed": [(15, 3), (0, 40), (60, 0), (2, 9), (30, 30), (0, 1), (7, 0)],
    "remove everything, then add": [(0, 10**6), (12, 0), (5, 3)],
}


class TestIncrementalEqualsRebuild:
    @pytest.mark.parametrize("policy", [MergePolicy(), EAGER, NEVER_MERGE], ids=["default", "eager", "never"])
    @pytest.mark.parametrize("steps", list(STEPS.values()), ids=list(STEPS))
    def test_every_generation_scores_as_a_rebuild(self, tmp_path, steps, policy):
        corpus = _Corpus(seed=len(steps))
        index = LexicalIndex.build(*corpus.add(80))
        for generation, (added, removed) in enumerate(steps):
            index = corpus.step(index, added, removed, policy)
            if generation % 2:  # through the disk every other step, as ingest does every time
                index.save(tmp_path / f"gen-{generation}")
                index = LexicalIndex.load(tmp_path / f"gen-{generation}")
            assert index.docs == len(corpus.live)
            _assert_same(index, corpus.rebuilt(), list(corpus.live.values()))

    def test_incremental_matches_bm25s_too(self):
        corpus = _Corpus(seed=7)
        index = LexicalIndex.build(*corpus.add(100))
        for added, removed in [(30, 20), (5, 40), (50, 0)]:
            index = corpus.step(index, added, removed)
        ids = sorted(corpus.live)
        bm25, tokenizer = _bm25s([corpus.live[i] for i in ids])
        for query in QUERIES:
            expected = _bm25s_scores(bm25, tokenizer, query)
            hits = _all_hits(index, query)
            assert set(hits) == {ids[i] for i in np.flatnonzero(expected > 0)}, query
            for row, i in enumerate(ids):
                if i in hits:
                    assert hits[i] == pytest.approx(float(expected[row]), abs=1e-5)

    def test_tombstoned_chunks_never_return(self):
        corpus = _Corpus(seed=8)
        index = LexicalIndex.build(*corpus.add(60))
        marked = list(range(60, 70))
        index = index.updated(marked, [chunk_text("Zanzibar", "zanzibar cloves") for _ in marked], removed=[])
        index = index.updated([], [], removed=marked[:7], policy=NEVER_MERGE)  # tombstones, not yet purged
        assert {h.id for h in index.search("zanzibar cloves", k=100)} == set(marked[7:])
        index = index.updated([], [], removed=marked[7:], policy=NEVER_MERGE)
        assert not {h.id for h in index.search("zanzibar", k=100)} & set(marked)
        assert index.idf("zanzibar") == index.idf("never-indexed")

    def test_merges_keep_results_and_bound_the_segment_count(self):
        corpus = _Corpus(seed=9)
        merged, unmerged = LexicalIndex([]), LexicalIndex([])
        for _ in range(60):
            gone = corpus.remove(1)
            ids, texts = corpus.add(3)
            merged = merged.updated(ids, texts, removed=gone, policy=EAGER)
            unmerged = unmerged.updated(ids, texts, removed=gone, policy=NEVER_MERGE)
        assert len(merged.segments) <= EAGER.max_segments < len(unmerged.segments)
        assert all(s.deleted < EAGER.purge_fraction * s.docs for s in merged.segments)
        _assert_same(merged, unmerged, list(corpus.live.values()))

    def test_default_policy_keeps_small_ingests_to_a_few_segments(self):
        corpus = _Corpus(seed=10)
        index = LexicalIndex([])
        for _ in range(150):
            index = corpus.step(index, 4, 1)
        assert len(index.segments) <= 3 * MergePolicy().tier(index.docs) + 3

    def test_a_purged_term_drops_out_of_the_vocabulary(self):
        index = LexicalIndex.build([0, 1], [chunk_text("A", "quokka island"), chunk_text("B", "island ferry")])
        index = index.updated([], [], removed=[0], policy=MergePolicy(purge_fraction=0.5))
        assert len(index.segments) == 1 and index.segments[0].deleted == 0 and index.segments[0].docs == 1
        assert index.search("quokka", k=5) == [] and [h.id for h in index.search("island", k=5)] == [1]

    def test_removing_an_unknown_chunk_says_rebuild(self):
        index = LexicalIndex.build([0, 1], [chunk_text("A", "one"), chunk_text("B", "two")])
        with pytest.raises(ValueError, match="--rebuild"):
            index.updated([], [], removed=[5])
        with pytest.raises(ValueError, match="--rebuild"):
            index.updated([], [], removed=[0]).updated([], [], removed=[0])

    def test_new_ids_must_be_above_the_indexed_ones(self):
        index = LexicalIndex.build([3, 4], [chunk_text("A", "one"), chunk_text("B", "two")])
        with pytest.raises(ValueError, match="ascending"):
            index.updated([4], [chunk_text("C", "three")], removed=[])


class TestSegments:
    def test_a_build_in_batches_is_the_build_in_one_pass(self):
        texts = _texts(random.Random(14), 200)
        ids = np.arange(1000, 1200, dtype=np.int64)
        whole, batched = _build_segment("seg-000001", ids, texts), _build_segment("seg-000001", ids, texts, batch=7)
        for name in ARRAYS:
            np.testing.assert_array_equal(getattr(whole, name), getattr(batched, name), err_msg=name)

    @pytest.mark.parametrize("block", [1, 5, 1 << 21])
    def test_a_merge_is_the_build_of_the_live_rows(self, block):
        rng = random.Random(15)
        texts = _texts(rng, 150)
        parts = [_build_segment(f"seg-{i:06d}", np.arange(i * 50, i * 50 + 50), texts[i * 50:i * 50 + 50])
                 for i in range(3)]
        gone = [np.asarray(sorted(rng.sample(range(50), n)), dtype=np.int64) for n in (0, 7, 49)]
        parts = [p.with_deletes(g) for p, g in zip(parts, gone)]
        merged = _merge("seg-000009", parts, block=block)
        live = [i for i in range(150) if i % 50 not in set(gone[i // 50].tolist())]
        expected = _build_segment("seg-000009", np.asarray(live), [texts[i] for i in live])
        for name in ARRAYS:
            np.testing.assert_array_equal(getattr(merged, name), getattr(expected, name), err_msg=name)
        assert merged.tokens == expected.tokens and merged.deletes is None

    def test_a_key_found_past_another_sharing_its_first_half(self):
        part = _build_segment("seg-000001", np.arange(2), [chunk_text("A", "one"), chunk_text("B", "two")])
        crafted = dataclasses.replace(part, terms_hi=np.asarray([5, 5, 5], dtype=np.uint64),
                                      terms_lo=np.asarray([1, 2, 4], dtype=np.uint64), indptr=np.asarray([0, 1, 2, 3]))
        assert crafted.span(np.uint64(5), np.uint64(2)) == (1, 2)
        assert crafted.span(np.uint64(5), np.uint64(3)) is None and crafted.span(np.uint64(6), np.uint64(1)) is None

    def test_a_merge_of_dead_rows_only_is_nothing(self):
        part = _build_segment("seg-000001", np.arange(3), [chunk_text("A", "one"), chunk_text("B", "two"), ""])
        assert _merge("seg-000002", [part.with_deletes(np.arange(3))]) is None


class TestGenerationsOnDisk:
    def test_a_new_generation_leaves_the_old_one_untouched(self, tmp_path):
        corpus = _Corpus(seed=11)
        LexicalIndex.build(*corpus.add(120)).save(tmp_path / "gen-1")
        before = _digest(tmp_path / "gen-1")
        old = LexicalIndex.load(tmp_path / "gen-1")
        old_hits = {q: old.search(q, k=10) for q in QUERIES}
        new = corpus.step(old, 10, 15)
        new.save(tmp_path / "gen-2")
        assert _digest(tmp_path / "gen-1") == before
        assert {q: old.search(q, k=10) for q in QUERIES} == old_hits  # still readable, still the old scores
        assert {q: LexicalIndex.load(tmp_path / "gen-1").search(q, k=10) for q in QUERIES} == old_hits
        carried = new.segments[0].name  # the first segment went on with tombstones: linked, deletes written anew
        old_dir, new_dir = tmp_path / "gen-1" / carried, tmp_path / "gen-2" / carried
        assert (new_dir / "rows.npy").stat().st_ino == (old_dir / "rows.npy").stat().st_ino
        assert (new_dir / "deletes.npy").is_file() and not (old_dir / "deletes.npy").exists()

    def test_the_next_generation_outlives_the_one_it_linked_from(self, tmp_path):
        corpus = _Corpus(seed=12)
        LexicalIndex.build(*corpus.add(50)).save(tmp_path / "gen-1")
        corpus.step(LexicalIndex.load(tmp_path / "gen-1"), 5, 5).save(tmp_path / "gen-2")
        for p in sorted((tmp_path / "gen-1").rglob("*"), reverse=True):  # as publish removes old generations
            p.unlink() if p.is_file() else p.rmdir()
        _assert_same(LexicalIndex.load(tmp_path / "gen-2"), corpus.rebuilt(), list(corpus.live.values()))

    def test_empty_index_and_empty_queries(self, tmp_path):
        empty = LexicalIndex.build([], [])
        empty.save(tmp_path / "bm25")
        loaded = LexicalIndex.load(tmp_path / "bm25")
        for index in (empty, loaded):
            assert index.search("rice", k=10) == [] and index.search("", k=10) == []
            assert index.idf("rice") == pytest.approx(np.log(1 + 1.5 / 0.5))
        index = loaded.updated([0, 1], [chunk_text("Rice", "rice harvest"), chunk_text("Tea", "tea prices")], removed=[])
        assert index.search("", k=10) == [] and index.search("the of", k=10) == [] and index.search("rice", k=0) == []
        assert [h.id for h in index.search("rice", k=10)] == [0]

    def test_a_bm25s_folder_from_before_segments_still_opens(self, tmp_path):
        texts = _texts(random.Random(13), 150)
        bm25, tokenizer = _bm25s(texts)
        folder = tmp_path / "bm25"  # what LexicalIndex.save wrote before segments
        bm25.save(str(folder))
        tokenizer.save_vocab(str(folder))
        np.save(folder / "ids.npy", np.arange(100, 100 + len(texts), dtype=np.int64))
        old = LexicalIndex.load(folder)
        assert isinstance(old, Bm25sIndex) and not old.incremental
        new = LexicalIndex.build(list(range(100, 100 + len(texts))), texts)
        for query in QUERIES:
            expected = dict(old.search(query, k=len(texts)))
            assert set(_all_hits(new, query)) == set(expected), query
            for i, score in new.search(query, k=len(texts)):
                assert score == pytest.approx(expected[i], abs=1e-5)

    def test_an_unknown_folder_says_rebuild(self, tmp_path):
        (tmp_path / "bm25").mkdir()
        with pytest.raises(LexicalIndexUnreadable, match="--rebuild"):
            LexicalIndex.load(tmp_path / "bm25")
        (tmp_path / "bm25" / "segments.json").write_text('{"format": "rag-bm25-segments", "version": 99}')
        with pytest.raises(LexicalIndexUnreadable, match="--rebuild"):
            LexicalIndex.load(tmp_path / "bm25")


def _article(doc_id: str, title: str, paragraphs: list[str]) -> tuple[Document, list[Chunk]]:
    text = "\n\n".join(paragraphs)
    chunks, start = [], 0
    for ordinal, paragraph in enumerate(paragraphs):
        start = text.index(paragraph, start)
        chunks.append(Chunk(f"{doc_id}#{ordinal}", doc_id, ordinal, start, start + len(paragraph), paragraph, 10))
    return Document(doc_id, title, text), chunks


def _write(root: Path, previous: Index | None, removed: list[str], articles: list[tuple[Document, list[Chunk]]]) -> Index:
    documents = [d for d, _ in articles]
    chunks = [c for _, cs in articles for c in cs]
    vectors = np.random.default_rng(len(chunks)).normal(size=(len(chunks), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    write_generation(root, previous, removed=removed, documents=documents, chunks=chunks, vectors=vectors,
                     model="test", dimension=8, chunker={})
    return Index.open(root)


def _rebuilt(index: Index) -> LexicalIndex:
    rows = list(index.chunk_texts())
    return LexicalIndex.build([r.id for r in rows], [chunk_text(r.title, r.text) for r in rows])


class TestWriteGeneration:
    ARTICLES = {"rice": ("Rice harvest", ["Floods destroyed half of the rice crop.", "Farmers replanted in March."]),
                "tea": ("Tea prices", ["Tea prices rose at the Mombasa auction."]),
                "temple": ("Temple restoration", ["Restorers finished the Siem Reap temple.", "Tourists returned."])}

    def _generations(self, root: Path) -> Index:
        index = _write(root, None, [], [_article(k, *v) for k, v in self.ARTICLES.items()])
        index = _write(root, index, ["tea"], [_article("tea", "Tea prices", ["Tea prices fell after the rains."])])
        index = _write(root, index, ["temple"], [_article("storm", "Storm warning", ["A storm warning for the coast."])])
        return index

    def test_each_generation_scores_as_a_rebuild_of_its_chunks(self, tmp_path):
        index = self._generations(tmp_path / "index")
        assert index.lexical.incremental and len(index.lexical.segments) == 3
        texts = [chunk_text(r.title, r.text) for r in index.chunk_texts()]
        _assert_same(index.lexical, _rebuilt(index), texts)
        assert index.lexical_search("temple", k=5) == []
        index.close()

    def test_an_index_from_before_segments_is_rebuilt_once(self, tmp_path):
        root = tmp_path / "index"
        index = _write(root, None, [], [_article(k, *v) for k, v in self.ARTICLES.items()])
        rows = list(index.chunk_texts())
        index.close()
        folder = index.generation / BM25_DIR  # replaced by what the previous rag wrote there
        for p in folder.rglob("*"):
            p.unlink() if p.is_file() else None
        for p in sorted(folder.glob("seg-*")):
            p.rmdir()
        bm25, tokenizer = _bm25s([chunk_text(r.title, r.text) for r in rows])
        bm25.save(str(folder))
        tokenizer.save_vocab(str(folder))
        np.save(folder / "ids.npy", np.asarray([r.id for r in rows], dtype=np.int64))
        old = Index.open(root)
        assert isinstance(old.lexical, Bm25sIndex) and [h.id for h in old.lexical_search("tea auction", 1)] == [rows[2].id]
        index = _write(root, old, ["tea"], [_article("tea", "Tea prices", ["Tea prices fell after the rains."])])
        assert isinstance(index.lexical, LexicalIndex)
        _assert_same(index.lexical, _rebuilt(index), [chunk_text(r.title, r.text) for r in index.chunk_texts()])
        index.close()
