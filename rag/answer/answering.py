"""Question (+ history) → grounded answer: condense, retrieve, weigh evidence, generate, verify."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime

from rag.answer.answer_span import answer_span
from rag.answer.citations import CitationVerifier, parse_claims
from rag.answer.evidence import Evidence, EvidenceScorer
from rag.answer.followup import Condenser
from rag.answer.generation import AnswerContext, Generator
from rag.answer.prompts import pack_passages
from rag.answer.selector import AnswerSelector, Candidate
from rag.answer.time_intent import TimeIntent, read_time_intent
from rag.embedding.model import Embedder
from rag.filters import Filters, parse_instant, published_timestamp
from rag.records import Answer, Citation, Passage, Turn
from rag.retrieval.retriever import Retriever
from rag.text import get_encoding, split_sentences

ABSTAIN_TEXT = "The articles don't cover this: I found nothing in them that answers the question."
NO_MATCH_TEXT = "No articles match the filters ({filters}), so there is nothing to answer from."
NO_MATCH_REASON = "no articles match the filters"
CLOSEST_PASSAGES = 2
NEAR_BEST = 0.8  # a "latest" question orders the sentences scoring this share of the best by date
EVENT_PROBE = 5  # passages searched for the event of "before the election" (the one reporting it dates it)


@dataclass
class _Run:
    """State of one answer in progress."""

    question: str
    standalone: str = ""
    passages: list[Passage] = field(default_factory=list)
    evidence: Evidence | None = None
    abstain_reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    filters: Filters | None = None
    started: float = field(default_factory=time.perf_counter)


class Answerer:
    """The answer pipeline; one per process, shared by the CLI, the API and the eval harness.

    Args:
        retriever: finds passages; ``embedder`` embeds the question once for retrieval and evidence.
        generator: writes the draft; ``condenser`` makes follow-ups standalone; ``verifier`` checks
            the draft's citations; ``scorer`` weighs the evidence that decides whether to answer.
        top_k: passages per answer (a request may ask for another number).
        context_tokens: prompt budget for passages (whole passages, best first).
        abstain_threshold: the evidence score (``EvidenceScorer``: the selector's P blended with the
            prefilter) below which the answer is an abstention; also the bar an LLM's sentences must clear.
        selector: scores an LLM's verified sentences: one that does not answer the question is not an answer.
        fallback: the extractive generator, for when an LLM's draft has no verified sentence that answers.
    """

    def __init__(self, retriever: Retriever, embedder: Embedder, generator: Generator, condenser: Condenser,
                 verifier: CitationVerifier, scorer: EvidenceScorer, *, top_k: int = 5,
                 context_tokens: int = 1500, abstain_threshold: float = 0.5,
                 selector: AnswerSelector | None = None, fallback: Generator | None = None,
                 now: datetime | None = None):
        self.retriever, self.embedder, self.generator = retriever, embedder, generator
        self.condenser, self.verifier, self.scorer = condenser, verifier, scorer
        self.top_k, self.context_tokens, self.abstain_threshold = top_k, context_tokens, abstain_threshold
        self.selector, self.fallback, self.fixed_now = selector, fallback, now
        self.encoding = get_encoding()

    def _now(self) -> datetime | None:
        """What "this week" counts back from: the ``now`` setting, or the newest article's date."""
        if self.fixed_now is not None:
            return self.fixed_now
        newest = self.retriever.newest_published()
        return parse_instant(newest, "published") if newest else None

    def _dated_event(self, intent: TimeIntent, question: str, filters: Filters | None) -> TimeIntent:
        """``intent`` with "before/after the election" turned into a window around the publication day of the
        article reporting the event: of the passages that best match "the election", the first dated one whose
        title names it ("Penhale wins mayoral election"), else the first dated one whose text does (a preview
        saying "ahead of the election on 8 May" is in the text only). When none is dated, the event is read as
        words of the question instead."""
        found = [(p, parse_instant(p.published, "published")) for p in
                 self.retriever.search(intent.event, EVENT_PROBE, filters=filters) if p.published]
        noun = re.compile(r"\b" + re.escape(intent.event_noun) + r"\b", re.I)
        for where in ("title", "text"):
            for passage, day in found:
                if noun.search(getattr(passage, where)):
                    return intent.around(day)
        return replace(intent, event="", phrase="", content=question, scored="")

    def _prepare(self, question: str, history: list[Turn], top_k: int | None, filters: Filters | None) -> _Run:
        run = _Run(question=question.strip(), filters=filters)
        if filters and not self.retriever.matching_documents(filters):
            run.standalone, run.abstain_reason = run.question, NO_MATCH_REASON  # not a judgement on the facts
            return run
        t0 = time.perf_counter()
        rewrites = self.condenser.candidates(run.question, history)
        t1 = time.perf_counter()
        # A follow-up's pronoun may point at more than one thing: keep the reading the articles answer best.
        best, retrieve, weigh = None, 0.0, 0.0
        for standalone in rewrites:
            t2 = time.perf_counter()
            intent = read_time_intent(standalone, self._now)
            if intent.prefer and intent.scored and self.retriever.newest_published() is None:
                # No article is dated: "in 2023" can only be about what the text says, so it stays a word the
                # passages must hold (the check that refuses "What was the trade in 2023?" on 2022 figures).
                intent = replace(intent, scored="")
            if intent.event:
                intent = self._dated_event(intent, standalone, filters)
            within = _within(filters, intent)
            if within is not filters and not self.retriever.matching_documents(within):
                run.filters = within  # "this week" in an archive with nothing from this week
                run.standalone, run.abstain_reason = standalone, NO_MATCH_REASON
                return run
            asked = intent.content or standalone  # "latest", "this week" are about dates, not words to match
            qvec = self.embedder.encode_query(asked)
            found = self.retriever.search(asked, top_k or self.top_k, qvec=qvec, filters=within)
            passages = pack_passages(found, self.context_tokens, self.encoding)
            t3 = time.perf_counter()
            # "Who was mayor before the election?": retrieval reads the event's words, the selector does not
            # (the window has done their work; left in, they pull the election story's sentences up).
            scored, svec = (intent.scored, self.embedder.encode_query(intent.scored)) if intent.scored else (asked, qvec)
            evidence = _in_time_order(self.scorer.score(scored, svec, passages), passages, intent,
                                      self.abstain_threshold)
            retrieve, weigh = retrieve + t3 - t2, weigh + time.perf_counter() - t3
            if best is None or _rank(evidence) > _rank(best[2]):
                best = (standalone, passages, evidence, intent)
        run.standalone, run.passages, run.evidence, intent = best
        run.timings = {"condense": _ms(t1 - t0), "retrieve": _ms(retrieve), "evidence": _ms(weigh)}
        if not run.passages:
            run.abstain_reason = "no passages retrieved"
        elif run.evidence.missing_entities:
            run.abstain_reason = f"not in the articles: {', '.join(run.evidence.missing_entities)}"
        elif run.evidence.best < self.abstain_threshold:
            run.abstain_reason = f"evidence {run.evidence.best:.2f} < threshold {self.abstain_threshold}"
        elif intent.prefer and not _of_period(run.evidence, run.passages, intent.prefer):
            run.abstain_reason = f"nothing published {intent.phrase} or about it"
        return run

    def _context(self, run: _Run, history: list[Turn]) -> AnswerContext:
        return AnswerContext(run.standalone, run.passages, history, run.evidence)

    def _finish(self, run: _Run, draft: str, t_gen: float, verified: tuple[str, list[Citation]] | None = None) -> Answer:
        if run.abstain_reason:
            text, citations = "", []
        else:
            text, citations = verified or self.verifier.verify(draft, run.passages)
        generator = self.generator.name
        if self.fallback is not None and not run.abstain_reason and not self._answers(run, text):
            # The LLM's verified sentences are empty or do not answer: quote the articles instead of refusing.
            text, citations = self.verifier.verify(self.fallback.generate(self._context(run, [])), run.passages)
            generator = f"{self.fallback.name} (fallback from {self.generator.name})"
        run.timings["generate"] = _ms(t_gen)
        if not text:
            run.abstain_reason = run.abstain_reason or "no generated sentence was supported by a passage"
            return self._abstention(run)
        run.timings["total"] = _ms(time.perf_counter() - run.started)
        return Answer(text, False, self._mark_answer_words(run, citations), generator, run.timings, run.standalone,
                      "", run.evidence.best)

    def _answers(self, run: _Run, text: str) -> bool:
        """Whether some verified sentence of an LLM answer answers the question (the selector's P)."""
        claims = [c.text for c in parse_claims(text)]
        if not claims or self.selector is None:
            return bool(claims)
        title = run.passages[0].title if run.passages else ""
        probs = self.selector.probabilities(run.standalone, [Candidate(c, title) for c in claims])
        return max(probs) >= self.abstain_threshold

    @staticmethod
    def _mark_answer_words(run: _Run, citations: list[Citation]) -> list[Citation]:
        """Each cited sentence carries its answer words (a date, an amount, a name), in document offsets."""
        kind = run.evidence.kind if run.evidence else None
        marked = []
        for c in citations:
            found = answer_span(kind, run.standalone, c.text)
            marked.append(replace(c, answer_span=(c.start + found[0], c.start + found[1]) if found else None))
        return marked

    def _abstention(self, run: _Run) -> Answer:
        closest = [Citation.of(i + 1, p) for i, p in enumerate(run.passages[:CLOSEST_PASSAGES])]
        run.timings["total"] = _ms(time.perf_counter() - run.started)
        text = NO_MATCH_TEXT.format(filters=run.filters.describe()) if run.abstain_reason == NO_MATCH_REASON \
            else ABSTAIN_TEXT
        return Answer(text, True, closest, self.generator.name, run.timings, run.standalone,
                      run.abstain_reason, run.evidence.best if run.evidence else 0.0)

    def answer(self, question: str, history: list[Turn] | None = None, top_k: int | None = None,
               filters: Filters | None = None) -> Answer:
        """The verified answer; with ``filters``, from the articles that pass them only."""
        history = history or []
        run = self._prepare(question, history, top_k, filters)
        if run.abstain_reason:
            run.timings["generate"] = 0.0
            return self._abstention(run)
        t0 = time.perf_counter()
        draft = self.generator.generate(self._context(run, history))
        return self._finish(run, draft, time.perf_counter() - t0)

    def stream(self, question: str, history: list[Turn] | None = None,
               top_k: int | None = None, filters: Filters | None = None) -> Iterator[str | Answer]:
        """Yields text pieces as they are generated, then the verified ``Answer`` last.

        The final answer is authoritative: pieces of sentences that fail verification are not in it.
        """
        history = history or []
        run = self._prepare(question, history, top_k, filters)
        if run.abstain_reason:
            run.timings["generate"] = 0.0
            answer = self._abstention(run)
            yield answer.answer
            yield answer
            return
        if self.fallback is None:  # the extractive draft is verbatim quotes: nothing to hold back
            t0 = time.perf_counter()
            pieces = []
            for piece in self.generator.stream(self._context(run, history)):
                pieces.append(piece)
                yield piece
            yield self._finish(run, "".join(pieces), time.perf_counter() - t0)
            return
        yield from self._stream_verified(run, history)

    def _stream_verified(self, run: _Run, history: list[Turn]) -> Iterator[str | Answer]:
        """An LLM's draft, sent sentence by sentence: a sentence goes out only once verification keeps it
        and the answer so far answers the question; what was sent is exactly the final answer's text."""
        t0 = time.perf_counter()
        draft, sent, answers = "", "", False
        for piece in self.generator.stream(self._context(run, history)):
            draft += piece
            spans = split_sentences(draft)
            if len(spans) < 2:  # the last sentence may still be growing
                continue
            text, _ = self.verifier.verify(draft[:spans[-1][0]], run.passages, quote_shortcut=False)
            answers = answers or self._answers(run, text)
            if answers and len(text) > len(sent) and text.startswith(sent):
                yield text[len(sent):]
                sent = text
        verified = self.verifier.verify(draft, run.passages, quote_shortcut=False)
        answer = self._finish(run, draft, time.perf_counter() - t0, verified)
        if answer.answer.startswith(sent):
            rest = answer.answer[len(sent):]
            if rest:
                yield rest
        yield answer


def _within(filters: Filters | None, intent: TimeIntent) -> Filters | None:
    """``filters`` narrowed to the publication window the question names ("this week"), if it names one."""
    if intent.window is None:
        return filters
    base = filters or Filters()
    after = max(filter(None, (base.published_after, intent.window[0])))
    before = min(filter(None, (base.published_before, intent.window[1])))
    return replace(base, published_after=after, published_before=before)


def _in_time_order(evidence: Evidence, passages: list[Passage], intent: TimeIntent, threshold: float) -> Evidence:
    """For a "latest" question, the sentences that answer about as well as the best (``NEAR_BEST`` of it,
    and over the threshold) newest article first; for "in March 2005", every sentence over the threshold
    published then comes first (the question names the period: another year's better match is not its
    answer). The rest keep their order after them."""
    if not (intent.latest or intent.prefer) or not evidence.sentences:
        return evidence
    floor = threshold if intent.prefer is not None else max(threshold, NEAR_BEST * evidence.best)
    near = [s for s in evidence.sentences if s.score >= floor]
    rest = [s for s in evidence.sentences if s.score < floor]

    def when(s) -> float:
        stamp = published_timestamp(passages[s.passage].published)
        if intent.prefer is not None:
            inside = stamp is not None and intent.prefer[0].timestamp() <= stamp <= intent.prefer[1].timestamp()
            return 0.0 if inside else 1.0
        return -stamp if stamp is not None else float("inf")  # newest first, undated last

    near.sort(key=when)  # stable: equal dates keep the selector's order
    return replace(evidence, sentences=near + rest, newest_first=intent.latest and len(near) > 1)


def _of_period(evidence: Evidence, passages: list[Passage], period: tuple[datetime, datetime]) -> bool:
    """Whether the best sentence can speak of ``period`` ("in 2024"): its article was published then, or its
    passage names the year, or its article is undated (nothing says it is from another time). Otherwise
    the articles hold other years' figures, not that one's."""
    passage = passages[evidence.sentences[0].passage]
    stamp = published_timestamp(passage.published)
    if stamp is None:
        return True
    return period[0].timestamp() <= stamp <= period[1].timestamp() or str(period[0].year) in passage.text


def _rank(evidence: Evidence) -> tuple[bool, float]:
    return not evidence.missing_entities, evidence.best


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)
