"""Near-duplicate stories: found at ingest (MinHash + LSH), linked to the earliest copy, cited once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.ingest import dedup
from rag.records import Document
from rag.retrieval.retriever import IndexRetriever
from rag.store.index import Index

STORY = ("Workers at the Port of Sihanoukville began a strike on Monday over pay and conditions. "
         "The union said 1,200 dock workers had stopped loading ships and would stay out until talks resumed. "
         "Port managers said container traffic had fallen by half since the morning shift. "
         "The labour ministry called both sides to a meeting in Phnom Penh on Wednesday. "
         "Shipping lines warned that exports of garments and rice could be delayed by a week. "
         "The last strike at the port, in 2019, lasted nine days and ended with a 7% pay rise.")
# The same story filed again: a new headline, a credit line, one sentence dropped, two words changed.
COPY = ("(Reuters) - Workers at the Port of Sihanoukville began a strike on Monday over pay and conditions. "
        "The union said 1,200 dock workers had stopped loading vessels and would stay out until talks resumed. "
        "Port managers said container traffic had fallen by half since the morning shift. "
        "Shipping lines warned that exports of garments and rice could be delayed by a week. "
        "The last strike at the port, in 2019, lasted nine days and ended with a 7% wage rise.\n\n"
        "Reporting by Jane Smith; editing by Tom Brown.")
OTHER = ("The port authority opened a new deep-water berth for container ships on Friday. "
         "The berth can take vessels of up to 60,000 tonnes and was built with a Japanese loan. "
         "Officials expect it to double the port's capacity by 2027.")


def _records(with_story: bool = True) -> list[dict]:
    records = [{"id": "wire-copy", "title": "Dockers walk out at Cambodia's main port", "source": "reuters.com",
                "published": "2024-05-06T14:00:00+00:00", "text": COPY},
               {"id": "berth", "title": "New berth opens", "source": "bbc.co.uk", "published": "2024-05-01", "text": OTHER}]
    if with_story:
        records.insert(0, {"id": "story", "title": "Port strike halts loading", "source": "bbc.co.uk",
                           "published": "2024-05-06T09:00:00+00:00", "text": STORY})
    return records


def _ingest(folder: Path, records: list[dict], embedder, chunker):
    from rag.ingest.pipeline import ingest

    (folder / "news.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return ingest([folder / "news.jsonl"], folder / "index", embedder, chunker)


def test_a_refiled_story_is_the_same_story_and_another_on_the_topic_is_not():
    sigs = dedup.update(None, set(), [Document("a", "t", STORY), Document("b", "u", COPY), Document("c", "v", OTHER)])
    assert dedup.same_story(sigs, 0, 1)
    assert not dedup.same_story(sigs, 0, 2) and not dedup.same_story(sigs, 1, 2)


def test_a_story_cut_short_is_the_same_story_by_overlap():
    half = " ".join(STORY.split(". ")[:3]) + "."
    sigs = dedup.update(None, set(), [Document("a", "t", STORY), Document("b", "t", half)])
    assert float((sigs.values[0] == sigs.values[1]).mean()) < dedup.THRESHOLD  # Jaccard alone would miss it
    assert dedup.same_story(sigs, 0, 1)


def test_ingest_links_the_copy_to_the_earliest_and_an_answer_cites_the_story_once(tmp_path, embedder, chunker):
    report = _ingest(tmp_path, _records(), embedder, chunker)
    assert report.duplicates == 1 and "1 near-duplicate articles linked" in report.summary()
    index = Index.open(tmp_path / "index")
    assert index.duplicates() == {"wire-copy": "story"}  # published five hours earlier
    passages = IndexRetriever(index, embedder).search("How many dock workers went on strike at the port?", 5)
    docs = [p.doc_id for p in passages]
    assert len({"story", "wire-copy"} & set(docs)) == 1 and "berth" in docs
    index.close()


def test_incremental_ingest_reuses_signatures_and_relinks_when_the_canonical_goes(tmp_path, embedder, chunker,
                                                                                  monkeypatch):
    _ingest(tmp_path, _records(), embedder, chunker)
    hashed: list[int] = []
    real = dedup.signatures
    monkeypatch.setattr(dedup, "signatures", lambda texts: hashed.append(len(texts)) or real(texts))
    _ingest(tmp_path, _records(with_story=False), embedder, chunker)  # the original is withdrawn
    assert hashed == [0]  # nothing new to hash: the copy's and the berth's signatures were kept
    index = Index.open(tmp_path / "index")
    assert index.duplicates() == {}  # the copy now stands alone
    index.close()


def test_an_index_from_before_dedup_gets_its_links_on_the_next_ingest(tmp_path, embedder, chunker):
    import shutil

    _ingest(tmp_path, _records(), embedder, chunker)
    gen = Index.open(tmp_path / "index").generation
    shutil.rmtree(gen / dedup.DEDUP_DIR)  # as an index written by an older rag
    report = _ingest(tmp_path, _records(), embedder, chunker)  # nothing changed in the files
    assert report.published and report.duplicates == 1
    assert Index.open(tmp_path / "index").duplicates() == {"wire-copy": "story"}


@pytest.mark.parametrize("published, canonical", [(("2024-05-07", "2024-05-06"), "wire-copy"),
                                                   (("", "2024-05-06"), "wire-copy"),
                                                   (("", ""), "story")])
def test_the_canonical_is_the_earliest_dated_then_the_smallest_id(published, canonical):
    docs = [Document("story", "t", STORY, published=published[0]), Document("wire-copy", "u", COPY, published=published[1])]
    linked = dedup.clusters(dedup.update(None, set(), docs))
    assert list(linked.values()) == [canonical]
