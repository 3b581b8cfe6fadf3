"""Checks a generated answer against its passages: markers resolve, spans are exact, claims are supported.

Every generator's draft goes through ``verify``: markers that point at no passage are removed,
sentences whose claim is not supported by the passage they cite are dropped, citations are
renumbered 1..n in order of first use, and each citation carries the exact document span (the
best-supporting sentence of the cited passage) so ``document.text[start:end] == citation.text``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from rag.embedding.model import Embedder
from rag.records import Citation, Passage
from rag.text import MARKER, STOPWORDS, content_terms, entities, numbers, split_sentences, term_coverage, words

MIN_CLAIM_WORDS = 4
_TRAILING_PUNCT = re.compile(r"([.!?…]+[\"'”’)]*)$")


class DocSentence(NamedTuple):
    """A sentence of a cited passage, in document offsets."""

    start: int
    end: int
    text: str


class Support(NamedTuple):
    """How well a passage sentence supports a claim: 0.5 · coverage + 0.5 · cosine, and the coverage alone."""

    start: int
    end: int
    support: float
    coverage: float


@dataclass(frozen=True)
class Claim:
    text: str  # the sentence without its markers
    markers: list[int]  # as written by the generator (1-based, may be invalid)


def parse_claims(draft: str) -> list[Claim]:
    """Split a draft into sentences with their markers; a markers-only fragment joins the sentence before.

    Example:
        >>> parse_claims("Ties began in 1952. [1] Trade is $53 million [2][9].")
        [Claim(text='Ties began in 1952.', markers=[1]), Claim(text='Trade is $53 million.', markers=[2, 9])]
    """
    claims: list[Claim] = []
    # "…in 1952. [1] Trade…" → "…in 1952 [1]. Trade…": markers belong to the sentence before them.
    draft = re.sub(r"([.!?…])((?:\s*\[\d{1,3}(?:\s*[,;]\s*\d{1,3})*\])+)", lambda m: m.group(2) + m.group(1), draft)
    for s, e in split_sentences(draft):
        piece = draft[s:e]
        markers = [int(n) for group in MARKER.findall(piece) for n in re.split(r"[,;]", group)]
        text = re.sub(r"\s+([.!?,;:])", r"\1", MARKER.sub("", piece)).strip()
        text = re.sub(r"\s{2,}", " ", text)
        if not re.search(r"\w", text):
            if claims:
                claims[-1] = Claim(claims[-1].text, claims[-1].markers + markers)
            continue
        claims.append(Claim(text, markers))
    return claims


def with_markers(text: str, numbers_: list[int]) -> str:
    """Put markers before the sentence's closing punctuation: ``in 1952 [1].``"""
    if not numbers_:
        return text
    tags = "".join(f"[{n}]" for n in numbers_)
    m = _TRAILING_PUNCT.search(text)
    return f"{text[:m.start()]} {tags}{m.group(1)}" if m else f"{text} {tags}"


class CitationVerifier:
    """Support = 0.5 · term coverage + 0.5 · cosine of the claim against a passage sentence.

    A claim is kept when its best sentence in a cited passage has support ≥ ``threshold`` and covers
    at least ``min_coverage`` of the claim's content words (a fluent paraphrase that adds facts of
    its own fails the second test). A claim rests only on a sentence that states the same facts
    (``same_facts``: negation, numbers, names). Each citation is one supporting sentence, so its span
    is as narrow as the evidence.
    """

    def __init__(self, embedder: Embedder, threshold: float = 0.7, min_coverage: float = 0.6,
                 vectors: Callable[[list[str]], np.ndarray] | None = None):
        self.embedder, self.threshold, self.min_coverage = embedder, threshold, min_coverage
        self._encode = vectors or embedder.encode

    def verify(self, draft: str, passages: list[Passage], quote_shortcut: bool = True) -> tuple[str, list[Citation]]:
        """Returns the checked answer text and its citations ("" and [] when nothing is supported).

        With ``quote_shortcut`` a draft made only of verbatim quotes is checked without embedding; without
        it every claim is checked alike, so the verified text of a draft's first sentences is a prefix of
        the verified text of the whole draft (what sentence-by-sentence streaming relies on).
        """
        claims = parse_claims(draft)
        if not claims or not passages:
            return "", []
        spans = [[DocSentence(p.start + s, p.start + e, p.text[s:e]) for s, e in split_sentences(p.text)]
                 for p in passages]
        if quote_shortcut and all(self._quoted(claim, passages) for claim in claims):
            claim_vecs, sentence_vecs = self._quote_vectors(claims, spans)
        else:
            claim_vecs, sentence_vecs = self._vectors(claims, spans)
        renumber: dict[tuple[int, int, int], int] = {}  # (passage, sentence start, end) -> new n
        kept_sentences: list[str] = []
        seen: set[str] = set()
        for ci, claim in enumerate(claims):
            # "1." or "Tourism and Cultural Exchange": list numbering and headings state nothing.
            if len(words(claim.text)) < MIN_CLAIM_WORDS or claim.text in seen:
                continue
            seen.add(claim.text)
            valid = [n for n in dict.fromkeys(claim.markers) if 1 <= n <= len(passages)]
            candidates = valid or list(range(1, len(passages) + 1))
            supported: list[tuple[int, Support]] = []
            for n in candidates:
                best = self._best_sentence(claim, claim_vecs[ci], spans[n - 1], sentence_vecs[n - 1],
                                           passages[n - 1].title)
                if best is not None and best.support >= self.threshold and best.coverage >= self.min_coverage:
                    supported.append((n, best))
            if not valid and supported:  # an unmarked claim: attach its single best source
                supported = [max(supported, key=lambda item: item[1].support)]
            if not supported:
                continue
            new_numbers = []
            for n, best in supported:
                key = (n, best.start, best.end)
                renumber.setdefault(key, len(renumber) + 1)
                new_numbers.append(renumber[key])
            kept_sentences.append(with_markers(claim.text, list(dict.fromkeys(new_numbers))))
        citations = [Citation.of(new_n, passages[n - 1], start, end) for (n, start, end), new_n in renumber.items()]
        return " ".join(kept_sentences), sorted(citations, key=lambda c: c.n)

    @staticmethod
    def _quoted(claim: Claim, passages: list[Passage]) -> bool:
        return any(1 <= n <= len(passages) and claim.text.rstrip(".!?") in passages[n - 1].text
                   for n in claim.markers)

    @staticmethod
    def _quote_vectors(claims: list[Claim], spans: list[list[DocSentence]]):
        """Verbatim quotes need no embedding: a quote supports itself (cosine 1), nothing else counts."""
        claim_vecs = np.eye(len(claims), dtype=np.float32)
        per_passage = []
        for ss in spans:
            vecs = np.zeros((len(ss), len(claims)), dtype=np.float32)
            for row, sentence in enumerate(ss):
                for ci, claim in enumerate(claims):
                    if claim.text.rstrip(".!?") in sentence.text:
                        vecs[row, ci] = 1.0
            per_passage.append(vecs)
        return claim_vecs, per_passage

    def _vectors(self, claims: list[Claim], spans: list[list[DocSentence]]):
        texts = [c.text for c in claims] + [s.text for ss in spans for s in ss]
        vecs = self._encode(texts) if texts else np.zeros((0, 1))
        claim_vecs, rest = vecs[:len(claims)], vecs[len(claims):]
        per_passage, offset = [], 0
        for ss in spans:
            per_passage.append(rest[offset:offset + len(ss)])
            offset += len(ss)
        return claim_vecs, per_passage

    @staticmethod
    def _best_sentence(claim: Claim, claim_vec: np.ndarray, sentences: list[DocSentence], vectors: np.ndarray,
                       title: str) -> Support | None:
        """The passage sentence that supports the claim best, among those that state the same facts."""
        terms = content_terms(claim.text)
        best = None
        for sentence, vec in zip(sentences, vectors):
            if not same_facts(claim.text, sentence.text, title):
                continue
            coverage = term_coverage(terms, set(content_terms(sentence.text)))
            support = 0.5 * coverage + 0.5 * float(vec @ claim_vec)
            if best is None or support > best.support:
                best = Support(sentence.start, sentence.end, support, coverage)
        return best


_NEGATION = re.compile(r"\b(?:not|no|never|neither|nor|none|nobody|nothing|without|cannot)\b|n[’']t\b", re.I)


def negated(text: str) -> bool:
    """Whether a sentence denies something ("did not resign", "wasn't", "no longer").

    Example:
        >>> negated("He did not resign."), negated("He resigned."), negated("It wasn't cheap.")
        (True, False, True)
    """
    return _NEGATION.search(text) is not None


def same_facts(claim: str, sentence: str, title: str = "") -> bool:
    """A claim can rest on a sentence only if both affirm or both deny, and every number and name of the
    claim is in that very sentence (a name may also come from the article's title: "It opened…").

    Example:
        >>> same_facts("Smith did not resign.", "Smith resigned in May.")
        False
        >>> same_facts("Trade reached $60 million.", "Trade reached $53 million in 2023.")
        False
        >>> same_facts("Jones opened the embassy.", "Smith opened the embassy.")
        False
        >>> same_facts("Smith opened the embassy in 2024.", "In 2024 Smith opened the embassy.")
        True
    """
    if negated(claim) != negated(sentence):
        return False
    if not numbers(claim) <= numbers(sentence):
        return False
    known = set(content_terms(sentence)) | set(content_terms(title))
    return all(set(content_terms(name)) <= known for name in _names(claim))


def _names(claim: str) -> list[str]:
    """The claim's names, its first word too when capitalised and not a common word ("Gillani opened…")."""
    first = re.match(r"[A-Z][\w’'\-]+", claim)
    lead = [first.group(0)] if first and first.group(0).lower() not in STOPWORDS \
        and not first.group(0).lower().endswith(("ing", "ly")) else []
    return lead + entities(claim)
