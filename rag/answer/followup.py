"""Follow-up questions → standalone questions, so retrieval sees what "it" and "they" refer to."""

from __future__ import annotations

import re

from rag.answer.generation import Generator, GeneratorUnavailable
from rag.answer.prompts import PromptLibrary
from rag.records import Turn
from rag.text import MARKER, entities, words

PRONOUNS = r"\b(it|its|they|them|their|he|him|his|she|her)\b|\b(this|that|these|those|there)(?=\s*[?.!]*$)"
_LEADING = re.compile(r"^(?:(?:how\s+\w+|what|which|who|whom|when|where|why|is|are|was|were|did|does|do|has|have|"
                      r"had|can|could|will|would|should|tell|me|about|and|so|more|many|much|long|far|often)\b\s*)+",
                      re.I)
_ELLIPTIC = re.compile(r"^(and|what about|how about|and what about|why|how come|since when)\b", re.I)
# "How large is Pakistan's population?" asks for a measure of Pakistan: the next "it" is Pakistan, not the number.
_MEASURE = re.compile(r"^\s*how\s+(large|big|long|old|far|high|tall|wide|deep|fast|small|heavy)\b", re.I)
_POSSESSOR = re.compile(r"^(?:the\s+)?(.+?)[’']s\s+\w+", re.I)


def subject_of(question: str) -> str:
    """The topic phrase of a question: what is left after the question words.

    Example:
        >>> subject_of("What is the Cambodia-Korea Free Trade Agreement?")
        'the Cambodia-Korea Free Trade Agreement'
    """
    body = question.strip().rstrip("?.! ")
    return _LEADING.sub("", body).strip() or body


def needs_context(question: str) -> bool:
    """A question that leans on the conversation: a pronoun and no name of its own, or an ellipsis."""
    has_pronoun = re.search(PRONOUNS, question, re.I) is not None
    return has_pronoun or bool(_ELLIPTIC.match(question.strip())) or len(words(question)) <= 3


def referent(history: list[Turn]) -> str:
    """What a pronoun in the next question most likely points at.

    After "Which …?" or "Who …?" it is the name the answer introduced; after "How large is X's Y?"
    it is X (a measure is not what the next question is about); otherwise the subject of the last
    user question.
    """
    users = [i for i, t in enumerate(history) if t.role == "user"]
    if not users:
        return ""
    asked = history[users[-1]].content
    reply = history[users[-1] + 1].content if users[-1] + 1 < len(history) else ""
    if re.match(r"\s*(which|who)\b", asked, re.I) and reply:
        known = {w.lower() for e in entities(asked) for w in e.split()}
        fresh = [e for e in entities(MARKER.sub("", reply)) if not {w.lower() for w in e.split()} <= known]
        if fresh:
            return fresh[0]
    subject = subject_of(asked)
    owner = _POSSESSOR.match(subject)
    if _MEASURE.match(asked) and owner and owner.group(1) in {re.sub(r"[’']s$", "", e) for e in entities(asked)}:
        return owner.group(1)
    return subject


def referents(history: list[Turn]) -> list[str]:
    """Everything a pronoun in the next question may point at, most likely first: ``referent``, then
    the names of the last question ("How large is Pakistan's population?" → also "Pakistan").

    Example:
        >>> referents([Turn("user", "What is Pakistan's role in the OIC?"), Turn("assistant", "…")])
        ["Pakistan's role in the OIC", 'Pakistan', 'OIC']
    """
    first = referent(history)
    users = [t.content for t in history if t.role == "user"]
    names = [re.sub(r"[’']s$", "", e) for e in entities(users[-1])] if users else []
    if users and _MEASURE.match(users[-1]):
        names.insert(0, subject_of(users[-1]))  # the measured thing itself, after its owner
    return list(dict.fromkeys(r for r in [first, *names] if r))


def rewrite_candidates(question: str, history: list[Turn]) -> list[str]:
    """The deterministic rewrite with each possible referent, most likely first (one when unambiguous).

    The answer step keeps the rewrite whose evidence answers best: "Which of Cambodia's products could
    it buy?" after a question about Pakistan's population is about Pakistan, not its population.
    """
    if not history or not needs_context(question):
        return [question]
    found = [_rewrite(question, subject) for subject in referents(history)]
    found = [f for f in found if f.lower() != question.lower()
             and not _repeats(f, question)] or found[:1]
    return list(dict.fromkeys(found)) or [question]


def _repeats(rewrite: str, question: str) -> bool:
    """A referent the question already names ("Cambodia's products … Cambodia") is not what "it" means."""
    added = set(words(rewrite)) - set(words(question))
    return not added or added <= set(words(question.replace("'s", "")))


def _rewrite(question: str, subject: str) -> str:
    if re.search(PRONOUNS, question, re.I) and not _ELLIPTIC.match(question.strip()):
        def swap(m: re.Match) -> str:
            possessive = m.group(0).lower() in {"its", "their", "his", "her"}
            return f"{subject}'s" if possessive else subject
        return re.sub(PRONOUNS, swap, question, count=1, flags=re.I)
    return f"{question.rstrip()} ({subject})"


def rewrite_deterministic(question: str, history: list[Turn]) -> str:
    """Replace the first pronoun (or append) with what it refers to (see ``referent``).

    Example:
        >>> rewrite_deterministic("When did it become law?",
        ...     [Turn("user", "What is the Cambodia-Korea Free Trade Agreement?"), Turn("assistant", "…")])
        'When did the Cambodia-Korea Free Trade Agreement become law?'
    """
    subject = referent(history)
    if not subject or not needs_context(question):
        return question
    return _rewrite(question, subject)


class Condenser:
    """Standalone questions: the LLM's condense prompt when a generator can write, else the rewrite rule."""

    def __init__(self, prompts: PromptLibrary, generator: Generator | None = None):
        self.prompts, self.generator = prompts, generator

    def candidates(self, question: str, history: list[Turn]) -> list[str]:
        """Standalone readings of the question, most likely first: the condensed one, then the other
        referents a pronoun may have (the answer step keeps the reading the articles answer best)."""
        first = self.condense(question, history)
        return list(dict.fromkeys([first, *rewrite_candidates(question, history)]))

    def condense(self, question: str, history: list[Turn]) -> str:
        if not history:
            return question
        if self.generator is None or not needs_context(question):
            return rewrite_deterministic(question, history)
        transcript = "\n".join(f"{t.role}: {t.content}" for t in history[-6:])
        try:
            text = self.generator.complete(
                [{"role": "user", "content": self.prompts.render("condense", history=transcript, question=question)}],
                max_tokens=64)
        except (NotImplementedError, GeneratorUnavailable):
            return rewrite_deterministic(question, history)
        line = text.strip().splitlines()[0].strip().strip('"') if text.strip() else ""
        # A small model may echo the prompt or drift; keep its rewrite only when it looks like a question.
        if not line or len(line) > 300 or "<" in line:
            return rewrite_deterministic(question, history)
        return line
