"""The answer words marked inside a cited sentence: a date, an amount, a name the question lacks."""

from __future__ import annotations

import pytest

from rag.answer.answer_span import answer_span


def _marked(kind: str, question: str, sentence: str) -> str | None:
    span = answer_span(kind, question, sentence)
    return sentence[span[0]:span[1]] if span else None


@pytest.mark.parametrize(("kind", "question", "sentence", "expected"), [
    ("date", "When did it become law?", "The agreement became law on January 29, 2022.", "January 29, 2022"),
    ("date", "When did they establish relations?", "They established diplomatic relations in 1952.", "1952"),
    ("date", "When was the meeting?", "The judges will meet up on 25 January to decide.", "25 January"),
    ("quantity", "How large is Pakistan's population?", "Pakistan, with a population of over 240 million, is big.",
     "240 million"),
    ("quantity", "By how much did profits rise?", "Profits at TimeWarner jumped 76% to $1.13bn (£600m).", "76%"),
    ("quantity", "What is the trade worth?", "They want to expand trade beyond the current $53 million.", "$53 million"),
    ("quantity", "How many fans were arrested?", "Hearts could face action after three fans were arrested.", "three"),
    ("quantity", "How many of their eight Tests did England lose?", "England lost five of their eight Tests.", "five"),
    ("quantity", "How many were hurt?", "Twenty-five people were hurt.", "Twenty-five"),
    ("quantity", "How many teams play in the Six Nations?", "The Six Nations has six teams.", "six"),  # a name's "Six"
    ("quantity", "How much did trade between the two countries reach?",  # figures before words
     "Trade between the two countries reached $920 million.", "$920 million"),
    ("place", "Where is the new embassy in Pakistan?", "The embassy is situated in the capital city of Islamabad.",
     "Islamabad"),
    ("person", "Who agreed to open the embassy in Islamabad?", "Senate President Hun Sen agreed to it in Islamabad.",
     "Senate President Hun Sen"),
])
def test_marks_the_answer_words(kind, question, sentence, expected):
    assert _marked(kind, question, sentence) == expected


@pytest.mark.parametrize(("kind", "question", "sentence"), [
    ("date", "When did it become law?", "The agreement is expected to boost trade."),  # no date at all
    ("date", "What happened in 2022?", "It became law in 2022."),  # the only date is the question's own
    ("quantity", "How many people live in Pakistan?", "Pakistan is a large market."),
    ("quantity", "What happened in 2004?", "Sales rose in 2004."),  # a year is not an amount
    ("quantity", "How many firms bid?", "It is one of the firms that bid."),  # "one of" is not a count
    ("place", "Where is Islamabad?", "Islamabad hosts the embassy."),  # the question's own name
    (None, "Why did trade grow?", "Trade grew because tariffs fell by 20%."),  # no type: nothing to mark
])
def test_marks_nothing_it_cannot_tell(kind, question, sentence):
    assert answer_span(kind, question, sentence) is None
