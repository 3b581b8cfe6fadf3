"""bench/ingest.py --peers: the file selection, the loss count and the report, on toy data (no peer needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.ingest import (
    Losses,
    ModelWindow,
    Run,
    Selection,
    build_report,
    count_losses,
    format_report,
    kept_chars,
    ratios,
    select,
    summarise,
)
from bench.peers import PeerChunk

BODY = "Shares rose 5% on Friday. " * 120  # ~840 tokens: far past the model's 256


@pytest.fixture(scope="module")
def window() -> ModelWindow:
    return ModelWindow.load()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    (tmp_path / "business").mkdir()
    (tmp_path / "sport").mkdir()
    (tmp_path / "business" / "001.txt").write_text(f"Markets up\n\n{BODY}")
    (tmp_path / "sport" / "001.txt").write_bytes("Cup final\n\nTickets cost £15.".encode("latin-1"))
    (tmp_path / "README.TXT").write_text("about this folder")
    (tmp_path / "readme.txt").write_text("about this folder")
    return tmp_path


class TestSelect:
    def test_the_whole_corpus_is_read_in_place_without_its_readme(self, corpus, tmp_path):
        sel = select(corpus, None, tmp_path / "work")
        assert sel == Selection(corpus, ["business/001.txt", "sport/001.txt"], corpus) and not sel.staged

    def test_a_limit_links_the_first_files_with_their_folders(self, corpus, tmp_path):
        sel = select(corpus, 1, tmp_path / "work")
        assert sel.staged and sel.root == corpus and sel.files == ["business/001.txt"]
        assert (sel.rag_root / "business" / "001.txt").stat().st_ino == (corpus / "business" / "001.txt").stat().st_ino
        assert not (sel.rag_root / "sport").exists()


class TestLosses:
    def test_text_whole_or_by_runs_and_labels_only_whole(self):
        assert kept_chars("Tickets cost £15 each.", ["Tickets cost 15 each."], []) == 18  # £ lost, as LlamaIndex reads
        assert kept_chars("Cup final\n\nTickets", ["Tickets"], ["Cup final\n\n"]) == 15
        assert kept_chars("Cup final\n\nTickets", ["Tickets"], ["file_path: /x/001.txt\n\n"]) == 7

    def test_dropped_file_truncated_chunk_and_the_title_rag_embeds(self, corpus, window):
        sel = select(corpus, None, corpus / "work")
        chunks = [PeerChunk("business/001.txt", BODY, f"Markets up\n\n{BODY}")]
        losses = count_losses(sel, chunks, window)
        body_chars = len(BODY.replace(" ", ""))
        assert losses.files_dropped == 1 and losses.chunks_truncated == 1
        assert losses.chars == len("Marketsup") + body_chars + len("Cupfinal") + len("Ticketscost£15.")
        assert losses.chars_missing == len("Cupfinal") + len("Ticketscost£15.")  # the title counts as kept
        assert 0.6 * body_chars < losses.chars_unembedded - losses.chars_missing < 0.8 * body_chars

    def test_nothing_lost_when_every_chunk_fits(self, corpus, window):
        sel = Selection(corpus, ["sport/001.txt"], corpus)
        text = "Cup final\n\nTickets cost £15."
        losses = count_losses(sel, [PeerChunk("sport/001.txt", text, text)], window)
        assert losses._replace(chars=0) == (0, 0, 0, 0, 0)


def _run(system: str, round_: int, chunks: int, seconds: float) -> Run:
    return Run(system, round_, 10, chunks, chunks, seconds, seconds / 2, 500.0 + round_, 2 if system != "rag" else None)


class TestReport:
    RUNS = [_run("rag", 1, 60, 3.0), _run("haystack", 1, 40, 2.0), _run("llamaindex", 1, 45, 3.0),
            _run("rag", 2, 60, 2.0), _run("haystack", 2, 40, 4.0), _run("llamaindex", 2, 45, 1.5)]

    def test_medians_and_the_ratio_to_the_fastest_peer(self):
        summary = summarise(self.RUNS)
        assert summary["rag"]["chunks_per_s"] == 25.0 and summary["rag"]["chunks_per_s_min"] == 20.0
        assert summary["haystack"]["peak_rss_mb"] == 502.0
        ratio = ratios(summary)
        assert ratio["fastest_peer"] == "llamaindex"  # median 22.5 chunks/s against haystack's 15
        assert ratio["chunks_per_s"] == pytest.approx(25.0 / 22.5)
        assert ratio["articles_per_s"] == pytest.approx(4.17 / 5.0, abs=0.01)
        assert ratios(summarise(self.RUNS[1:3])) == {}

    def test_table_and_json(self, corpus, tmp_path):
        sel = select(corpus, 1, tmp_path / "work")
        losses = {s: Losses(0, 100, i, 2 * i, i) for i, s in enumerate(("rag", "haystack", "llamaindex"))}
        report = build_report(sel, corpus, self.RUNS, losses, 256)
        assert json.loads(json.dumps(report)) == report
        table = format_report(report)
        assert "rag / llamaindex (the fastest peer): 1.11x chunks/s" in table
        assert "1 articles (the first in sorted order" in table and "torch 2" in table
        assert table.count("\nhaystack ") == 4  # two runs, its median, its losses
