"""Answer generators: turn a question and numbered passages into a draft with [n] markers.

Drafts are never shown as they are: ``rag.answer.citations.CitationVerifier`` checks every one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from rag.answer.evidence import Evidence
from rag.errors import UserError
from rag.records import Passage, Turn


@dataclass(frozen=True)
class AnswerContext:
    """Everything a generator may use. ``passages`` are numbered from 1 in this order."""

    question: str
    passages: list[Passage]
    history: list[Turn] = field(default_factory=list)
    evidence: Evidence | None = None


class GeneratorUnavailable(UserError, RuntimeError):
    """The backend cannot be reached or loaded; the message says which and how to fix it."""


class PromptTooLong(GeneratorUnavailable):
    """The prompt does not fit the model's context window even with the history cut: a 413 over HTTP."""


class Generator(Protocol):
    name: str

    def generate(self, ctx: AnswerContext) -> str:
        """The whole draft."""

    def stream(self, ctx: AnswerContext) -> Iterator[str]:
        """The draft in pieces, as they are produced."""

    def complete(self, messages: list[dict[str, str]], max_tokens: int) -> str:
        """A plain chat completion (used to condense follow-up questions); may raise NotImplementedError."""
