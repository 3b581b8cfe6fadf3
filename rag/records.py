"""The records that flow between stages: frozen dataclasses, no behaviour beyond (de)serialising.

Every stage imports its inputs and outputs from here, so a module that needs a ``Turn`` does not
load the retriever that makes ``Passage``s. Offsets are document character offsets throughout:
``document.text[start:end] == record.text``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple


@dataclass(frozen=True)
class Document:
    """One article. Chunk offsets index into ``text``."""

    doc_id: str
    title: str
    text: str
    source: str = ""
    published: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def sha256(self) -> str:
        """Content hash: what decides whether a re-ingest must re-embed the document."""
        payload = json.dumps([self.title, self.text, self.source, self.published, self.metadata],
                             sort_keys=True, default=str, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Skipped:
    """A file (or record) that was not ingested, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Chunk:
    """A window of a document; ``document.text[start:end] == text``."""

    chunk_id: str
    doc_id: str
    ordinal: int
    start: int
    end: int
    text: str
    n_tokens: int


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as stored, with its vector id and its document's title."""

    id: int
    chunk: Chunk
    title: str
    source: str = ""
    published: str = ""  # ISO 8601, or "" when the article has no date


class Hit(NamedTuple):
    """One search result from the store: a chunk's vector id and its score (cosine or BM25)."""

    id: int
    score: float


Ranked = list[Hit]  # best first


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk. ``score`` is its cosine similarity to the query (0..1 in practice)."""

    doc_id: str
    title: str
    chunk_id: str
    start: int
    end: int
    text: str
    score: float
    n_tokens: int = field(default=0, repr=False)  # cl100k tokens of ``text`` from ingest; 0: count when needed
    source: str = ""
    published: str = ""  # ISO 8601, or "" when the article has no date

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "n_tokens"} | {"published": self.published or None}


@dataclass(frozen=True)
class Citation:
    """Source ``n`` of an answer: an exact span of a document."""

    n: int
    doc_id: str
    title: str
    chunk_id: str
    start: int
    end: int
    text: str
    score: float
    answer_span: tuple[int, int] | None = None  # document offsets of the answer words inside ``text``
    source: str = ""
    published: str = ""  # ISO 8601, or "" when the article has no date

    def to_dict(self) -> dict:
        span = self.answer_span
        return dict(self.__dict__) | {"answer_span": {"start": span[0], "end": span[1]} if span else None,
                                      "published": self.published or None}

    @classmethod
    def of(cls, n: int, passage: Passage, start: int | None = None, end: int | None = None) -> Citation:
        """Cite ``passage`` (or the span [start, end) of its document inside it) as source ``n``.

        Example:
            >>> p = Passage("d", "T", "d#0", 100, 119, "Ties began in 1952.", 0.7)
            >>> Citation.of(1, p, 111, 118).text
            'in 1952'
        """
        start = passage.start if start is None else start
        end = passage.end if end is None else end
        text = passage.text[start - passage.start:end - passage.start]
        return cls(n, passage.doc_id, passage.title, passage.chunk_id, start, end, text, passage.score,
                   source=passage.source, published=passage.published)


@dataclass(frozen=True)
class Turn:
    """One message of a conversation."""

    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class Answer:
    """The /api/answer response object (README "HTTP API")."""

    answer: str
    abstained: bool
    citations: list[Citation]
    generator: str
    timings_ms: dict[str, float]
    standalone_question: str = ""
    abstain_reason: str = ""
    evidence_score: float = 0.0

    def to_dict(self) -> dict:
        return {"answer": self.answer, "abstained": self.abstained,
                "citations": [c.to_dict() for c in self.citations], "generator": self.generator,
                "timings_ms": self.timings_ms, "standalone_question": self.standalone_question,
                "abstain_reason": self.abstain_reason, "evidence_score": self.evidence_score}
