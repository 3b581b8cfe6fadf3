"""Feedback that grows the eval set: the store beside the index, POST /api/feedback against a real
server, and `rag eval --from-feedback` writing records for a person to review."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from rag.cli import app
from rag.eval.evaluation import load_cases
from rag.eval.feedback import FEEDBACK_FILE, Feedback, FeedbackStore, eval_record
from rag.serve.app import create_app
from rag.settings import Settings
from tests.conftest import LiveServer, write_corpus

QUESTION = "When did the CKFTA become law?"
CITATION = {"n": 1, "doc_id": "cambodia-korea", "title": "Ties", "chunk_id": "cambodia-korea#2", "start": 120,
            "end": 171, "text": "The CKFTA became law on January 29, 2022, after ratification.", "score": 0.71,
            "answer_span": {"start": 144, "end": 160}, "source": "test", "published": None}
runner = CliRunner()


def fixed_clock() -> str:
    return "2026-12-01T10:00:00+00:00"


class TestFeedbackStore:
    def test_round_trip_keeps_every_field(self, tmp_path: Path):
        store = FeedbackStore.beside(tmp_path / "index")
        assert store.all() == [] and not store.path.exists()  # reading never creates it
        first = Feedback(QUESTION, "It became law on January 29, 2022 [1].", 1, "", (CITATION,),
                         "When did the CKFTA become law?", False)
        second = Feedback("Who won?", "The articles don't cover this.", -1, "It is in the second article 🙂",
                          abstained=None)
        assert store.add(first, "gen-000003") == 1 and store.add(second) == 2
        assert store.path == tmp_path / "index" / FEEDBACK_FILE
        rows = store.all()
        store.close()
        assert [r.id for r in rows] == [1, 2]
        assert rows[0].question == QUESTION and rows[0].citations == (CITATION,) and rows[0].abstained is False
        assert rows[0].rating == 1 and rows[0].generation == "gen-000003"
        assert rows[1].comment == "It is in the second article 🙂" and rows[1].abstained is None
        assert rows[1].rating == -1 and rows[1].generation == "" and rows[1].citations == ()
        for row in rows:
            created = datetime.fromisoformat(row.created_at)
            assert created.utcoffset().total_seconds() == 0
        with sqlite3.connect(store.path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def test_concurrent_writes_from_threads_each_get_their_own_row(self, tmp_path: Path):
        store = FeedbackStore.beside(tmp_path)
        ids: list[int] = []
        start = threading.Barrier(8)

        def write(thread: int) -> None:
            start.wait()
            for i in range(25):
                ids.append(store.add(Feedback(f"q{thread}-{i}", "a", 1 if i % 2 else -1)))

        threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rows = store.all()
        assert sorted(ids) == list(range(1, 201)) == [r.id for r in rows]
        assert {r.question for r in rows} == {f"q{t}-{i}" for t in range(8) for i in range(25)}
        assert all(r.rating == (1 if int(r.question.split("-")[1]) % 2 else -1) for r in rows)
        store.close()

    def test_a_second_store_on_the_same_file_sees_and_adds_rows(self, tmp_path: Path):
        """A server writing while `rag eval --from-feedback` reads: two connections to one WAL file."""
        server, reader = FeedbackStore.beside(tmp_path), FeedbackStore.beside(tmp_path)
        server.add(Feedback("a?", "a", 1))
        assert [r.question for r in reader.all()] == ["a?"]
        reader.add(Feedback("b?", "b", -1))
        server.add(Feedback("c?", "c", 1))
        assert [r.question for r in server.all()] == [r.question for r in reader.all()] == ["a?", "b?", "c?"]
        server.close()
        reader.close()

    def test_the_store_outlives_the_generations_ingests_replace(self, tmp_path: Path, embedder, chunker):
        from rag.ingest.pipeline import ingest
        from rag.store.index import current_generation

        root = tmp_path / "index"
        ingest([write_corpus(tmp_path / "docs")], root, embedder, chunker)
        first = current_generation(root)
        store = FeedbackStore.beside(root)
        store.add(Feedback("What was harvested?", "Rice [1].", 1), first.name)
        for n in range(2):  # the second publish removes the first generation
            write_corpus(tmp_path / "docs", {f"extra{n}": (f"Extra {n}", f"Extra article number {n} about ports.")})
            ingest([tmp_path / "docs"], root, embedder, chunker)
        assert not first.exists() and current_generation(root) != first
        assert [(r.question, r.generation) for r in store.all()] == [("What was harvested?", first.name)]
        store.close()


class TestFeedbackRoute:
    def test_a_rating_of_a_real_answer_is_stored_with_the_generation(self, live_server, bundled_settings):
        answer = httpx.post(f"{live_server.url}/api/answer", json={"question": QUESTION}, timeout=30).json()
        generation = httpx.get(f"{live_server.url}/readyz").json()["generation"]
        body = {"question": QUESTION, "answer": answer["answer"], "rating": -1, "comment": "Say when it was signed.",
                "citations": answer["citations"], "standalone_question": answer["standalone_question"],
                "abstained": answer["abstained"]}
        r = httpx.post(f"{live_server.url}/api/feedback", json=body)
        assert r.status_code == 201, r.text
        new_id = r.json()["id"]
        assert set(r.json()) == {"id"} and isinstance(new_id, int)
        store = FeedbackStore.beside(bundled_settings.index_dir)
        row = next(f for f in store.all() if f.id == new_id)  # other tests may have stored rows too
        store.close()
        assert (row.question, row.answer, row.rating, row.comment) == (QUESTION, answer["answer"], -1, body["comment"])
        assert list(row.citations) == answer["citations"] and row.abstained is False
        assert row.generation == generation

    def test_only_the_required_fields(self, live_server):
        r = httpx.post(f"{live_server.url}/api/feedback", json={"question": "Who?", "answer": "Hun Sen [1].", "rating": 1})
        assert r.status_code == 201 and r.json()["id"] >= 1

    @pytest.mark.parametrize("change, fragment", [
        ({"rating": 0}, "rating: rating must be 1 (a good answer) or -1 (a bad answer)"),
        ({"rating": True}, "rating must be 1"),
        ({"rating": 1.0}, "rating must be 1"),
        ({"rating": "1"}, "rating must be 1"),
        ({"rating": None}, "rating"),
        ({"question": "  "}, "question: the question is empty"),
        ({"question": "x" * 4001}, "question: the question is longer than 4000 characters"),
        ({"answer": ""}, "answer: the answer is empty"),
        ({"answer": "x" * 20_001}, "answer: String should have at most 20000 characters"),
        ({"comment": "x" * 2001}, "comment: String should have at most 2000 characters"),
        ({"citations": [CITATION] * 21}, "citations: List should have at most 20 items"),
        ({"citations": [CITATION | {"start": 200}]}, "citations.0: citation end (171) is before its start (200)"),
        ({"citations": [{"doc_id": "d"}]}, "citations.0.start: Field required"),
        ({"citations": "not a list"}, "citations"),
        ({"question": "bad \ud800 text?"}, "question: the text holds an invalid character (a lone surrogate)"),
        ({"comment": "bad \ud800 text"}, "comment: Input should be a valid string"),
        ({"citations": [CITATION | {"text": "\udfff"}]}, "citations.0.text: Input should be a valid string"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ])
    def test_invalid_feedback_is_422_with_a_readable_message(self, live_server, change, fragment):
        body = {"question": QUESTION, "answer": "It became law on January 29, 2022 [1].", "rating": 1} | change
        r = httpx.post(f"{live_server.url}/api/feedback", content=json.dumps(body),
                       headers={"content-type": "application/json"})
        assert r.status_code == 422 and fragment in r.json()["detail"], r.text

    def test_missing_fields_are_named(self, live_server):
        r = httpx.post(f"{live_server.url}/api/feedback", json={})
        detail = r.json()["detail"]
        assert r.status_code == 422 and all(f"{name}: Field required" in detail for name in ("question", "answer", "rating"))

    def test_with_api_keys_it_needs_one(self, bundled_settings, embedder):
        settings = bundled_settings.model_copy(update={"api_keys": ["s3cret"]})
        body = {"question": QUESTION, "answer": "It became law on January 29, 2022 [1].", "rating": 1}
        with LiveServer(create_app(settings, embedder)) as server:
            denied = httpx.post(f"{server.url}/api/feedback", json=body)
            assert denied.status_code == 401 and denied.headers["WWW-Authenticate"] == "Bearer"
            assert httpx.post(f"{server.url}/api/feedback", json=body,
                              headers={"Authorization": "Bearer wrong"}).status_code == 401
            ok = httpx.post(f"{server.url}/api/feedback", json=body, headers={"Authorization": "Bearer s3cret"})
            assert ok.status_code == 201
        store = FeedbackStore.beside(settings.index_dir)
        assert any(f.id == ok.json()["id"] and f.question == QUESTION for f in store.all())
        store.close()

    def test_a_store_that_cannot_be_written_is_a_503_without_paths(self, tmp_path: Path, embedder):
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("", encoding="utf-8")
        settings = Settings(index_dir=blocker / "index")  # its folder cannot be made: a file is in the way
        body = {"question": QUESTION, "answer": "It became law on January 29, 2022 [1].", "rating": 1}
        with LiveServer(create_app(settings, embedder)) as server:
            r = httpx.post(f"{server.url}/api/feedback", json=body)
        assert r.status_code == 503 and r.headers["Retry-After"]
        assert r.json()["detail"].startswith("feedback could not be stored") and str(tmp_path) not in r.text


GOOD = Feedback(QUESTION, "The CKFTA became law on January 29, 2022 [1].", 1, "", (CITATION,), QUESTION, False)
GOOD_ABSTENTION = Feedback("Who won the 2022 FIFA World Cup?", "The articles don't cover this.", 1,
                           "Right, they don't.", (CITATION,), "Who won the 2022 FIFA World Cup?", True)
BAD = Feedback("When was the CKFTA signed?", "The CKFTA became law on January 29, 2022 [1].", -1,
               "That is when it took effect, not when it was signed.", (CITATION,), "When was the CKFTA signed?", False)
EVIDENCE = [{"doc_id": "cambodia-korea", "quote": CITATION["text"], "start": 120, "end": 171, "title": "Ties"}]


def meta(n: int, fb: Feedback) -> dict:
    return {"id": n, "created_at": fixed_clock(), "generation": "gen-000002",
            "standalone_question": fb.standalone_question, "abstained": fb.abstained}


class TestExport:
    @pytest.fixture
    def index(self, tmp_path: Path) -> Path:
        store = FeedbackStore(tmp_path / "index" / FEEDBACK_FILE, clock=fixed_clock)
        for fb in (GOOD, GOOD_ABSTENTION, BAD):
            store.add(fb, "gen-000002")
        store.close()
        return tmp_path / "index"

    def test_each_rating_becomes_a_record_to_review(self, index: Path, tmp_path: Path):
        out = tmp_path / "review.jsonl"
        result = runner.invoke(app, ["eval", "--from-feedback", str(out), "--index", str(index)])
        assert result.exit_code == 0, result.output
        assert "wrote 3 records" in result.output and "(2 rated good, 1 rated bad)" in result.output
        records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert records == [
            {"id": "feedback-1", "type": "feedback", "question": QUESTION,
             "answers": ["The CKFTA became law on January 29, 2022."], "evidence": EVIDENCE,
             "review": "unreviewed", "rating": 1, "comment": "", "feedback": meta(1, GOOD)},
            {"id": "feedback-2", "type": "unanswerable", "question": GOOD_ABSTENTION.question, "answers": [],
             "evidence": [], "answer": GOOD_ABSTENTION.answer, "cited": EVIDENCE, "review": "unreviewed",
             "rating": 1, "comment": "Right, they don't.", "feedback": meta(2, GOOD_ABSTENTION)},
            {"id": "feedback-3", "type": "feedback", "question": BAD.question, "rejected_answer": BAD.answer,
             "cited": EVIDENCE, "review": "unreviewed", "rating": -1, "comment": BAD.comment,
             "feedback": meta(3, BAD)},
        ]
        # The eval loader refuses them until a person has reviewed them ...
        with pytest.raises(ValueError, match="feedback-1 is an unreviewed feedback record"):
            load_cases([out])
        # ... then reads them as they are: a good abstention is an unanswerable case, a bad answer one
        # with no gold answer yet.
        reviewed = [json.loads(line) | {"review": "reviewed"} for line in out.read_text(encoding="utf-8").splitlines()]
        out.write_text("".join(json.dumps(r) + "\n" for r in reviewed), encoding="utf-8")
        cases = load_cases([out])
        assert [(c.id, c.answerable, c.answers) for c in cases] == [
            ("feedback-1", True, ["The CKFTA became law on January 29, 2022."]),
            ("feedback-2", False, []), ("feedback-3", True, [])]

    def test_an_existing_file_is_kept_unless_forced(self, index: Path, tmp_path: Path):
        out = tmp_path / "review.jsonl"
        out.write_text('{"id": "reviewed by hand"}\n', encoding="utf-8")
        result = runner.invoke(app, ["eval", "--from-feedback", str(out), "--index", str(index)])
        assert result.exit_code == 1 and "exists" in result.output and "--force" in result.output
        assert out.read_text(encoding="utf-8") == '{"id": "reviewed by hand"}\n'
        result = runner.invoke(app, ["eval", "--from-feedback", str(out), "--index", str(index), "--force"])
        assert result.exit_code == 0, result.output
        assert [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()] == [
            "feedback-1", "feedback-2", "feedback-3"]

    def test_no_feedback_yet_is_one_readable_error(self, tmp_path: Path):
        out = tmp_path / "review.jsonl"
        result = runner.invoke(app, ["eval", "--from-feedback", str(out), "--index", str(tmp_path / "index")])
        assert result.exit_code == 1 and "no feedback" in result.output and "POST /api/feedback" in result.output
        assert not out.exists() and not (tmp_path / "index" / FEEDBACK_FILE).exists()

    def test_question_files_and_from_feedback_do_not_mix(self, index: Path, tmp_path: Path):
        result = runner.invoke(app, ["eval", "q.jsonl", "--from-feedback", str(tmp_path / "o.jsonl"), "--index", str(index)])
        assert result.exit_code == 1 and "takes no question files" in result.output

    def test_an_abstention_rated_without_saying_so_is_an_answer(self):
        """A client that sends no ``abstained``: nothing is assumed, the rating stands for an answer."""
        fb = Feedback("Who?", "Hun Sen [1] and Gillani [2].", 1, id=7)
        record = eval_record(fb)
        assert record["type"] == "feedback" and record["answers"] == ["Hun Sen and Gillani."]
        assert record["evidence"] == [] and record["feedback"]["abstained"] is None
