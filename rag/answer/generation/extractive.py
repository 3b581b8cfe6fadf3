"""The offline default: quotes the sentences that answer best, each with its [n] marker.

It adds no words of its own, so it cannot invent a fact: every sentence of its answer is a
sentence of an article.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from rag.answer.citations import with_markers
from rag.answer.evidence import Sentence
from rag.answer.generation import AnswerContext
from rag.text import content_terms

_BULLET = re.compile(r"^[\s•·\-*–—\d.)]+(?=\w)")


class ExtractiveGenerator:
    """Picks 1–``max_sentences`` sentences from the evidence ranking.

    Args:
        max_sentences: the most sentences in an answer.
        keep_ratio: a further sentence must score at least this share of the best one.
    """

    name = "extractive"

    def __init__(self, max_sentences: int = 3, keep_ratio: float = 0.9):
        self.max_sentences, self.keep_ratio = max_sentences, keep_ratio

    def select(self, ctx: AnswerContext) -> list[Sentence]:
        ranked = ctx.evidence.sentences if ctx.evidence else []
        if not ranked:
            return []
        chosen = [ranked[0]]
        seen_terms = set(content_terms(ranked[0].text))
        for s in ranked[1:]:
            if len(chosen) >= self.max_sentences or s.score < self.keep_ratio * ranked[0].score:
                break
            terms = set(content_terms(s.text))
            if terms and len(terms & seen_terms) / len(terms) > 0.7:  # says nothing new
                continue
            chosen.append(s)
            seen_terms |= terms
        return chosen

    def generate(self, ctx: AnswerContext) -> str:
        return " ".join(with_markers(_BULLET.sub("", s.text).strip(), [s.passage + 1]) for s in self.select(ctx))

    def stream(self, ctx: AnswerContext) -> Iterator[str]:
        yield from re.findall(r"\S+\s*", self.generate(ctx))

    def complete(self, messages: list[dict[str, str]], max_tokens: int) -> str:
        raise NotImplementedError("the extractive generator does not write free text")
