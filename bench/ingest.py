"""Ingest benchmark on the BBC corpus (2,225 articles; read from ../shared/data, never copied).

    python bench/ingest.py                 # full pipeline from scratch: docs/s, chunks/s, forward share, peak RSS
    python bench/ingest.py --mode model    # the model alone (tokenize + forward + pool) on the same chunks
    python bench/ingest.py --corpus DIR --index DIR --batch-size 16
    python bench/ingest.py --peers --limit 400 --rounds 2 --json peers.json   # side by side with Haystack, LlamaIndex

The pipeline's own overhead is everything but the transformer's forward pass.

``--peers`` (issue 13) runs `rag ingest` (sentence vectors and all), Haystack and LlamaIndex
(bench/peers.py says exactly how each is built) on the same files, each in its own process, the
systems alternating over ``--rounds``. Per run: chunks, the whole process's seconds (start to exit:
imports, model load, read, split, embed, write) and the pipeline's (after the models load), chunks/s,
articles/s, peak RSS; then what each system loses of the input. Each system keeps its own batch size
and torch's default threads (one per core); ``RAG_*`` variables apply to `rag ingest` as usual.
The peers come from the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import log_tail  # noqa: E402
from bench.peers import PeerChunk, model_path  # noqa: E402
from rag.embedding.factory import build_embedder, build_sentence_embedder  # noqa: E402
from rag.ingest.chunking import Chunker  # noqa: E402
from rag.ingest.documents import FOLDER_DOC_STEMS, decode_bytes, load_documents  # noqa: E402
from rag.ingest.pipeline import build_chunker, ingest  # noqa: E402
from rag.settings import Settings  # noqa: E402
from rag.store.index import Index  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "bbc"
SYSTEMS = ("rag", "haystack", "llamaindex")
PEER_MODULES = ("haystack", "haystack_integrations.components.embedders.sentence_transformers", "llama_index.core",
                "llama_index.vector_stores.faiss", "llama_index.embeddings.huggingface")
# Offline like the product; no telemetry calls from Haystack; rag's one-line summary unwrapped (rich wraps at 80).
CHILD_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HAYSTACK_TELEMETRY_ENABLED": "False",
             "COLUMNS": "1000"}
MIN_FUZZY_RUN = 8  # characters: a shorter common run between a chunk and its file is chance, not kept text


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


# ---- --peers: this project, Haystack and LlamaIndex on the same files (issue 13) -----------------------------------

class Selection(NamedTuple):
    """The files every system reads, relative to ``root`` (the corpus, read in place); `rag ingest` reads
    the same files (the same inodes) under ``rag_root``: the corpus, or hard links of a --limit selection."""

    root: Path
    files: list[str]
    rag_root: Path

    @property
    def staged(self) -> bool:
        return self.rag_root != self.root


@dataclass(frozen=True)
class Run:
    """One system's ingest of the selection in its own process."""

    system: str
    round: int
    articles: int
    chunks: int
    vectors: int
    process_s: float  # process start to exit: imports, model load, read, split, embed, write
    pipeline_s: float  # after the models load (rag: its ingest report's seconds)
    peak_rss_mb: float
    torch_threads: int | None  # as the peer reported it; rag runs in the same environment

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"chunks_per_s": self.chunks / self.process_s,
                               "pipeline_chunks_per_s": self.chunks / self.pipeline_s,
                               "articles_per_s": self.articles / self.process_s}


class Losses(NamedTuple):
    """What a system leaves out of the input: non-blank characters, each file decoded as rag decodes it."""

    files_dropped: int  # articles without a single chunk
    chars: int  # in the input
    chars_missing: int  # in no chunk (nor in text the model saw beside one, as rag's title)
    chars_unembedded: int  # never seen by the model: missing, or past a chunk's token limit
    chunks_truncated: int  # chunks over the model's max_seq_length: the model cut them


class ModelWindow(NamedTuple):
    """The packaged model's tokenizer and its limit (sentence-transformers' max_seq_length, with [CLS]/[SEP])."""

    tokenizer: Any
    max_tokens: int

    @classmethod
    def load(cls) -> ModelWindow:
        from tokenizers import Tokenizer

        folder = Path(model_path())
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return cls(tokenizer, json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])


def corpus_files(corpus: Path) -> list[str]:
    """The corpus's .txt articles in sorted order; a folder README is not one (rag's rule)."""
    return sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob("*.txt")
                  if p.is_file() and p.stem.lower() not in FOLDER_DOC_STEMS)


def select(corpus: Path, limit: int | None, tmp: Path) -> Selection:
    """The whole corpus, or its first ``limit`` articles, which `rag ingest` reads hard-linked (copied across
    file systems) into ``tmp`` with their folders: it names a document by its path under the folder it is
    given, and BBC's folders reuse file names (business/001.txt, sport/001.txt), so loose files would collide.
    The peers read the corpus in place: LlamaIndex embeds each file's full path, a random one would move its chunks."""
    files = corpus_files(corpus)
    if not limit or limit >= len(files):
        return Selection(corpus, files, corpus)
    root = tmp / "corpus"
    for rel in files[:limit]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(corpus / rel, root / rel)
        except OSError:
            shutil.copy2(corpus / rel, root / rel)
    return Selection(corpus, files[:limit], root)


class Exit(NamedTuple):
    seconds: float
    peak_rss_mb: float


def run_child(cmd: list[str], logs: Path) -> Exit:
    """Run ``cmd`` from the checkout (stdout to ``logs``.out, stderr to ``logs``.err): wall seconds from
    start to exit, and its own peak RSS (wait4's rusage is the child's alone, unlike RUSAGE_CHILDREN)."""
    out, err = logs.with_suffix(".out"), logs.with_suffix(".err")
    with out.open("w") as stdout, err.open("w") as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=os.environ | CHILD_ENV, stdin=subprocess.DEVNULL,
                                stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd[:4])} ... exited with {proc.returncode}; its stderr ends:{log_tail(err)}")
    return Exit(seconds, usage.ru_maxrss / 1024)


_RAG_SUMMARY = re.compile(r"(\d+) documents, (\d+) chunks in .*; ([\d.]+)s")


def run_rag(sel: Selection, work: Path, round_: int) -> tuple[Run, Path]:
    """`rag ingest ROOT --index TMP`, the real command (sentence vectors and all); the run and its index."""
    index, logs = work / f"rag-{round_}-index", work / f"rag-{round_}"
    done = run_child([sys.executable, "-m", "rag", "ingest", str(sel.rag_root), "--index", str(index)], logs)
    summary = _RAG_SUMMARY.search(" ".join(logs.with_suffix(".out").read_text().split()))
    if summary is None:
        sys.exit(f"no summary line in `rag ingest`'s output:{log_tail(logs.with_suffix('.out'))}")
    chunks = int(summary.group(2))  # one vector per chunk: write_generation stores them together
    return Run("rag", round_, len(sel.files), chunks, chunks, done.seconds, float(summary.group(3)),
               done.peak_rss_mb, None), index


def run_peer(system: str, sel: Selection, work: Path, round_: int, file_list: Path) -> tuple[Run, Path]:
    """bench/peers.py SYSTEM in its own process; the run (less the time it took to write its chunks out)
    and the file of its chunks."""
    out, logs = work / f"{system}-{round_}.json", work / f"{system}-{round_}"
    done = run_child([sys.executable, str(ROOT / "bench" / "peers.py"), system, "--root", str(sel.root),
                      "--files", str(file_list), "--out", str(out)], logs)
    result = json.loads(out.read_text())
    return Run(system, round_, len(sel.files), result["chunks"], result["vectors"], done.seconds - result["dump_s"],
               result["pipeline_s"], done.peak_rss_mb, result["torch_threads"]), Path(result["chunks_file"])


def rag_chunks(index: Path, sel: Selection) -> list[PeerChunk]:
    """rag's stored chunks, each with what its model saw (``Chunker.embedding_text``: title, then text)."""
    settings = Settings()
    chunker = Chunker(settings.chunk_tokens, settings.chunk_overlap, title_prefix=settings.embed_titles)
    file_of = {Path(f).with_suffix("").as_posix(): f for f in sel.files}
    idx = Index.open(index)
    try:
        ids = [row.id for row in idx.chunk_texts()]
        stored = {}
        for i in range(0, len(ids), 500):
            stored.update(idx.chunks(ids[i:i + 500]))
    finally:
        idx.close()
    return [PeerChunk(file_of[s.chunk.doc_id], s.chunk.text, chunker.embedding_text(s.chunk, s.title))
            for s in (stored[i] for i in ids)]


def _squash(text: str) -> str:
    return " ".join(text.split())


def _nonblank(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32) != ord(" ")


def kept_chars(reference: str, texts: list[str], labels: list[str]) -> int:
    """Non-blank characters of ``reference`` found in ``texts`` (whole, else by common runs: LlamaIndex drops
    the bytes it cannot decode) or in ``labels`` (whole only: "file_path: ..." is not input text).
    Whitespace is squashed on both sides: the splitters trim and rejoin it."""
    ref = _squash(reference)
    kept = np.zeros(len(ref), dtype=bool)
    for piece, fuzzy in [(p, False) for p in labels] + [(t, True) for t in texts]:
        piece = _squash(piece)
        at = ref.find(piece) if piece else -1
        if at >= 0:
            kept[at:at + len(piece)] = True
        elif fuzzy and piece:
            for a, _, size in SequenceMatcher(None, ref, piece, autojunk=False).get_matching_blocks():
                kept[a:a + size] |= size >= MIN_FUZZY_RUN
    return int((kept & _nonblank(ref)).sum())


def seen_by_model(chunk: PeerChunk, offsets: list[tuple[int, int]], max_tokens: int) -> tuple[str, str, bool]:
    """What the model saw of a chunk: the text before the chunk's own (rag's title, LlamaIndex's metadata),
    the chunk's text up to the limit, and whether the limit cut it. ``offsets`` of ``chunk.embedded``'s tokens,
    [CLS] and [SEP] included: the model keeps ``max_tokens - 2`` of the others."""
    at = max(chunk.embedded.find(chunk.text), 0)
    label = chunk.embedded[:at]
    if len(offsets) <= max_tokens:
        return label, chunk.text, False
    end = max(stop for _, stop in offsets[1:max_tokens - 1])
    return label[:end], chunk.text[:max(0, end - at)], True


def count_losses(sel: Selection, chunks: list[PeerChunk], window: ModelWindow) -> Losses:
    """What ``chunks`` leave out of ``sel``'s files: dropped files, missing and unembedded characters."""
    stored: dict[str, tuple[list[str], list[str]]] = {f: ([], []) for f in sel.files}
    seen: dict[str, tuple[list[str], list[str]]] = {f: ([], []) for f in sel.files}
    truncated = 0
    for chunk, enc in zip(chunks, window.tokenizer.encode_batch([c.embedded for c in chunks])):
        label, text, cut = seen_by_model(chunk, enc.offsets, window.max_tokens)
        truncated += cut
        stored[chunk.file][0].append(chunk.text)
        stored[chunk.file][1].append(chunk.embedded[:max(chunk.embedded.find(chunk.text), 0)])
        seen[chunk.file][0].append(text)
        seen[chunk.file][1].append(label)
    chars = missing = unembedded = 0
    for f in sel.files:
        reference = decode_bytes((sel.root / f).read_bytes())
        total = int(_nonblank(_squash(reference)).sum())
        chars += total
        missing += total - kept_chars(reference, *stored[f])
        unembedded += total - kept_chars(reference, *seen[f])
    return Losses(sum(not stored[f][0] for f in sel.files), chars, missing, unembedded, truncated)


def summarise(runs: list[Run]) -> dict[str, dict[str, Any]]:
    """Per system: medians over its rounds, the range of its chunks/s, its highest peak RSS."""
    out: dict[str, dict[str, Any]] = {}
    for system in dict.fromkeys(r.system for r in runs):
        rows = [r.to_dict() for r in runs if r.system == system]
        rates = [row["chunks_per_s"] for row in rows]
        out[system] = {key: statistics.median(row[key] for row in rows) for key in
                       ("chunks", "process_s", "pipeline_s", "chunks_per_s", "pipeline_chunks_per_s", "articles_per_s")}
        out[system] |= {"rounds": len(rows), "chunks_per_s_min": min(rates), "chunks_per_s_max": max(rates),
                        "peak_rss_mb": max(row["peak_rss_mb"] for row in rows)}
    return out


def ratios(summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """rag's medians over the fastest peer's (by whole-process chunks/s); empty without rag or a peer."""
    peers = [s for s in summary if s != "rag"]
    if "rag" not in summary or not peers:
        return {}
    fastest = max(peers, key=lambda s: summary[s]["chunks_per_s"])
    keys = ("chunks_per_s", "pipeline_chunks_per_s", "articles_per_s")
    return {"fastest_peer": fastest} | {key: summary["rag"][key] / summary[fastest][key] for key in keys}


def format_report(report: dict[str, Any]) -> str:
    """The runs, the per-system medians with the ratio, and the losses, as aligned text tables."""
    lines = [f"machine    {report['machine']}",
             f"corpus     {report['corpus']}: {report['articles']} articles"
             + (f" (the first in sorted order; rag reads them hard-linked into {report['rag_root']})"
                if report["staged"] else ""),
             f"threads    torch {report['torch_threads'] or 'default'} (each system's default; rag in the same environment)"]
    lines += [f"settings   {k}={v}" for k, v in report["env"].items()]
    head = f"{'system':<11} {'round':>5} {'chunks':>7} {'process s':>10} {'pipeline s':>11} {'chunks/s':>9} " \
           f"{'pipe ch/s':>10} {'articles/s':>11} {'peak RSS MB':>12}"
    lines += ["", head]
    lines += [f"{r['system']:<11} {r['round']:>5} {r['chunks']:>7} {r['process_s']:>10.1f} {r['pipeline_s']:>11.1f} "
              f"{r['chunks_per_s']:>9.1f} {r['pipeline_chunks_per_s']:>10.1f} {r['articles_per_s']:>11.2f} "
              f"{r['peak_rss_mb']:>12.0f}" for r in report["runs"]]
    lines += ["", f"{'median':<11} {'rounds':>6} {'chunks':>7} {'process s':>10} {'pipeline s':>11} {'chunks/s':>9} "
              f"{'range':>13} {'pipe ch/s':>10} {'articles/s':>11} {'peak RSS MB':>12}"]
    lines += [f"{name:<11} {s['rounds']:>6} {s['chunks']:>7.0f} {s['process_s']:>10.1f} {s['pipeline_s']:>11.1f} "
              f"{s['chunks_per_s']:>9.1f} {s['chunks_per_s_min']:>6.1f}-{s['chunks_per_s_max']:<6.1f} "
              f"{s['pipeline_chunks_per_s']:>10.1f} {s['articles_per_s']:>11.2f} {s['peak_rss_mb']:>12.0f}"
              for name, s in report["summary"].items()]
    if report["ratio"]:
        r = report["ratio"]
        lines += ["", f"ratio      rag / {r['fastest_peer']} (the fastest peer): {r['chunks_per_s']:.2f}x chunks/s "
                  f"end to end, {r['pipeline_chunks_per_s']:.2f}x pipeline only, {r['articles_per_s']:.2f}x articles/s "
                  "(chunk sizes differ: articles/s does not reward smaller chunks)"]
    lines += ["", f"{'losses':<11} {'files dropped':>13} {'chars':>9} {'not in a chunk':>15} {'never embedded':>15} "
              f"{'chunks truncated':>17}"]
    lines += [f"{name:<11} {x['files_dropped']:>13} {x['chars']:>9} {x['chars_missing']:>15} {x['chars_unembedded']:>15} "
              f"{x['chunks_truncated']:>17}" for name, x in report["losses"].items()]
    lines.append(f"           non-blank characters; truncated: over the model's {report['max_tokens']} tokens "
                 "([CLS] and [SEP] included), the rest of the chunk is stored but not embedded")
    return "\n".join(lines)


def warm_up(systems: list[str]) -> None:
    """Import each system's libraries and read the model once, untimed, so the first timed run does not pay
    for a cold page cache alone."""
    modules = {"rag": ["rag.cli", "torch", "sentence_transformers"], "haystack": list(PEER_MODULES[:2]),
               "llamaindex": list(PEER_MODULES[2:])}
    names = list(dict.fromkeys(m for s in systems for m in modules[s]))
    code = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[2:]]; open(sys.argv[1], 'rb').read()"
    subprocess.run([sys.executable, "-c", code, str(Path(model_path()) / "model.safetensors"), *names],
                   cwd=ROOT, env=os.environ | CHILD_ENV, check=True, stdout=subprocess.DEVNULL)


def run_rounds(sel: Selection, work: Path, systems: list[str], rounds: int) -> tuple[list[Run], dict[str, list[PeerChunk]]]:
    """Every system once per round, the order rotating (round 2 starts with the second system); the
    chunks of each system's first run."""
    file_list = work / "files.txt"
    file_list.write_text("\n".join(sel.files) + "\n")
    runs: list[Run] = []
    chunks: dict[str, list[PeerChunk]] = {}
    for round_ in range(1, rounds + 1):
        shift = (round_ - 1) % len(systems)
        for system in systems[shift:] + systems[:shift]:
            if system == "rag":
                run, index = run_rag(sel, work, round_)
                if system not in chunks:
                    chunks[system] = rag_chunks(index, sel)
                shutil.rmtree(index)
            else:
                run, chunk_file = run_peer(system, sel, work, round_, file_list)
                chunks.setdefault(system, [PeerChunk(**c) for c in json.loads(chunk_file.read_text())])
                chunk_file.unlink()
            runs.append(run)
            print(f"  round {round_} {system:<11} {run.chunks} chunks in {run.process_s:.1f} s", file=sys.stderr)
    return runs, chunks


def build_report(sel: Selection, corpus: Path, runs: list[Run], losses: dict[str, Losses], max_tokens: int) -> dict:
    summary = summarise(runs)
    threads = sorted({r.torch_threads for r in runs if r.torch_threads is not None})
    return {"machine": machine(), "corpus": str(corpus), "rag_root": str(sel.rag_root), "staged": sel.staged,
            "articles": len(sel.files), "max_tokens": max_tokens,
            "torch_threads": ",".join(map(str, threads)),
            "env": {k: v for k, v in sorted(os.environ.items())
                    if k.startswith("RAG_") or k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
            "runs": [r.to_dict() for r in runs], "summary": summary, "ratio": ratios(summary),
            "losses": {name: x._asdict() for name, x in losses.items()}}


def bench_peers(corpus: Path, limit: int | None, rounds: int, systems: list[str], json_out: Path | None) -> None:
    wanted = {"haystack": PEER_MODULES[:2], "llamaindex": PEER_MODULES[2:]}
    missing = [m for s in systems for m in wanted.get(s, ()) if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"peers not installed ({', '.join(missing)}): pip install -e '.[bench]'")
    window = ModelWindow.load()
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        sel = select(corpus, limit, Path(tmp))
        warm_up(systems)
        runs, chunks = run_rounds(sel, Path(tmp), systems, rounds)
        losses = {system: count_losses(sel, chunks[system], window) for system in systems}
        report = build_report(sel, corpus, runs, losses, window.max_tokens)
    print(format_report(report))
    if json_out:
        json_out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {json_out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["pipeline", "model"], default="pipeline")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--index", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--peers", action="store_true", help="side by side with Haystack and LlamaIndex (issue 13)")
    parser.add_argument("--rounds", type=int, default=2, help="--peers: runs of each system, alternating")
    parser.add_argument("--limit", type=int, default=None, help="--peers: the first N articles in sorted order")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="--peers: a comma-separated subset")
    parser.add_argument("--json", type=Path, default=None, help="--peers: write the report here too")
    args = parser.parse_args()
    if not args.corpus.exists():
        sys.exit(f"corpus not found: {args.corpus} (see ../shared/data/README.md)")
    if args.peers:
        asked = args.systems.split(",")
        if set(asked) - set(SYSTEMS) or args.rounds < 1:
            sys.exit(f"--systems takes some of {','.join(SYSTEMS)}; --rounds at least 1")
        systems = [s for s in SYSTEMS if s in asked]
        bench_peers(args.corpus, args.limit, args.rounds, systems, args.json)
        return
    settings = Settings(embedding_batch_size=args.batch_size)
    if args.mode == "model":
        bench_model(args.corpus, settings)
        return
    with tempfile.TemporaryDirectory() as tmp:
        bench_pipeline(args.corpus, args.index or Path(tmp) / "bbc", settings)


if __name__ == "__main__":
    main()
