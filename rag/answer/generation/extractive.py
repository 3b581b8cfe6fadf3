"""The offline default: quotes the sentences that answer best, each with its [n] marker.

It adds no words of its own, so it cannot invent a fact: every sentence of its answer is a
sentence of an article.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from rag.answer.citations import with_markers
from rag.answer.evidence import TYPED, Sentence
from rag.answer.generation import AnswerContext
from rag.filters import published_timestamp
from rag.text import content_terms

_BULLET = re.compile(r"^[\s•·\-*–—\d.)]+(?=\w)")


_NUMBER = re.compile(r"\d[\d.,]*%?")


def _answer_words(s: Sentence) -> str:
    return s.text[s.answer_span[0] - s.start:s.answer_span[1] - s.start].lower() if s.answer_span else ""


def _says_otherwise(first: Sentence, other: Sentence) -> bool:
    """Whether ``other`` gives another answer than ``first``: other answer words, other numbers, or mostly
    other words ("4.5%" then "4.75%": the same sentence but for the fact that changed)."""
    if _answer_words(first) and _answer_words(other):
        return _answer_words(first) != _answer_words(other)
    if set(_NUMBER.findall(first.text)) != set(_NUMBER.findall(other.text)):
        return True
    terms, seen = set(content_terms(other.text)), set(content_terms(first.text))
    return bool(terms) and len(terms & seen) / len(terms) <= 0.7


class ExtractiveGenerator:
    """Quotes the best sentence first, then further ones only when they add to the answer.

    A date, amount or name question whose best sentence holds the answer words gets that sentence
    alone; other questions (lists, two-article questions, "what/why") may get further sentences that
    also answer (score ≥ ``min_score`` and ≥ ``keep_ratio`` of the best) and say something new,
    whichever passage they come from.

    Args:
        max_sentences: the most sentences in an answer.
        keep_ratio: a further sentence must score at least this share of the best one.
        min_score: a further sentence must itself clear the abstention threshold.
    """

    name = "extractive"

    def __init__(self, max_sentences: int = 3, keep_ratio: float = 0.9, min_score: float = 0.0):
        self.max_sentences, self.keep_ratio, self.min_score = max_sentences, keep_ratio, min_score

    def select(self, ctx: AnswerContext) -> list[Sentence]:
        ranked = ctx.evidence.sentences if ctx.evidence else []
        if not ranked:
            return []
        chosen = [ranked[0]]
        if ctx.evidence.newest_first:
            return chosen + self._older_account(ctx, ranked)
        if ctx.evidence.kind in TYPED and ranked[0].answer_span:
            return chosen
        seen_terms = set(content_terms(ranked[0].text))
        floor = max(self.min_score, self.keep_ratio * ranked[0].score)
        for s in ranked[1:]:
            if len(chosen) >= self.max_sentences or s.score < floor:
                break
            terms = set(content_terms(s.text))
            if terms and len(terms & seen_terms) / len(terms) > 0.7:  # says nothing new
                continue
            chosen.append(s)
            seen_terms |= terms
        return chosen

    def _older_account(self, ctx: AnswerContext, ranked: list[Sentence]) -> list[Sentence]:
        """For a "latest" question (newest sentence first): the best answering sentence of an older
        article, if one says something else, so that an answer that changed over time cites both."""
        first = ctx.passages[ranked[0].passage]
        newest = published_timestamp(first.published)
        floor = max(self.min_score, self.keep_ratio * max(s.score for s in ranked))
        for s in ranked[1:]:
            passage = ctx.passages[s.passage]
            older = published_timestamp(passage.published)
            if s.score < floor or passage.doc_id == first.doc_id or older is None or newest is None or older >= newest:
                continue
            if _says_otherwise(ranked[0], s):
                return [s]
        return []

    def generate(self, ctx: AnswerContext) -> str:
        return " ".join(with_markers(_BULLET.sub("", s.text).strip(), [s.passage + 1]) for s in self.select(ctx))

    def stream(self, ctx: AnswerContext) -> Iterator[str]:
        yield from re.findall(r"\S+\s*", self.generate(ctx))

    def complete(self, messages: list[dict[str, str]], max_tokens: int) -> str:
        raise NotImplementedError("the extractive generator does not write free text")
