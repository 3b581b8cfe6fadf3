"""Question (+ history) → grounded answer: condense, retrieve, weigh evidence, generate, verify."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from rag.answer.citations import CitationVerifier
from rag.answer.evidence import Evidence, EvidenceScorer
from rag.answer.followup import Condenser
from rag.answer.generation import AnswerContext, Generator
from rag.answer.prompts import pack_passages
from rag.embedding.model import Embedder
from rag.records import Answer, Citation, Passage, Turn
from rag.retrieval.retriever import Retriever
from rag.text import get_encoding

ABSTAIN_TEXT = "The articles don't cover this: I found nothing in them that answers the question."
CLOSEST_PASSAGES = 2


@dataclass
class _Run:
    """State of one answer in progress."""

    question: str
    standalone: str = ""
    passages: list[Passage] = field(default_factory=list)
    evidence: Evidence | None = None
    abstain_reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)


class Answerer:
    """The answer pipeline; one per process, shared by the CLI, the API and the eval harness.

    Args:
        retriever: finds passages; ``embedder`` embeds the question once for retrieval and evidence.
        generator: writes the draft; ``condenser`` makes follow-ups standalone; ``verifier`` checks
            the draft's citations; ``scorer`` weighs the evidence that decides whether to answer.
        top_k: passages per answer (a request may ask for another number).
        context_tokens: prompt budget for passages (whole passages, best first).
        abstain_threshold: the evidence score below which the answer is an abstention.
    """

    def __init__(self, retriever: Retriever, embedder: Embedder, generator: Generator, condenser: Condenser,
                 verifier: CitationVerifier, scorer: EvidenceScorer, *, top_k: int = 5,
                 context_tokens: int = 1500, abstain_threshold: float = 0.5):
        self.retriever, self.embedder, self.generator = retriever, embedder, generator
        self.condenser, self.verifier, self.scorer = condenser, verifier, scorer
        self.top_k, self.context_tokens, self.abstain_threshold = top_k, context_tokens, abstain_threshold
        self.encoding = get_encoding()

    def _prepare(self, question: str, history: list[Turn], top_k: int | None) -> _Run:
        run = _Run(question=question.strip())
        t0 = time.perf_counter()
        run.standalone = self.condenser.condense(run.question, history)
        t1 = time.perf_counter()
        qvec = self.embedder.encode_query(run.standalone)
        found = self.retriever.search(run.standalone, top_k or self.top_k, qvec=qvec)
        run.passages = pack_passages(found, self.context_tokens, self.encoding)
        t2 = time.perf_counter()
        run.evidence = self.scorer.score(run.standalone, qvec, run.passages)
        run.timings = {"condense": _ms(t1 - t0), "retrieve": _ms(t2 - t1), "evidence": _ms(time.perf_counter() - t2)}
        if not run.passages:
            run.abstain_reason = "no passages retrieved"
        elif run.evidence.missing_entities:
            run.abstain_reason = f"not in the articles: {', '.join(run.evidence.missing_entities)}"
        elif run.evidence.best < self.abstain_threshold:
            run.abstain_reason = f"evidence {run.evidence.best:.2f} < threshold {self.abstain_threshold}"
        return run

    def _context(self, run: _Run, history: list[Turn]) -> AnswerContext:
        return AnswerContext(run.standalone, run.passages, history, run.evidence)

    def _finish(self, run: _Run, draft: str, t_gen: float) -> Answer:
        text, citations = ("", []) if run.abstain_reason else self.verifier.verify(draft, run.passages)
        run.timings["generate"] = _ms(t_gen)
        if not text:
            run.abstain_reason = run.abstain_reason or "no generated sentence was supported by a passage"
            return self._abstention(run)
        run.timings["total"] = _ms(time.perf_counter() - run.started)
        return Answer(text, False, citations, self.generator.name, run.timings, run.standalone, "",
                      run.evidence.best)

    def _abstention(self, run: _Run) -> Answer:
        closest = [Citation.of(i + 1, p) for i, p in enumerate(run.passages[:CLOSEST_PASSAGES])]
        run.timings["total"] = _ms(time.perf_counter() - run.started)
        return Answer(ABSTAIN_TEXT, True, closest, self.generator.name, run.timings, run.standalone,
                      run.abstain_reason, run.evidence.best if run.evidence else 0.0)

    def answer(self, question: str, history: list[Turn] | None = None, top_k: int | None = None) -> Answer:
        history = history or []
        run = self._prepare(question, history, top_k)
        if run.abstain_reason:
            run.timings["generate"] = 0.0
            return self._abstention(run)
        t0 = time.perf_counter()
        draft = self.generator.generate(self._context(run, history))
        return self._finish(run, draft, time.perf_counter() - t0)

    def stream(self, question: str, history: list[Turn] | None = None,
               top_k: int | None = None) -> Iterator[str | Answer]:
        """Yields text pieces as they are generated, then the verified ``Answer`` last.

        The final answer is authoritative: pieces of sentences that fail verification are not in it.
        """
        history = history or []
        run = self._prepare(question, history, top_k)
        if run.abstain_reason:
            run.timings["generate"] = 0.0
            answer = self._abstention(run)
            yield answer.answer
            yield answer
            return
        t0 = time.perf_counter()
        pieces = []
        for piece in self.generator.stream(self._context(run, history)):
            pieces.append(piece)
            yield piece
        yield self._finish(run, "".join(pieces), time.perf_counter() - t0)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)
