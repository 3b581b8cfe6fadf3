"""Filters (source, dates, doc_ids) applied inside retrieval: dense, BM25, fused, and through the answer,
the CLI and the HTTP routes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from rag.answer.answering import NO_MATCH_REASON
from rag.filters import BadFilter, Filters, published_timestamp, source_key
from rag.records import Hit
from rag.retrieval.fusion import RetrievalMode
from rag.retrieval.retriever import IndexRetriever
from rag.settings import Settings
from rag.store import vectors as vector_module
from rag.store.index import Index
from rag.store.lexical import LexicalIndex
from rag.store.vectors import Layout, VectorIndex, VectorKind, VectorPolicy

# Twelve rice-harvest stories: six from each source, a month apart through 2005, one undated; the
# Reuters ones carry the query's words most often, so an unfiltered top 5 is mostly theirs.
SOURCES = ("Reuters", "bbc.co.uk")


def _records() -> list[dict]:
    records = []
    for i in range(12):
        source = SOURCES[i % 2]
        words = "rice harvest rice harvest rice exports" if source == "Reuters" else "rice harvest farmers"
        records.append({"id": f"story-{i:02d}", "title": f"Harvest report {i}", "source": source,
                        "published": f"2005-{i + 1:02d}-15" if i != 11 else "",
                        "text": f"Story {i}: the {words} in province {i} reached {1000 + i} tonnes this season. "
                                f"Officials in district {i} expect prices to move."})
    return records


@pytest.fixture(scope="module")
def dated_index(tmp_path_factory, embedder, chunker) -> Path:
    from rag.ingest.pipeline import ingest

    folder = tmp_path_factory.mktemp("dated")
    (folder / "stories.jsonl").write_text("\n".join(json.dumps(r) for r in _records()) + "\n", encoding="utf-8")
    root = folder / "index"
    ingest([folder / "stories.jsonl"], root, embedder, chunker)
    return root


@pytest.fixture(scope="module")
def index(dated_index) -> Index:
    return Index.open(dated_index)


def _docs(passages) -> list[str]:
    return [p.doc_id for p in passages]


def _published(index: Index, doc_id: str) -> str:
    return index.document(doc_id).published


class TestParsing:
    def test_a_date_bound_covers_its_whole_day(self):
        f = Filters.parse(published_after="2005-03-01", published_before="2005-03-31")
        assert f.published_after == datetime(2005, 3, 1, tzinfo=UTC)
        assert f.published_before == datetime(2005, 3, 31, 23, 59, 59, 999999, tzinfo=UTC)
        assert f.matches("a", "", published_timestamp("2005-03-31T23:30:00+00:00"))
        assert not f.matches("a", "", published_timestamp("2005-04-01T00:30:00+00:00"))
        assert f.matches("a", "", published_timestamp("2005-04-01T00:30:00+01:00"))  # 23:30 UTC on the 31st
        assert f.matches("a", "", published_timestamp("2005-02-28T23:30:00-01:00"))  # 00:30 UTC on 1 March
        assert not f.matches("a", "", published_timestamp("2005-02-28T23:30:00+00:00"))
        assert f.matches("a", "", published_timestamp("2005-03-01"))

    def test_offsets_compare_as_instants(self):
        f = Filters.parse(published_after="2005-03-14T10:00:00+01:00")
        assert f.matches("a", "", published_timestamp("2005-03-14T09:00:00Z"))
        assert not f.matches("a", "", published_timestamp("2005-03-14T08:59:00Z"))

    @pytest.mark.parametrize("after, before, fragment", [
        ("last tuesday", None, "published_after: 'last tuesday' is not an ISO 8601 date"),
        (None, "2005-13-01", "published_before: '2005-13-01'"),
        ("2005-04-01", "2005-03-01", "later than published_before"),
    ])
    def test_bad_values_say_which_field_and_why(self, after, before, fragment):
        with pytest.raises(BadFilter, match=fragment):
            Filters.parse(published_after=after, published_before=before)

    def test_an_undated_article_never_passes_a_date_bound(self):
        assert not Filters.parse(published_before="2100-01-01").matches("a", "", None)
        assert Filters.parse(sources=["x"]).matches("a", "x", None)

    @pytest.mark.parametrize("spelling", ["bbc.co.uk", "BBC.co.uk", "https://www.bbc.co.uk/news/x", "www.bbc.co.uk"])
    def test_spellings_of_a_source_match(self, spelling):
        assert source_key(spelling) == "bbc.co.uk"
        assert source_key("BBC News") == "bbc news"

    def test_no_values_is_no_filter(self):
        assert not Filters.parse([], None, None, [])
        assert Filters.parse(doc_ids=["a"])


class TestRetrieval:
    @pytest.mark.parametrize("mode", list(RetrievalMode))
    def test_k_results_come_back_from_the_filtered_source_only(self, index, embedder, mode):
        retriever = IndexRetriever(index, embedder, mode=mode)
        query = "rice harvest exports"
        unfiltered = retriever.search(query, 5)
        assert sum(index.document(d).source == "Reuters" for d in _docs(unfiltered)) >= 3  # the filter must matter
        found = retriever.search(query, 5, filters=Filters.parse(sources=["https://www.BBC.co.uk/news"]))
        assert len(found) == 5  # filtered inside retrieval, not cut from the unfiltered 5
        assert {index.document(d).source for d in _docs(found)} == {"bbc.co.uk"}

    def test_date_bounds_keep_the_dated_articles_inside_them(self, index, embedder):
        retriever = IndexRetriever(index, embedder)
        found = retriever.search("rice harvest", 12, filters=Filters.parse(published_after="2005-03-01",
                                                                           published_before="2005-06-30"))
        assert sorted(_docs(found)) == ["story-02", "story-03", "story-04", "story-05"]
        later = retriever.search("rice harvest", 12, filters=Filters.parse(published_after="2005-10-01"))
        assert sorted(_docs(later)) == ["story-09", "story-10"]  # story-11 has no date

    def test_doc_ids_and_sources_combine(self, index, embedder):
        retriever = IndexRetriever(index, embedder)
        found = retriever.search("rice harvest", 10, filters=Filters.parse(
            sources=["Reuters"], doc_ids=["story-00", "story-01", "story-02", "nope"]))
        assert sorted(_docs(found)) == ["story-00", "story-02"]

    def test_a_filter_that_matches_nothing_finds_nothing(self, index, embedder):
        retriever = IndexRetriever(index, embedder)
        nothing = Filters.parse(sources=["nowhere.example"])
        assert retriever.search("rice harvest", 5, filters=nothing) == []
        assert retriever.matching_documents(nothing) == 0
        assert retriever.matching_documents(Filters.parse(sources=["reuters"])) == 6

    def test_facets_list_the_sources_and_the_date_range(self, index):
        facets = index.catalogue().facets()
        assert facets["sources"] == [{"source": "Reuters", "documents": 6}, {"source": "bbc.co.uk", "documents": 6}]
        assert facets["published"] == {"first": "2005-01-15", "last": "2005-11-15"}
        assert facets["undated"] == 1 and facets["documents"] == 12

    def test_passages_carry_their_articles_source_and_date(self, index, embedder):
        found = IndexRetriever(index, embedder).search("province 3 tonnes", 1, filters=Filters.parse(doc_ids=["story-03"]))
        assert (found[0].source, found[0].published) == ("bbc.co.uk", "2005-04-15")
        assert found[0].to_dict()["published"] == "2005-04-15"

    def test_filtered_bm25_scores_equal_unfiltered_ones(self, index):
        allowed = index.allowed_ids(Filters.parse(sources=["bbc.co.uk"]))
        full = dict(index.lexical_search("rice harvest farmers tonnes", 100))
        filtered = index.lexical_search("rice harvest farmers tonnes", 3, allowed)
        assert len(filtered) == 3 and {h.id for h in filtered} <= set(allowed.tolist())
        expected = sorted(((s, i) for i, s in full.items() if i in set(allowed.tolist())), key=lambda t: (-t[0], t[1]))
        assert [(h.id, pytest.approx(h.score)) for h in filtered] == [(i, s) for s, i in expected[:3]]


class TestAnswers:
    def test_a_filter_that_matches_nothing_is_said_so_not_an_abstention_on_the_facts(self, dated_index, embedder):
        from rag.answer.pipeline import open_pipeline

        answerer = open_pipeline(Settings(index_dir=dated_index), embedder).answerer
        answer = answerer.answer("How many tonnes did province 3 harvest?",
                                 filters=Filters.parse(published_after="2030-01-01"))
        assert answer.abstained and answer.abstain_reason == NO_MATCH_REASON
        assert answer.answer.startswith("No articles match the filters (published after 2030-01-01")
        ok = answerer.answer("How many tonnes did province 3 harvest?", filters=Filters.parse(doc_ids=["story-03"]))
        assert all(c.doc_id == "story-03" for c in ok.citations) and ok.citations


def _random_unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class TestVectorIndexFilters:
    @pytest.mark.parametrize("kind", [VectorKind.FLAT, VectorKind.IVF, VectorKind.HNSW])
    @pytest.mark.parametrize("exact_max", [0, 10**6])  # through the index's selector, and scored exactly
    def test_results_are_allowed_and_near_the_exact_filtered_top(self, kind, exact_max, monkeypatch):
        monkeypatch.setattr(vector_module, "FILTER_EXACT_MAX", exact_max)
        vectors, ids = _random_unit(6000, 32, 1), np.arange(100, 6100, dtype=np.int64)
        policy = VectorPolicy(kind=kind, ivf_nprobe=4)
        layout = Layout(kind, 64 if kind is VectorKind.IVF else 0)
        index = VectorIndex.build(ids, vectors, layout, policy)
        allowed = ids[::7]  # a seventh of the corpus
        queries = _random_unit(20, 32, 2)
        recall, unfiltered = [], []
        for q in queries:
            hits = index.search(q, 10, allowed)
            assert len(hits) == 10 and {h.id for h in hits} <= set(allowed.tolist())
            exact = np.argsort(-(vectors[::7] @ q))[:10]
            recall.append(len({h.id for h in hits} & set(allowed[exact].tolist())) / 10)
            everything = np.argsort(-(vectors @ q))[:10]
            unfiltered.append(len({h.id for h in index.search(q, 10)} & set(ids[everything].tolist())) / 10)
        if exact_max or kind is VectorKind.FLAT:
            assert np.mean(recall) == 1.0
        else:  # IVF reads 7x the cells, HNSW 7x the candidates: recall holds up against an unfiltered search
            assert np.mean(recall) >= np.mean(unfiltered) - 0.05

    def test_hnsw_tombstones_stay_out_of_a_filtered_search(self, monkeypatch):
        monkeypatch.setattr(vector_module, "FILTER_EXACT_MAX", 0)
        vectors, ids = _random_unit(2000, 16, 3), np.arange(2000, dtype=np.int64)
        index = VectorIndex.build(ids, vectors, Layout(VectorKind.HNSW, 0), VectorPolicy(kind=VectorKind.HNSW))
        index.remove(list(range(0, 2000, 2)))
        hits = index.search(vectors[4], 10, ids[:1000])  # allows removed ids too: they must not come back
        assert hits and all(h.id % 2 == 1 and h.id < 1000 for h in hits)

    def test_an_empty_allowed_set_finds_nothing(self):
        index = VectorIndex.build(np.arange(10), _random_unit(10, 8, 4), Layout(VectorKind.FLAT, 0), VectorPolicy())
        assert index.search(_random_unit(1, 8, 5)[0], 5, np.empty(0, dtype=np.int64)) == []


def test_lexical_rows_skip_tombstoned_and_unknown_ids():
    texts = [f"apple banana {i}" if i % 2 else f"apple cherry {i}" for i in range(40)]
    lexical = LexicalIndex.build(list(range(40)), texts)
    lexical = lexical.updated([100, 101], ["apple banana new", "apple cherry new"], removed=[1, 3])
    hits = lexical.search("apple banana", 50, np.array([1, 3, 5, 7, 101, 999], dtype=np.int64))
    assert sorted(h.id for h in hits) == [5, 7, 101]
    assert isinstance(hits[0], Hit)


class TestHTTP:
    def _doc_ids(self, live_server) -> list[str]:
        return [d["doc_id"] for d in httpx.get(f"{live_server.url}/api/documents").json()["documents"]]

    def test_search_and_answer_take_filters(self, live_server):
        korea = next(d for d in self._doc_ids(live_server) if "korea" in d)
        r = httpx.get(f"{live_server.url}/api/search", params={"q": "embassy trade", "k": 5, "doc_ids": [korea]})
        assert r.status_code == 200 and r.json()["passages"]
        assert {p["doc_id"] for p in r.json()["passages"]} == {korea}
        body = httpx.post(f"{live_server.url}/api/answer", timeout=30, json={
            "question": "When did the CKFTA become law?", "filters": {"sources": ["nowhere.example"]}}).json()
        assert body["abstained"] and body["abstain_reason"] == NO_MATCH_REASON and body["citations"] == []

    @pytest.mark.parametrize("filters, fragment", [
        ({"published_after": "yesterday"}, "published_after: 'yesterday' is not an ISO 8601 date"),
        ({"published_after": "2005-02-01", "published_before": "2005-01-01"}, "later than"),
        ({"colour": "red"}, "colour"),
    ])
    def test_bad_filters_are_422_with_the_reason(self, live_server, filters, fragment):
        r = httpx.post(f"{live_server.url}/api/answer", json={"question": "What?", "filters": filters})
        assert r.status_code == 422 and fragment in r.text
        if "colour" not in filters:
            r = httpx.get(f"{live_server.url}/api/search", params={"q": "x", **filters})
            assert r.status_code == 422 and fragment in r.text

    def test_chat_completions_reads_filters_from_the_body(self, live_server):
        r = httpx.post(f"{live_server.url}/v1/chat/completions", timeout=30, json={
            "messages": [{"role": "user", "content": "When did the CKFTA become law?"}],
            "filters": {"published_after": "2001-01-01"}})  # the bundled articles carry no dates
        assert r.status_code == 200 and r.json()["abstained"] is True
        assert r.json()["choices"][0]["message"]["content"].startswith("No articles match the filters")


def test_cli_search_filters(dated_index, capsys):
    from typer.testing import CliRunner

    from rag.cli import app

    result = CliRunner().invoke(app, ["search", "rice harvest", "--index", str(dated_index), "--json", "-k", "10",
                                      "--source", "reuters", "--after", "2005-05-01"])
    assert result.exit_code == 0, result.output
    docs = {p["doc_id"] for p in json.loads(result.output)["passages"]}
    assert docs == {"story-04", "story-06", "story-08", "story-10"}
    bad = CliRunner().invoke(app, ["search", "rice", "--index", str(dated_index), "--before", "soon"])
    assert bad.exit_code == 1 and "is not an ISO 8601 date" in bad.output

