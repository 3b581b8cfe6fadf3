"""Ratings of answers (thumbs up or down, an optional comment) and the eval records made from them.

``POST /api/feedback`` stores each rating in ``feedback.sqlite`` beside the index's generations
(``index/default/feedback.sqlite``): an ingest replaces generations, never this file.
``rag eval --from-feedback OUT.jsonl`` turns the ratings into records in the shape of
``eval/questions.jsonl`` for a person to review before they join a question set::

    {"id": "feedback-7", "type": "feedback", "question": "...",
     "answers": ["the answer, without its [n] markers"],                   # 👍 on an answer
     "evidence": [{"doc_id": "...", "quote": "cited text, verbatim", "start": 833, "end": 989, "title": "..."}],
     "review": "unreviewed", "rating": 1, "comment": "", "feedback": {...}}
    {"id": "feedback-8", "type": "unanswerable", "answers": [], "evidence": [],
     "answer": "the abstention", "cited": [...], ...}                      # 👍 on an abstention
    {"id": "feedback-9", "type": "feedback", "rejected_answer": "...", "cited": [...], ...}   # 👎

A 👎 record has no ``answers`` and no ``evidence``: the right answer is unknown until the reviewer
writes it (or makes the record ``unanswerable``); what the rejected answer cited is under ``cited``.
Reviewing a record means setting ``type`` (date, name, number, ...), shortening ``answers`` to the
words that answer the question, and removing ``review``.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.text import MARKER

FEEDBACK_FILE = "feedback.sqlite"
UNREVIEWED = "unreviewed"
SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    generation TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    rating INTEGER NOT NULL CHECK (rating IN (1, -1)),
    comment TEXT NOT NULL,
    citations TEXT NOT NULL,
    standalone_question TEXT NOT NULL,
    abstained INTEGER);
"""
_COLUMNS = "id, created_at, generation, question, answer, rating, comment, citations, standalone_question, abstained"
_MARKER_BEFORE = re.compile(r"\s*" + MARKER.pattern)


@dataclass(frozen=True)
class Feedback:
    """One rated answer. ``id``, ``created_at`` (UTC, ISO 8601) and ``generation`` are set by the store.

    ``citations`` are the answer's citation objects as ``/api/answer`` returns them; ``abstained``
    is None when the client did not say.
    """

    question: str
    answer: str
    rating: int  # 1: good answer, -1: bad answer
    comment: str = ""
    citations: tuple[dict[str, Any], ...] = ()
    standalone_question: str = ""
    abstained: bool | None = None
    id: int = 0
    created_at: str = ""
    generation: str = ""  # the index generation that was serving ("" when none was loaded)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class FeedbackStore:
    """Feedback rows in one SQLite file (WAL), created on the first write. Thread-safe.

    Example:
        >>> import tempfile
        >>> store = FeedbackStore(Path(tempfile.mkdtemp()) / FEEDBACK_FILE, clock=lambda: "2026-01-02T03:04:05+00:00")
        >>> store.all(), store.path.exists()
        ([], False)
        >>> store.add(Feedback("Where?", "In Islamabad [1].", 1), generation="gen-000001")
        1
        >>> row = store.all()[0]
        >>> row.rating, row.created_at, row.generation
        (1, '2026-01-02T03:04:05+00:00', 'gen-000001')
        >>> store.close()
    """

    def __init__(self, path: Path, clock: Callable[[], str] = _utc_now):
        self.path, self.clock = path, clock
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one connection, used by one thread at a time

    @classmethod
    def beside(cls, index_dir: Path) -> FeedbackStore:
        """The store of the index folder ``index_dir`` (outside its generations, which ingests replace)."""
        return cls(index_dir / FEEDBACK_FILE)

    def add(self, feedback: Feedback, generation: str = "") -> int:
        """Store ``feedback`` (its own id, time and generation are ignored); returns its new id."""
        row = (self.clock(), generation, feedback.question, feedback.answer, feedback.rating, feedback.comment,
               json.dumps(list(feedback.citations)), feedback.standalone_question,
               None if feedback.abstained is None else int(feedback.abstained))
        with self._lock:
            cursor = self._connect().execute(f"INSERT INTO feedback ({_COLUMNS.removeprefix('id, ')}) "
                                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            return int(cursor.lastrowid)

    def all(self) -> list[Feedback]:
        """Every row, oldest first; [] when nothing was ever stored (reading never creates the file)."""
        if self._conn is None and not self.path.exists():
            return []
        with self._lock:
            rows = self._connect().execute(f"SELECT {_COLUMNS} FROM feedback ORDER BY id").fetchall()
        return [Feedback(question=q, answer=a, rating=r, comment=c, citations=tuple(json.loads(cites)),
                         standalone_question=sq, abstained=None if ab is None else bool(ab),
                         id=i, created_at=t, generation=g)
                for i, t, g, q, a, r, c, cites, sq, ab in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
            conn.execute("PRAGMA journal_mode=WAL")  # `rag eval --from-feedback` reads while a server writes
            conn.executescript(SCHEMA)
            self._conn = conn
        return self._conn


@dataclass(frozen=True)
class Export:
    """What ``export`` wrote."""

    path: Path
    records: int
    by_rating: dict[int, int] = field(default_factory=dict)


def without_markers(answer: str) -> str:
    """The answer's text with its citation markers removed.

    Example:
        >>> without_markers("Ties began in 1952 [1]. Trade is $53 million [2, 3].")
        'Ties began in 1952. Trade is $53 million.'
    """
    return _MARKER_BEFORE.sub("", answer).strip()


def _cited(citations: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """Citations as eval evidence: ``quote`` is the cited text verbatim, with its document offsets."""
    return [{"doc_id": c.get("doc_id", ""), "quote": c.get("text", ""), "start": c.get("start"),
             "end": c.get("end"), "title": c.get("title", "")} for c in citations]


def eval_record(fb: Feedback) -> dict[str, Any]:
    """The eval record a reviewer starts from (module docstring): what the rating says, and no more."""
    record: dict[str, Any] = {"id": f"feedback-{fb.id}", "type": "feedback", "question": fb.question}
    if fb.rating == 1 and fb.abstained:  # a good abstention: the articles do not answer it
        record |= {"type": "unanswerable", "answers": [], "evidence": [], "answer": fb.answer,
                   "cited": _cited(fb.citations)}
    elif fb.rating == 1:
        record |= {"answers": [without_markers(fb.answer)], "evidence": _cited(fb.citations)}
    else:  # the right answer is unknown: no answers, no evidence
        record |= {"rejected_answer": fb.answer, "cited": _cited(fb.citations)}
    return record | {"review": UNREVIEWED, "rating": fb.rating, "comment": fb.comment,
                     "feedback": {"id": fb.id, "created_at": fb.created_at, "generation": fb.generation,
                                  "standalone_question": fb.standalone_question, "abstained": fb.abstained}}


def export(store: FeedbackStore, out: Path, *, overwrite: bool = False) -> Export:
    """Write one eval record per stored rating to ``out`` (JSON lines, oldest first).

    An existing ``out`` is left alone (``FileExistsError``) unless ``overwrite``: it may hold a
    reviewer's edits.
    """
    rows = store.all()
    with out.open("w" if overwrite else "x", encoding="utf-8") as fh:
        for fb in rows:
            fh.write(json.dumps(eval_record(fb), ensure_ascii=False) + "\n")
    by_rating = {rating: sum(fb.rating == rating for fb in rows) for rating in (1, -1)}
    return Export(out, len(rows), by_rating)
