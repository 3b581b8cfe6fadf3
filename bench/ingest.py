"""Ingest benchmark on the BBC corpus (2,225 articles; read from ../shared/data, never copied).

    python bench/ingest.py                 # full pipeline from scratch: docs/s, chunks/s, forward share, peak RSS
    python bench/ingest.py --mode model    # the model alone (tokenize + forward + pool) on the same chunks
    python bench/ingest.py --corpus DIR --index DIR --batch-size 16

The pipeline's own overhead is everything but the transformer's forward pass.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.embedding.factory import build_embedder, build_sentence_embedder  # noqa: E402
from rag.ingest.documents import load_documents  # noqa: E402
from rag.ingest.pipeline import build_chunker, ingest  # noqa: E402
from rag.settings import Settings  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "bbc"


class ForwardTimer:
    """Accumulates wall time spent inside the transformer's forward pass (torch hooks)."""

    def __init__(self, module):
        self.seconds, self._t0 = 0.0, 0.0
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def _pre(self, *_):
        self._t0 = time.perf_counter()

    def _post(self, *_):
        self.seconds += time.perf_counter() - self._t0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def bench_pipeline(corpus: Path, index: Path, settings: Settings) -> None:
    embedder = build_embedder(settings)
    timer = ForwardTimer(embedder.model[0])  # ST calls the HF model's forward directly, bypassing its hooks
    chunker = build_chunker(settings, embedder)
    sentence_embedder = build_sentence_embedder(settings) if settings.sentence_vectors else None
    shutil.rmtree(index, ignore_errors=True)
    report = ingest([corpus], index, embedder, chunker, batch_size=settings.embedding_batch_size,
                    sentence_embedder=sentence_embedder)
    total = report.seconds
    print(f"machine            {machine()}")
    print(f"corpus             {corpus} ({report.documents_total} documents, {len(report.skipped)} skipped)")
    for s in report.skipped:
        print(f"  skipped          {s.path}: {s.reason}")
    print(f"chunks             {report.chunks_total}")
    print(f"total              {total:.1f} s")
    print(f"documents/s        {report.documents_total / total:.1f}")
    print(f"chunks/s           {report.chunks_total / total:.1f}")
    print(f"forward pass       {timer.seconds:.1f} s ({100 * timer.seconds / total:.1f}% of ingest)")
    print(f"encode() total     {report.embed_seconds:.1f} s (tokenize + forward + pool)")
    # Evidence sentences are a second model pass (the int8 answer-time model), reported on its own.
    sentences = report.sentence_seconds
    print(f"sentence vectors   {report.sentences_embedded} in {sentences:.1f} s ({100 * sentences / total:.1f}% of ingest)")
    chunk_part = total - sentences
    print(f"without sentences  {chunk_part:.1f} s: {report.chunks_total / chunk_part:.1f} chunks/s")
    overhead = chunk_part - timer.seconds
    print(f"pipeline overhead  {overhead:.1f} s ({100 * overhead / chunk_part:.1f}% of ingest without sentences)")
    print(f"peak RSS           {peak_rss_mb():.0f} MB")


def bench_model(corpus: Path, settings: Settings) -> None:
    import torch

    embedder = build_embedder(settings)
    chunker = build_chunker(settings, embedder)
    docs, _ = load_documents([corpus])
    texts = [chunker.embedding_text(c, d.title) for d in docs for c in chunker.chunk(d)]  # what ingest embeds
    texts.sort(key=len)  # what sentence-transformers does too: least padding
    model, tok, bs = embedder._transformer, embedder.tokenizer, settings.embedding_batch_size
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(texts), bs):
            batch = tok(texts[i:i + bs], padding=True, truncation=True, return_tensors="pt")
            model(**batch)
    seconds = time.perf_counter() - t0
    print(f"machine            {machine()}")
    print(f"model alone        {len(texts)} chunks in {seconds:.1f} s = {len(texts) / seconds:.1f} chunks/s "
          f"(batch {bs}, tokenize + forward)")
    print(f"peak RSS           {peak_rss_mb():.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["pipeline", "model"], default="pipeline")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--index", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    if not args.corpus.exists():
        sys.exit(f"corpus not found: {args.corpus} (see ../shared/data/README.md)")
    settings = Settings(embedding_batch_size=args.batch_size)
    if args.mode == "model":
        bench_model(args.corpus, settings)
        return
    with tempfile.TemporaryDirectory() as tmp:
        bench_pipeline(args.corpus, args.index or Path(tmp) / "bbc", settings)


if __name__ == "__main__":
    main()
