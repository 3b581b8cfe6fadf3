"""Pydantic request/response models of the HTTP contract (README "HTTP API"): the only place pydantic
meets the pipeline's records (``turns`` converts messages to ``Turn``s)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rag.eval.feedback import Feedback
from rag.filters import MAX_VALUES, Filters
from rag.records import Turn

MAX_QUESTION_CHARS = 4000
MAX_HISTORY = 20


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=20_000)


class FiltersIn(BaseModel):
    """Which articles an answer or search may use (all given ones must hold); dates are ISO 8601."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"sources": ["bbc.co.uk"], "published_after": "2005-01-01", "published_before": "2005-03-31"}]})

    sources: list[str] = Field(default_factory=list, max_length=MAX_VALUES,
                               description="Site names or domains (case, scheme and www. do not count).")
    published_after: str | None = Field(None, description="On or after (a date covers its whole day).")
    published_before: str | None = Field(None, description="On or before (a date covers its whole day).")
    doc_ids: list[str] = Field(default_factory=list, max_length=MAX_VALUES)

    @model_validator(mode="after")
    def _check(self) -> FiltersIn:
        self.parsed()  # BadFilter is a ValueError: pydantic turns it into a 422 naming the field
        return self

    def parsed(self) -> Filters:
        return Filters.parse(self.sources, self.published_after, self.published_before, self.doc_ids)


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"question": "When did Cambodia and Pakistan establish diplomatic relations?"},
        {"question": "When did it become law?", "top_k": 5, "history": [
            {"role": "user", "content": "What is the Cambodia-Korea Free Trade Agreement?"},
            {"role": "assistant", "content": "The Cambodia-Korea Free Trade Agreement (CKFTA) became law … [1]."}]},
    ]})

    question: str = Field(description="1–4,000 characters after stripping.")
    history: list[Message] = Field(default_factory=list, max_length=MAX_HISTORY,
                                   description="Earlier turns, oldest first (at most 20).")
    top_k: int | None = Field(None, ge=1, le=20, description="Passages to retrieve.")
    filters: FiltersIn | None = Field(None, description="Answer from these articles only.")

    def parsed_filters(self) -> Filters | None:
        return self.filters.parsed() if self.filters else None

    @field_validator("question")
    @classmethod
    def _question(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("the question is empty")
        if len(value) > MAX_QUESTION_CHARS:
            raise ValueError(f"the question is longer than {MAX_QUESTION_CHARS} characters")
        return value


class Span(BaseModel):
    start: int
    end: int


class CitationOut(BaseModel):
    n: int
    doc_id: str
    title: str
    chunk_id: str
    start: int
    end: int
    text: str
    score: float
    answer_span: Span | None = None  # the answer words (a date, an amount, a name) inside ``text``
    source: str = ""
    published: str | None = None  # ISO 8601, or null when the article has no date


class AnswerResponse(BaseModel):
    answer: str
    abstained: bool
    citations: list[CitationOut]
    generator: str
    timings_ms: dict[str, float]
    standalone_question: str = ""
    abstain_reason: str = ""
    evidence_score: float = 0.0


MAX_ANSWER_CHARS = 20_000
MAX_COMMENT_CHARS = 2000
MAX_FEEDBACK_CITATIONS = 20


def _unicode_text(value: str) -> str:
    """Text SQLite can store: JSON may carry a lone surrogate (``"\\ud800"``), which is no character.

    (A string field with ``max_length`` is checked by pydantic itself; an unbounded one is not.)
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("the text holds an invalid character (a lone surrogate)") from exc
    return value


class FeedbackCitation(BaseModel):
    """A citation as /api/answer returns it; the reviewer reads ``doc_id``, ``start``, ``end`` and ``text``."""

    n: int | None = None
    doc_id: str = Field(max_length=1000)
    title: str = Field("", max_length=1000)
    chunk_id: str = Field("", max_length=1000)
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    text: str = Field(max_length=MAX_ANSWER_CHARS)
    score: float | None = None
    answer_span: Span | None = None
    source: str = Field("", max_length=1000)
    published: str | None = Field(None, max_length=100)

    @model_validator(mode="after")
    def _span(self) -> FeedbackCitation:
        if self.end < self.start:
            raise ValueError(f"citation end ({self.end}) is before its start ({self.start})")
        return self


class FeedbackRequest(BaseModel):
    """A rating of one answer, with what it answered and cited (for `rag eval --from-feedback`)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"question": "When did the CKFTA become law?", "answer": "It became law on January 29, 2022 [1].",
         "rating": -1, "comment": "It should say when it was signed, too."}]})

    question: str = Field(description="The question as asked, 1–4,000 characters.")
    answer: str = Field(max_length=MAX_ANSWER_CHARS, description="The answer rated, with its [n] markers.")
    rating: Literal[1, -1] = Field(description="1: a good answer; -1: a bad one.")
    comment: str = Field("", max_length=MAX_COMMENT_CHARS)
    citations: list[FeedbackCitation] = Field(default_factory=list, max_length=MAX_FEEDBACK_CITATIONS)
    standalone_question: str = Field("", max_length=MAX_QUESTION_CHARS)
    abstained: bool | None = Field(None, description="Whether the answer was an abstention.")

    @field_validator("question")
    @classmethod
    def _question(cls, value: str) -> str:
        return AnswerRequest._question(_unicode_text(value))

    @field_validator("answer")
    @classmethod
    def _answer(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the answer is empty")
        return value

    @field_validator("rating", mode="before")
    @classmethod
    def _rating(cls, value: Any) -> Any:
        if type(value) is not int or value not in (1, -1):  # true and 1.0 are not ratings
            raise ValueError("rating must be 1 (a good answer) or -1 (a bad answer)")
        return value

    def record(self) -> Feedback:
        return Feedback(self.question, self.answer, self.rating, self.comment,
                        tuple(c.model_dump() for c in self.citations), self.standalone_question, self.abstained)


class FeedbackCreated(BaseModel):
    id: int


MAX_UPLOAD_RECORDS = 10_000


class RecordIn(BaseModel):
    """One article in the ``.jsonl`` record shape (README "Corpus formats"); other keys are ignored."""

    id: str = Field(min_length=1, max_length=1000, description="The doc_id; an id the index holds is updated.")
    title: str = Field("", max_length=1000)
    text: str = Field(description="The article text; an empty one is skipped and reported.")
    published: str | None = Field(None, max_length=100, description="A date in any common format (stored as ISO 8601).")
    source: str | None = Field(None, max_length=1000, description="Site name, domain or URL.")
    metadata: dict[str, Any] | None = None


class RecordsUpload(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"records": [
        {"id": "harbour-bridge", "title": "Harbour bridge opens", "text": "The new harbour bridge opened on Monday.",
         "published": "2025-06-02", "source": "example.org"}]}]})

    records: list[RecordIn] = Field(min_length=1, max_length=MAX_UPLOAD_RECORDS)


class UploadedDocument(BaseModel):
    doc_id: str
    status: Literal["added", "updated", "unchanged"]


class UploadedItem(BaseModel):
    """One uploaded file (by its sanitised name) or record (``records[i]``) and what became of it."""

    name: str
    status: Literal["ingested", "partly skipped", "skipped"]
    documents: list[UploadedDocument]
    skipped: list[str] = Field(description="Why each left-out file or record was not ingested.")


class UploadReport(BaseModel):
    files: list[UploadedItem] = Field(description="One per file or record, in the order sent.")
    added: list[str]
    updated: list[str]
    unchanged: int
    skipped: int = Field(description="Files and records left out (reasons in `files`).")
    warnings: list[str] = Field(description="Articles ingested with a loss (a date that could not be read).")
    chunks_embedded: int
    documents_total: int
    chunks_total: int
    published: bool = Field(description="Whether a new index generation was published (false: nothing changed).")
    generation: str = Field(description="The generation the server answers from now.")
    seconds: float


class ChatCompletionMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list | None = None

    def text(self) -> str:
        """OpenAI message content: a string, null, or a list of parts of which the text ones count."""
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            return " ".join(str(p.get("text", "")) for p in self.content
                            if isinstance(p, dict) and p.get("type", "text") == "text")
        return ""


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"model": "rag", "messages": [{"role": "user", "content": "Where is the new Cambodian embassy?"}]}]})

    model: str = "rag"
    messages: list[ChatCompletionMessage] = Field(min_length=1, max_length=MAX_HISTORY + 2)
    stream: bool = False
    # Extra fields (OpenAI clients send them with ``extra_body``): the same as /api/answer's.
    filters: FiltersIn | None = None
    top_k: int | None = Field(None, ge=1, le=20)


def turns(messages: list[Any]) -> list[Turn]:
    """The user and assistant turns of ``Message``s or ``ChatCompletionMessage``s (others are dropped)."""
    return [Turn(m.role, m.text() if isinstance(m, ChatCompletionMessage) else m.content)
            for m in messages if m.role in ("user", "assistant")]
