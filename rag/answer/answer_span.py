"""The exact answer words inside a selected sentence, when the question's type says what to look for."""

from __future__ import annotations

import re

from rag.text import COUNT_WORDS, content_terms, entities

_MONTH = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
_DATE = re.compile(rf"\b(?:\d{{1,2}}\s+{_MONTH}(?:\s+\d{{4}})?|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?|"
                   rf"{_MONTH}\s+\d{{4}}|(?:1[89]|20)\d\d)\b")
_AMOUNT = re.compile(r"(?P<sign>[$£€¥]\s?)?(?P<number>\d[\d,.]*\d|\d)"
                     r"(?P<unit>\s?(?:%|per\s?cent\b|percent\b|bn\b|billion\b|million\b|m\b|thousand\b|trillion\b))?", re.I)


def _quantity(sentence: str, question: str) -> tuple[int, int] | None:
    """The first amount the question does not already state, with its currency sign and unit word; a
    count in words ("three fans") only when the sentence states no amount in figures."""
    asked = {n.rstrip(".,") for n in re.findall(r"\d[\d,.]*", question)}
    for m in _AMOUNT.finditer(sentence):
        number = m.group("number").rstrip(".,")
        if number in asked or (re.fullmatch(r"(?:1[89]|20)\d\d", number) and not m.group("sign")):
            continue  # a year is not an amount
        end = m.end() if m.group("unit") else m.start("number") + len(number)
        return m.start(), end
    asked_words = {w.lower() for w in COUNT_WORDS.findall(question)}
    for m in COUNT_WORDS.finditer(sentence):
        if m.group(0).lower() not in asked_words:
            return m.start(), m.end()
    return None


def _entity(sentence: str, question: str) -> tuple[int, int] | None:
    asked = set(content_terms(question))
    for name in entities(sentence):
        if not set(content_terms(name)) <= asked:
            at = sentence.find(name)
            if at >= 0:
                return at, at + len(name)
    return None


def answer_span(kind: str | None, question: str, sentence: str) -> tuple[int, int] | None:
    """Offsets (within ``sentence``) of the words that answer a date, quantity, person or place question.

    Example:
        >>> s = "The two countries established diplomatic relations in 1952."
        >>> answer_span("date", "When did they establish relations?", s)
        (54, 58)
    """
    if kind == "date":
        dates = [m for m in _DATE.finditer(sentence) if m.group(0) not in question]
        return (dates[0].start(), dates[0].end()) if dates else None
    if kind == "quantity":
        return _quantity(sentence, question)
    if kind in {"person", "place"}:
        return _entity(sentence, question)
    return None
