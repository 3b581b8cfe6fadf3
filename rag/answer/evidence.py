"""Sentence-level evidence: which sentences of the retrieved passages answer the question, and how well.

Shared by the abstention decision (is anything here good enough?) and the extractive generator
(which sentences to quote), so both see the same numbers. Every sentence is first scored cheaply
(term coverage, answer type, its passage's cosine); only the best few are embedded, which keeps a
question's cost at one small batch instead of one vector per sentence of every passage.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from rag.embedding.cache import VectorCache
from rag.records import Passage
from rag.text import content_terms, entities, is_answer_like, numbers, sentence_head, split_sentences

_YEAR_OR_DATE = re.compile(r"\b(1[89]\d\d|20\d\d)\b|\b(January|February|March|April|May|June|July|August|"
                           r"September|October|November|December)\b")
_QUANTITY = re.compile(r"\d")
WEIGHTS = {"cosine": 0.5, "coverage": 0.35, "type": 0.15}
CONTEXT_CREDIT = 0.5  # a term found only in the sentence before, or the title, half counts
EMBED_TOP = 3
STRICT_TYPES = {"date", "quantity"}
STRICT_TYPE_PENALTY = 0.7


@dataclass(frozen=True)
class Sentence:
    """A candidate sentence: ``passage`` is its 0-based passage index; offsets are document offsets."""

    passage: int
    start: int
    end: int
    text: str
    cosine: float
    coverage: float
    type_match: float
    score: float


@dataclass(frozen=True)
class Evidence:
    sentences: list[Sentence]  # best first
    missing_entities: list[str]  # question names found in no retrieved passage

    @property
    def best(self) -> float:
        return self.sentences[0].score if self.sentences else 0.0


def answer_type(question: str) -> str | None:
    q = question.lower()
    if re.search(r"\b(when|what year|which year|what date|since when|how old|older|oldest|newer|newest)\b", q):
        return "date"
    if re.search(r"\b(how many|how much|what percentage|what share|what amount|how large|how big|what value)\b", q):
        return "quantity"
    if re.search(r"\bwho\b", q):
        return "person"
    if re.search(r"\bwhere\b", q):
        return "place"
    return None


def _type_match(kind: str | None, sentence: str, question: str) -> float:
    if kind == "date":
        return float(bool(_YEAR_OR_DATE.search(sentence)))
    if kind == "quantity":
        return float(bool(_QUANTITY.search(sentence)))
    if kind in {"person", "place"}:
        asked = {w.lower() for e in entities(question) for w in e.split()}
        return float(any(w.lower() not in asked for e in entities(sentence) for w in e.split()))
    return 0.0


def _coverage(q_terms: list[str], terms: set[str], context: set[str], weights: dict[str, float]) -> float:
    """idf-weighted share of question terms in the sentence (half credit for nearby context)."""
    total = sum(weights[t] for t in q_terms)
    if not total:
        return 0.0
    got = sum(weights[t] * (1.0 if t in terms else CONTEXT_CREDIT if t in context else 0.0) for t in q_terms)
    return got / total


def _combine(cosine: float, coverage: float, type_match: float, kind: str | None) -> float:
    score = WEIGHTS["cosine"] * cosine + WEIGHTS["coverage"] * coverage
    if kind is None:
        return score / (1 - WEIGHTS["type"])
    score += WEIGHTS["type"] * type_match
    # A "when" or "how many" question is not answered by a sentence without a date or a number.
    return score * STRICT_TYPE_PENALTY if kind in STRICT_TYPES and not type_match else score


class _Stemmed(NamedTuple):
    """A sentence of a passage (passage offsets) with its stemmed content terms."""

    start: int
    end: int
    text: str
    terms: set[str]


class _PassageTerms(NamedTuple):
    title: set[str]
    sentences: list[_Stemmed]


class _Rough(NamedTuple):
    """A candidate sentence scored with its passage's cosine standing in for its own."""

    score: float
    passage: int
    start: int
    end: int
    text: str
    coverage: float
    type_match: float


def _stem(passage: Passage) -> _PassageTerms:
    """Stem every sentence once; the passage-level sets are unions of these."""
    sentences = [_Stemmed(a, b, passage.text[a:b], set(content_terms(passage.text[a:b])))
                 for a, b in split_sentences(passage.text)]
    return _PassageTerms(set(content_terms(passage.title)), sentences)


def _missing(question: str, passages: list[Passage], stemmed: list[_PassageTerms]) -> list[str]:
    """Names and numbers of the question that no retrieved passage mentions."""
    passage_terms = set().union(*(t.title | set().union(*(s.terms for s in t.sentences)) for t in stemmed)) \
        if stemmed else set()
    missing = [e for e in entities(question) if not set(content_terms(e)) <= passage_terms]
    passage_numbers = set().union(*(numbers(p.text) for p in passages)) if passages else set()
    return missing + sorted(numbers(question) - passage_numbers)


class EvidenceScorer:
    """Scores the sentences of retrieved passages against a question.

    Sentence vectors come from a shared ``VectorCache``: the same passages come back often.

    Args:
        cache: sentence vectors (stored ones from ingest first).
        idf: weight of a stemmed question term (the index's BM25 idf); all 1.0 without it.
        embed_top: how many of the best rough candidates are scored with their own vector.
    """

    def __init__(self, cache: VectorCache, idf: Callable[[str], float] | None = None, embed_top: int = EMBED_TOP):
        self.cache, self.embed_top = cache, embed_top
        self.idf = idf or (lambda term: 1.0)

    def score(self, question: str, qvec: np.ndarray, passages: list[Passage]) -> Evidence:
        stemmed = [_stem(p) for p in passages]
        rough = sorted(self._rough(question, passages, stemmed), key=lambda r: (-r.score, r.passage, r.start))
        top = rough[:self.embed_top]
        cosines = list(self.cache.vectors([sentence_head(r.text) for r in top]) @ qvec) if top else []
        # Beyond the embedded few, a sentence's cosine is its passage's (no model call).
        cosines += [passages[r.passage].score for r in rough[len(top):]]
        kind = answer_type(question)
        found = [Sentence(r.passage, passages[r.passage].start + r.start, passages[r.passage].start + r.end, r.text,
                          float(cos), r.coverage, r.type_match,
                          round(_combine(float(cos), r.coverage, r.type_match, kind), 4))
                 for r, cos in zip(rough, cosines)]
        found.sort(key=lambda s: (-s.score, s.passage, s.start))
        return Evidence(found, _missing(question, passages, stemmed))

    def _rough(self, question: str, passages: list[Passage], stemmed: list[_PassageTerms]) -> list[_Rough]:
        """Every answer-like sentence, scored without a model call."""
        q_terms = list(dict.fromkeys(content_terms(question)))
        weights = {t: self.idf(t) for t in q_terms}
        kind = answer_type(question)
        rough = []
        for i, (p, (title, sentences)) in enumerate(zip(passages, stemmed)):
            context = title
            for s in sentences:
                if is_answer_like(s.text):
                    cov = _coverage(q_terms, s.terms, context, weights)
                    tm = _type_match(kind, s.text, question)
                    rough.append(_Rough(_combine(p.score, cov, tm, kind), i, s.start, s.end, s.text, cov, tm))
                context = s.terms | title  # the sentence before, and the title, give half credit
        return rough
