"""Follow-up questions become standalone questions, so retrieval sees what "it" and "they" refer to."""

from __future__ import annotations

import pytest

from rag.answer.followup import (
    Condenser,
    needs_context,
    referent,
    referents,
    rewrite_candidates,
    rewrite_deterministic,
    subject_of,
)
from rag.answer.generation.extractive import ExtractiveGenerator
from rag.answer.prompts import PromptLibrary
from rag.records import Turn
from tests.conftest import PROMPTS

CKFTA = [Turn("user", "What is the Cambodia-Korea Free Trade Agreement?"), Turn("assistant", "…")]


class TestRewrite:
    def test_pronoun_is_replaced_by_the_previous_subject(self):
        assert rewrite_deterministic("When did it become law?", CKFTA) == \
            "When did the Cambodia-Korea Free Trade Agreement become law?"

    def test_a_possessive_pronoun_becomes_a_possessive(self):
        assert rewrite_deterministic("What are its main tariffs?", CKFTA) == \
            "What are the Cambodia-Korea Free Trade Agreement's main tariffs?"

    def test_an_ellipsis_gets_the_subject_appended(self):
        assert rewrite_deterministic("And what about rice?", CKFTA) == \
            "And what about rice? (the Cambodia-Korea Free Trade Agreement)"

    def test_self_contained_question_is_left_alone(self):
        history = [Turn("user", "What is the CKFTA?"), Turn("assistant", "…")]
        assert rewrite_deterministic("When did Cambodia and Pakistan establish relations?", history) == \
            "When did Cambodia and Pakistan establish relations?"

    def test_after_which_or_who_the_referent_is_the_name_the_answer_introduced(self):
        history = [Turn("user", "Which country is opening an embassy in Islamabad?"),
                   Turn("assistant", "It is Cambodia, which is opening a resident embassy there [1].")]
        assert referent(history) == "Cambodia"

    def test_every_reading_of_a_pronoun_is_offered_and_a_name_the_question_has_is_not(self):
        history = [Turn("user", "What is Pakistan's role in the OIC?"), Turn("assistant", "A key member [1].")]
        assert referents(history) == ["Pakistan's role in the OIC", "Pakistan", "OIC"]
        assert rewrite_candidates("When did it begin?", history) == [
            "When did Pakistan's role in the OIC begin?", "When did Pakistan begin?", "When did OIC begin?"]
        assert rewrite_candidates("When did Cambodia and Pakistan establish relations?", history) == [
            "When did Cambodia and Pakistan establish relations?"]

    def test_after_a_measure_of_something_it_is_that_thing_first(self):
        # "How large is Pakistan's population?" asks for a number about Pakistan; the next "it" is Pakistan.
        history = [Turn("user", "How large is Pakistan's population?"), Turn("assistant", "240 million [1].")]
        assert referents(history) == ["Pakistan", "Pakistan's population"]
        assert rewrite_candidates("Which of Cambodia's products could it buy?", history) == [
            "Which of Cambodia's products could Pakistan buy?",
            "Which of Cambodia's products could Pakistan's population buy?"]
        # "how many" counts things that may be what comes next: the phrase stays first.
        counted = [Turn("user", "How many jobs will Rover's closure cost?"), Turn("assistant", "6,000 [1].")]
        assert referents(counted)[0] == "jobs will Rover's closure cost"

    @pytest.mark.parametrize("question, expected", [
        ("What is the Cambodia-Korea Free Trade Agreement?", "the Cambodia-Korea Free Trade Agreement"),
        ("How many people live in Pakistan?", "people live in Pakistan"),
        ("Why?", "Why"),
    ])
    def test_subject_of_a_question(self, question, expected):
        assert subject_of(question) == expected

    @pytest.mark.parametrize("question, expected", [
        ("When did it become law?", True), ("And the rice trade?", True), ("Why?", True),
        ("When did Cambodia and Pakistan establish relations?", False),
    ])
    def test_which_questions_lean_on_the_conversation(self, question, expected):
        assert needs_context(question) is expected


class TestCondenser:
    def test_without_history_the_question_is_kept(self):
        assert Condenser(PromptLibrary(PROMPTS)).condense("When did it become law?", []) == "When did it become law?"

    def test_a_generator_that_cannot_write_falls_back_to_the_rewrite_rule(self):
        condenser = Condenser(PromptLibrary(PROMPTS), ExtractiveGenerator())
        assert condenser.condense("When did it become law?", CKFTA) == \
            "When did the Cambodia-Korea Free Trade Agreement become law?"


# (first question, follow-up, what the follow-up's pronoun must be read as, a fact its answer must hold).
# No referent: more than one reading answers ("ties with it": Pakistan, the OIC, the Muslim world).
# No fact: the reading is right but the selector opens with another sentence of the right passage (the
# model card's known misses: "what Cambodia buys" for "what Pakistan buys"; the China sentence after the
# North Korea one), so only the resolution is this test's to check.
CONVERSATIONS = [
    ("What is the Cambodia-Korea Free Trade Agreement?", "When did it become law?", "Free Trade Agreement",
     "January 29, 2022"),
    ("Which organisation is Pakistan a key member of?", "How does strengthening ties with it help Cambodia?",
     None, "image and influence within the Islamic world"),
    ("What does South Korea export to Cambodia?", "And what does it mainly import from Cambodia?", "South Korea",
     "clothing and footwear"),
    ("Which relationship of Cambodia worries Seoul?", "What should Cambodia do about it?", "North Korea", None),
    ("When were relations between Cambodia and South Korea re-established?",
     "How much did their bilateral trade reach in the first ten months of 2022?", "South Korea", "$920 million"),
    ("What status has Pakistan long sought with ASEAN?", "What role can Cambodia play in that?", None,
     "pivotal role"),
    # "it" is Pakistan, not its population (eval c06.2)
    ("How large is Pakistan's population?", "Which of Cambodia's products could it buy?", "Pakistan", None),
]


@pytest.mark.parametrize("first, follow_up, referent, fact", CONVERSATIONS)
def test_two_turn_conversations_answer_the_follow_up(answerer, first, follow_up, referent, fact):
    one = answerer.answer(first)
    two = answerer.answer(follow_up, [Turn("user", first), Turn("assistant", one.answer)])
    assert two.standalone_question != follow_up
    assert referent is None or (referent in two.standalone_question and "population" not in two.standalone_question)
    assert not two.abstained, two.abstain_reason
    if fact:
        assert fact in two.answer, two.standalone_question
