"""Small text helpers shared by answer selection, citation checks and follow-up rewriting."""

from __future__ import annotations

import re
from functools import lru_cache

import Stemmer
from bm25s.stopwords import STOPWORDS_EN_PLUS

# Question scaffolding carries no evidence: a sentence need not contain "what" or "did".
QUESTION_WORDS = {"what", "which", "who", "whom", "whose", "when", "where", "why", "how", "many", "much",
                  "does", "did", "do", "is", "are", "was", "were", "has", "have", "had", "can", "could",
                  "will", "would", "should", "may", "might", "tell", "me", "please", "about", "according",
                  "article", "articles", "say", "says", "said", "mention", "mentioned", "describe", "explain",
                  "give", "list", "name", "kind", "type", "year", "date", "time"}
STOPWORDS = set(STOPWORDS_EN_PLUS) | QUESTION_WORDS
_WORD = re.compile(r"(?u)\b\w\w+\b")  # bm25s's token pattern, so idf lookups line up
_NUMBER = re.compile(r"\d[\d,.]*")
_ENTITY = re.compile(r"\b[A-Z][\w’'\-]*(?:\s+(?:of\s+|the\s+)?[A-Z][\w’'\-]*)*")


@lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("english")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def content_terms(text: str) -> list[str]:
    """Stemmed non-stopword terms, in order.

    Example:
        >>> content_terms("When did the Free Trade Agreement become law?")
        ['free', 'trade', 'agreement', 'becom', 'law']
    """
    kept = [w for w in words(text) if w and w not in STOPWORDS]
    return [_stemmer().stemWord(w) for w in kept]


def numbers(text: str) -> set[str]:
    """Numbers as written, without thousands separators or a trailing full stop."""
    return {n.rstrip(".,").replace(",", "") for n in _NUMBER.findall(text)}


def entities(text: str) -> list[str]:
    """Capitalised spans that are not just the first word of a sentence."""
    found = []
    for m in _ENTITY.finditer(text):
        span = m.group(0)
        sentence_start = m.start() == 0 or text[:m.start()].rstrip()[-1:] in {".", "?", "!", ":", "\n", ""}
        if sentence_start:  # "Besides", "Which": capitalised by position, not by being a name
            first, _, rest = span.partition(" ")
            if not rest:
                continue
            span = rest if first.lower() in STOPWORDS or first.lower().endswith("ing") else span
        if span.lower() in STOPWORDS:
            continue
        found.append(span)
    return found


def term_coverage(query_terms: list[str], text_terms: set[str], weights: dict[str, float] | None = None) -> float:
    """Weighted share of query terms present in the text (0..1)."""
    if not query_terms:
        return 0.0
    weights = weights or {}
    total = sum(weights.get(t, 1.0) for t in query_terms)
    return sum(weights.get(t, 1.0) for t in query_terms if t in text_terms) / total
