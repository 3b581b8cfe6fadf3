"""End to end on the news articles the answer selector never trained on: the calibration set.

    python train/heldout_news.py                        # → /tmp/heldout-news/{questions.jsonl,corpus,index,report}
    python train/heldout_news.py --out DIR --no-eval    # only write the questions and the corpus

The training script holds out every 5th article of ``train/data/news_questions.jsonl`` (141 BBC stories,
423 answerable and 141 unanswerable questions). This asks those questions through the whole product,
retrieval included, over the news eval corpus (``eval/news_corpus.txt``, 408 articles) plus the 141: so
each question has ~550 articles to be wrong in, as a user's archive would. ``rag eval`` prints the figures
and its threshold sweep; ``eval/CALIBRATION.md`` says how the shipped threshold was read off them.

Never a gate: its questions are the held-out slice of the training data, so gating on them would calibrate
on what is gated. The gated sets are ``eval/questions.jsonl``, ``eval/news.jsonl`` and ``eval/time.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "train"))

import answer_selector as trainer  # noqa: E402  (the held-out split is the trainer's own)


def held_out_articles() -> tuple[list[str], dict[str, str]]:
    """The articles the trainer holds out (its own split), and what it drops."""
    news = trainer.load_news()
    every = trainer.Config.news_holdout_every
    return [d for i, d in enumerate(news.doc_ids) if i % every == 0], news.dropped


def write_questions(articles: list[str], dropped: dict[str, str], path: Path) -> int:
    """The held-out articles' questions in ``rag eval``'s format, the written evidence as the quote; a
    question the trainer drops (its evidence not found by the product's splitter) is dropped here too."""
    wanted, lines = set(articles), []
    for n, line in enumerate(trainer.NEWS_QUESTIONS.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        r = json.loads(line)
        if r["doc_id"] not in wanted or f"{r['doc_id']}: {r['question']}" in dropped:
            continue
        if r.get("answer"):
            case = {"id": f"h{n:04d}", "type": r["type"], "question": r["question"], "answers": [r["answer"]],
                    "evidence": [{"doc_id": r["doc_id"], "quote": r["evidence"]}]}
        else:
            case = {"id": f"h{n:04d}", "type": "unanswerable", "question": r["question"], "answers": [],
                    "evidence": []}
        lines.append(json.dumps(case))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def write_corpus(articles: list[str], folder: Path) -> int:
    """The news eval corpus plus the held-out articles, copied (``rag ingest`` ids them by relative path)."""
    listed = [line.strip() for line in trainer.NEWS_CORPUS.read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    files = sorted(set(listed) | {f"{d}.txt" for d in articles})
    shutil.rmtree(folder, ignore_errors=True)
    for f in files:
        (folder / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(trainer.BBC / f, folder / f)
    return len(files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/heldout-news"), help="working folder")
    parser.add_argument("--no-eval", action="store_true", help="write the questions and corpus only")
    args = parser.parse_args()
    articles, dropped = held_out_articles()
    args.out.mkdir(parents=True, exist_ok=True)
    questions = args.out / "questions.jsonl"
    n_questions = write_questions(articles, dropped, questions)
    n_files = write_corpus(articles, args.out / "corpus")
    print(f"{n_questions} questions from {len(articles)} held-out articles; corpus of {n_files} articles in "
          f"{args.out / 'corpus'}", flush=True)
    if args.no_eval:
        return 0
    out = args.out.resolve()
    shutil.rmtree(out / "index", ignore_errors=True)  # a fresh index: the corpus may have changed
    rag = [sys.executable, "-m", "rag"]
    subprocess.run([*rag, "ingest", str(out / "corpus"), "--index", str(out / "index")], check=True, cwd=ROOT)
    asked = [*rag, "eval", str(questions.resolve()), "--index", str(out / "index")]
    subprocess.run([*asked, "--report", str(out / "report"), "--no-plot"], check=True, cwd=ROOT)  # the figures
    return subprocess.run([*asked, "--calibrate"], cwd=ROOT).returncode  # the threshold sweep (asks them again)


if __name__ == "__main__":
    raise SystemExit(main())
