"""Sentence-level evidence: which sentences of the retrieved passages answer the question, and how well.

Shared by the abstention decision (is anything here good enough?) and the extractive generator
(which sentences to quote), so both see the same numbers. Two stages:

1. a cheap prefilter ranks every sentence (idf-weighted question-term coverage, answer type, cosine:
   its own for the best ``embed_top``, its passage's for the rest);
2. the answer selector (``rag.answer.selector``), a cross-encoder trained on SQuAD then BBC news, reads the best
   ``candidates`` with their title and the sentence before, and gives P(this sentence answers).
   The score is ``selector_weight`` · P + the rest · the prefilter's score, halved for a date,
   amount or name question when the sentence holds none: it orders the answer and decides abstention.
   (P alone reads news lead sentences as answers too readily: measured in eval/CALIBRATION.md.)

Without a selector (``RAG_ANSWER_SELECTOR=false``) the prefilter's score stands in, as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from rag.answer.answer_span import answer_span
from rag.answer.selector import AnswerSelector, Candidate
from rag.embedding.cache import VectorCache
from rag.records import Passage
from rag.text import COUNT_WORDS, content_terms, entities, is_answer_like, numbers, sentence_head, split_sentences

_YEAR_OR_DATE = re.compile(r"\b(1[89]\d\d|20\d\d)\b|\b(January|February|March|April|May|June|July|August|"
                           r"September|October|November|December)\b")
_QUANTITY = re.compile(r"\d")
WEIGHTS = {"cosine": 0.5, "coverage": 0.35, "type": 0.15}
CONTEXT_CREDIT = 0.5  # a term found only in the sentence before, or the title, half counts
EMBED_TOP = 8
CANDIDATES = 3
SELECTOR_WEIGHT = 0.5
STRICT_TYPES = {"date", "quantity"}
STRICT_TYPE_PENALTY = 0.7
TYPED = {"date", "quantity", "person", "place"}  # questions answered by a date, an amount or a name
TYPE_PENALTY = 0.5  # measured on eval/news_dev.jsonl: 0.5 and 0.3 alike, both better than none


@dataclass(frozen=True)
class Sentence:
    """A candidate sentence: ``passage`` is its 0-based passage index; offsets are document offsets.

    ``score`` is the selector's P(answers) (the prefilter's score without a selector); ``answer_span``
    the document offsets of the answer words inside it, when the question's type can tell them.
    """

    passage: int
    start: int
    end: int
    text: str
    cosine: float
    coverage: float
    type_match: float
    prefilter: float
    score: float
    answer_span: tuple[int, int] | None = None


@dataclass(frozen=True)
class Evidence:
    sentences: list[Sentence]  # best first
    missing_entities: list[str]  # question names found in no retrieved passage
    kind: str | None = None  # the question's answer type (date, quantity, person, place)
    newest_first: bool = False  # a "latest" question: sentences near the best are ordered newest first

    @property
    def best(self) -> float:
        return self.sentences[0].score if self.sentences else 0.0


class _Rough(NamedTuple):
    """A sentence after the cheap pass: its passage's cosine stands in for its own."""

    score: float
    passage: int
    start: int  # offsets within the passage text
    end: int
    text: str
    prev: str
    coverage: float
    type_match: float


def _absent(name: str, seen: set[str]) -> bool:
    """A name of the question that the passages lack: some word of it is in none of them ("FIFA World
    Cup"). Measured on news_dev: counting a name present when any one of its words is made no difference."""
    terms = set(content_terms(name))
    return bool(terms) and not terms <= seen


_ASKS = {"date": re.compile(r"\b(when|what year|which year|what date|since when|how old|older|oldest|newer|newest)\b"),
         "quantity": re.compile(r"\b(how many|how much|what percentage|what share|what amount|how large|how big|"
                                r"what value)\b"),
         "person": re.compile(r"\bwho\b"),
         "place": re.compile(r"\bwhere\b")}


# Where a main clause's question word stands: the start (after a preposition: "In which year"), or after a
# comma or colon ("Of the MPs who rebelled, how many were Labour?").
_CLAUSE_START = re.compile(r"(?:^|[,;:]\s*)(?:(?:in|on|at|by|for|from|of|since|to|during|until|and|so)\s+)?$")


def answer_type(question: str) -> str | None:
    """What kind of words answer the question. The question word of the main clause decides, since a
    clause inside the question asks nothing ("How many papers were found when police returned?" wants a
    number); with none at a clause start, the first kind found in the order date, amount, person, place.

    Example:
        >>> answer_type("Who was president when it called for new powers?")
        'person'
    """
    q = question.lower()
    found = [(m.start(), kind) for kind, pattern in _ASKS.items() for m in pattern.finditer(q)]
    leading = [(at, kind) for at, kind in found if _CLAUSE_START.search(q[:at])]
    if leading:
        return min(leading)[1]
    kinds = {kind for _, kind in found}
    return next((kind for kind in _ASKS if kind in kinds), None)


def _type_match(kind: str | None, sentence: str, question: str) -> float:
    if kind == "date":
        return float(bool(_YEAR_OR_DATE.search(sentence)))
    if kind == "quantity":
        return float(bool(_QUANTITY.search(sentence) or COUNT_WORDS.search(sentence)))
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


def _once(rough: list[_Rough], passages: list[Passage]) -> list[_Rough]:
    """Each stretch of an article once: chunks overlap, so a sentence near a chunk edge comes back twice
    (or cut short at the next chunk's start), and two copies would take two of the selector's few seats.
    Of copies, the whole sentence wins, then the one read with the longer sentence before (a chunk may start
    mid-sentence), then the better passage."""
    def span(r: _Rough) -> tuple[str, int, int]:
        return passages[r.passage].doc_id, passages[r.passage].start + r.start, passages[r.passage].start + r.end

    preferred = sorted(rough, key=lambda r: (-(r.end - r.start), -len(r.prev), r.passage, r.start))
    kept: dict[str, list[tuple[int, int]]] = {}
    out = []
    for r in preferred:
        doc, start, end = span(r)
        if any(s <= start and end <= e for s, e in kept.get(doc, [])):
            continue
        kept.setdefault(doc, []).append((start, end))
        out.append(r)
    return out


class EvidenceScorer:
    """Scores the sentences of retrieved passages against a question.

    Args:
        cache: sentence vectors (stored at ingest, else embedded): the same passages come back often.
        selector: the trained answer selector; None keeps the prefilter's hand-weighted score.
        idf: term weights for coverage (the index's BM25 idf).
        embed_top: sentences that get their own cosine in the prefilter.
        candidates: sentences the selector reads (its cost: ~2-3 ms each on one core).
        selector_weight: the selector's share of a sentence's score; the prefilter's hand-weighted score
            has the rest (0.5 measured best on eval/news_dev.jsonl, see eval/CALIBRATION.md).
    """

    def __init__(self, cache: VectorCache, selector: AnswerSelector | None = None,
                 idf: Callable[[str], float] | None = None, embed_top: int = EMBED_TOP, candidates: int = CANDIDATES,
                 selector_weight: float = SELECTOR_WEIGHT):
        self.cache, self.selector, self.embed_top, self.candidates = cache, selector, embed_top, candidates
        self.selector_weight = selector_weight
        self.idf = idf or (lambda term: 1.0)

    def score(self, question: str, qvec: np.ndarray, passages: list[Passage]) -> Evidence:
        kind = answer_type(question)
        rough, missing = self._prefilter(question, kind, passages)
        top = rough[:self.embed_top]
        cosines = self.cache.vectors([sentence_head(r.text) for r in top]) @ qvec if top else []
        ranked = sorted(((_combine(float(cos), r.coverage, r.type_match, kind), float(cos), r)
                         for cos, r in zip(cosines, top)), key=lambda x: (-x[0], x[2].passage, x[2].start))
        pool = ranked[:self.candidates] if self.selector else ranked
        if self.selector:
            probs = self.selector.probabilities(
                question, [Candidate(r.text, passages[r.passage].title, r.prev) for _, _, r in pool])
        else:
            probs = [round(pre, 4) for pre, _, _ in pool]
        found = []
        for (pre, cos, r), p in zip(pool, probs):
            offset = passages[r.passage].start + r.start
            span = answer_span(kind, question, r.text)
            if self.selector:
                p = self.selector_weight * p + (1 - self.selector_weight) * pre
                # A date, amount or name question is not answered by a sentence without one.
                p = round(p * TYPE_PENALTY if kind in TYPED and span is None else p, 4)
            found.append(Sentence(r.passage, offset, passages[r.passage].start + r.end, r.text, cos, r.coverage,
                                  r.type_match, round(pre, 4), p,
                                  (offset + span[0], offset + span[1]) if span else None))
        found.sort(key=lambda s: (-s.score, s.passage, s.start))
        return Evidence(found, missing, kind)

    def _prefilter(self, question: str, kind: str | None, passages: list[Passage]) -> tuple[list[_Rough], list[str]]:
        """Every answer-like sentence, ranked cheaply; and the question's names and numbers no passage has."""
        q_terms = list(dict.fromkeys(content_terms(question)))
        weights = {t: self.idf(t) for t in q_terms}
        rough: list[_Rough] = []
        seen_terms: set[str] = set()
        for i, p in enumerate(passages):
            title = set(content_terms(p.title))
            seen_terms |= title
            context, prev = title, ""
            for s, e in split_sentences(p.text):
                text = p.text[s:e]
                terms = set(content_terms(text))
                seen_terms |= terms
                if is_answer_like(text):
                    cov = _coverage(q_terms, terms, context, weights)
                    tm = _type_match(kind, text, question)
                    rough.append(_Rough(_combine(p.score, cov, tm, kind), i, s, e, text, prev, cov, tm))
                context, prev = terms | title, text  # the sentence before, and the title, give half credit
        rough = _once(rough, passages)
        rough.sort(key=lambda r: (-r.score, r.passage, r.start))
        missing = [e for e in entities(question) if _absent(e, seen_terms)]
        passage_numbers = set().union(*(numbers(p.text) for p in passages)) if passages else set()
        missing += sorted(numbers(question) - passage_numbers)
        return rough, missing
