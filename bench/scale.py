"""Scale benchmark (issue 13 item 2): synthetic corpora of 10^5 and 10^6 chunks through the real write path.

    rag ingest ../shared/data/bbc --index index/bbc                      # once: the real chunk vectors
    python bench/scale.py --sizes 100000 1000000 --json bench/scale.json  # the issue's table
    python bench/scale.py --sizes 1000000 --vector-index hnsw             # force a kind (RAG_VECTOR_INDEX)
    python bench/scale.py --flat-cost                                     # exact vs IVF query cost by size
    python bench/scale.py --sizes 3000 --vectors-from /work/idx/news --queries 60 --warmup 20  # smoke run

Per size, a corpus is made and written with ``rag.store.writer.write_generation`` as ingest does
(docstore, vectors, BM25; no sentence vectors, which would need the model on every sentence):

- text: each synthetic document follows one BBC article (``--corpus``, read in place): its title,
  and chunks of ~``chunk_tokens`` tokens recombined from that article's sentences in random order;
- vectors: the real vector of one of that article's chunks (from the index ``--vectors-from``) plus
  Gaussian noise, re-normalised, so a synthetic vector has an expected cosine of ``--similarity``
  with the real one. Nothing is embedded but the queries.

Then an incremental write replaces ``--update-docs`` documents (what a daily news ingest does),
and the final generation is measured, each step in a fresh process (``spawn``):

- build: wall time of the first write; peak RSS of that process (ru_maxrss: the corpus in memory
  as ingest would hold it, plus the write); update: wall time of the incremental write;
- open: ``Index.open`` in a fresh process, cold (the generation's files evicted from the page
  cache with posix_fadvise DONTNEED first) and warm (a second fresh process, files cached);
  RSS right after the cold open (VmRSS; anon = process memory, file = mapped pages);
- retrieval: after the open, the generation's files are read once into the page cache (a server
  that has been up a while), ``--warmup`` queries run, then ``--queries`` queries (BBC titles and
  sentences, embedded once with the answer-time model) are timed one by one on one thread:
  dense ``Index.dense_search`` (50 candidates, as the retriever asks), BM25 ``Index.lexical_search``
  (50), hybrid ``IndexRetriever.search`` as ``rag.answer.pipeline.build_retriever`` builds it from
  ``Settings()`` (query vector given: the embedding is not retrieval); RSS after the queries;
- recall@10 of dense search against exact search: a flat FAISS index over the same live vectors.

Targets at 10^6 (issue 13): hybrid p50 ≤ 20 ms, p99 ≤ 60 ms, RSS ≤ 4 GB, open ≤ 5 s, recall@10 ≥ 0.97.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.eval.stats import percentile  # noqa: E402  (one definition of p50/p99 for every report)

CANDIDATES = 50  # what IndexRetriever asks each list for (Settings.candidates)
SIZES = [100_000, 1_000_000]
FLAT_COST_SIZES = [5_000, 10_000, 20_000, 50_000, 100_000]
TARGETS_AT = 1_000_000


class Article(NamedTuple):
    title: str
    sentences: list[str]
    tokens: list[int]  # cl100k tokens of each sentence


@dataclass(frozen=True)
class Source:
    """The real material: BBC articles with sentences, and real chunk vectors grouped by article."""

    articles: list[Article]
    vectors: np.ndarray  # (chunks, dimension), normalised
    chunks_of: list[np.ndarray]  # rows of ``vectors`` per article (only articles that have some)
    model: str

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])


# ---- the real material --------------------------------------------------------------------------
def load_source(vectors_from: Path, corpus: Path) -> Source:
    """BBC articles from ``corpus`` and the chunk vectors the index ``vectors_from`` holds for them."""
    from rag.ingest.documents import iter_documents
    from rag.records import Document
    from rag.store.index import Index, IndexNotFound
    from rag.text import get_encoding, split_sentences

    try:
        index = Index.open(vectors_from)
    except IndexNotFound:
        sys.exit(f"no index at {vectors_from}: build it with `rag ingest ../shared/data/bbc --index index/bbc` "
                 f"(or pass --vectors-from another index of BBC articles)")
    docs = {d.doc_id: d for d in iter_documents([corpus]) if isinstance(d, Document)}
    ids = index.vectors.ids()
    doc_of = {}
    for start in range(0, len(ids), 5000):
        doc_of |= {i: s.chunk.doc_id for i, s in index.chunks(ids[start:start + 5000].tolist()).items()}
    known = [i for i in ids.tolist() if doc_of.get(i) in docs]
    if not known:
        sys.exit(f"none of the chunks in {vectors_from} comes from an article under {corpus}: "
                 f"index that corpus (rag ingest {corpus} --index {vectors_from})")
    names = sorted({doc_of[i] for i in known})
    encoding = get_encoding()
    articles = []
    for name in names:
        text = docs[name].text
        sentences = [text[a:b] for a, b in split_sentences(text) if b - a > 20]
        articles.append(Article(docs[name].title, sentences, [len(t) for t in encoding.encode_batch(sentences)]))
    position = {name: j for j, name in enumerate(names)}
    vectors = index.vectors_of(known)
    rows: list[list[int]] = [[] for _ in names]
    for row, chunk_id in enumerate(known):
        rows[position[doc_of[chunk_id]]].append(row)
    model = index.manifest.model
    index.close()
    return Source(articles, vectors, [np.asarray(r) for r in rows], model)


def make_queries(source: Source, n: int, seed: int) -> list[str]:
    """Half titles, half sentences of 6+ words, from random articles."""
    rng = random.Random(seed)
    queries = []
    while len(queries) < n:
        article = rng.choice(source.articles)
        if len(queries) % 2 == 0:
            queries.append(article.title)
        else:
            long = [s for s in article.sentences if len(s.split()) >= 6]
            if long:
                queries.append(rng.choice(long))
    return queries


# ---- the synthetic corpus -----------------------------------------------------------------------
def synthesize(source: Source, n_chunks: int, seed: int, prefix: str, *, similarity: float,
               chunks_per_doc: int, chunk_tokens: int):
    """``n_chunks`` chunks in documents of ``chunks_per_doc``: (documents, chunks, vectors)."""
    from rag.records import Chunk, Document

    rng = random.Random(seed)
    documents, chunks, bases = [], [], []
    while len(chunks) < n_chunks:
        a = rng.randrange(len(source.articles))
        article, rows = source.articles[a], source.chunks_of[a]
        doc_id = f"{prefix}{len(documents):07d}"
        texts, counts = [], []
        for _ in range(min(chunks_per_doc, n_chunks - len(chunks))):
            text, count = _recombined(article, rng, chunk_tokens)
            texts.append(text)
            counts.append(count)
            bases.append(int(rows[len(texts) % len(rows)]))
        body, start = "\n\n".join(texts), 0
        for ordinal, (text, count) in enumerate(zip(texts, counts)):
            chunks.append(Chunk(f"{doc_id}#{ordinal}", doc_id, ordinal, start, start + len(text), text, count))
            start += len(text) + 2
        documents.append(Document(doc_id, article.title, body, source="bench/scale.py"))
    return documents, chunks, noisy(source.vectors, np.asarray(bases), similarity, seed)


def _recombined(article: Article, rng: random.Random, chunk_tokens: int) -> tuple[str, int]:
    """Sentences of ``article`` in random order until ``chunk_tokens`` tokens (at least one)."""
    order = list(range(len(article.sentences)))
    rng.shuffle(order)
    picked, total = [], 0
    for i in order:
        if picked and total + article.tokens[i] > chunk_tokens:
            break
        picked.append(article.sentences[i])
        total += article.tokens[i]
    return " ".join(picked), total


def noisy(vectors: np.ndarray, rows: np.ndarray, similarity: float, seed: int, block: int = 100_000) -> np.ndarray:
    """``vectors[rows]`` plus Gaussian noise, re-normalised: expected cosine ``similarity`` to the original.

    For a unit vector v and noise n ~ N(0, σ²I) in d dimensions, cos(v, v + n) ≈ 1 / √(1 + dσ²).
    """
    d = vectors.shape[1]
    sigma = np.sqrt((1 / similarity ** 2 - 1) / d)
    rng = np.random.default_rng(seed)
    out = np.empty((len(rows), d), dtype=np.float32)
    for start in range(0, len(rows), block):
        part = vectors[rows[start:start + block]] + rng.normal(0, sigma, (len(rows[start:start + block]), d))
        out[start:start + block] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return out


# ---- the measured steps, each in a fresh process ------------------------------------------------
def build_corpus(args: dict, n: int, root: str) -> dict:
    """Write the corpus of ``n`` chunks at ``root``, then the incremental update; times and peak RSS."""
    from rag.store.index import Index
    from rag.store.writer import write_generation

    source = load_source(Path(args["vectors_from"]), Path(args["corpus"]))
    options = dict(similarity=args["similarity"], chunks_per_doc=args["chunks_per_doc"],
                   chunk_tokens=args["chunk_tokens"])
    policy = _policy(args)
    t0 = time.perf_counter()
    documents, chunks, vectors = synthesize(source, n, args["seed"], "syn", **options)
    synth_s = time.perf_counter() - t0
    meta = dict(model=source.model, dimension=source.dimension,
                chunker={"synthetic": "bench/scale.py", **options, "seed": args["seed"]})
    t0 = time.perf_counter()
    write_generation(Path(root), None, removed=[], documents=documents, chunks=chunks, vectors=vectors,
                     vector_policy=policy, **meta)
    build_s = time.perf_counter() - t0
    build_rss = _peak_rss_gb()
    k = min(args["update_docs"], len(documents))
    removed = [d.doc_id for d in random.Random(args["seed"] + 1).sample(documents, k)]
    del documents, chunks, vectors
    update_s = 0.0
    if k:
        new_docs, new_chunks, new_vectors = synthesize(source, k * args["chunks_per_doc"], args["seed"] + 2,
                                                       "upd", **options)
        t0 = time.perf_counter()
        write_generation(Path(root), Index.open(Path(root)), removed=removed, documents=new_docs, chunks=new_chunks,
                         vectors=new_vectors, vector_policy=policy, **meta)
        update_s = time.perf_counter() - t0
    index = Index.open(Path(root))
    result = dict(synth_s=synth_s, build_s=build_s, update_s=update_s, build_peak_rss_gb=build_rss,
                  peak_rss_gb=_peak_rss_gb(), documents=index.counts()[0], chunks=index.counts()[1],
                  disk_gb=index.size_bytes() / 1e9, vectors=index.vectors.describe(), kind_forced=policy.kind.value)
    index.close()
    return result


def _policy(args: dict):
    from rag.settings import Settings
    from rag.store.vectors import VectorPolicy

    settings = Settings()
    if args["vector_index"]:
        settings = settings.model_copy(update={"vector_index": args["vector_index"]})
    return VectorPolicy.from_settings(settings)


def open_and_query(root: str, queries_file: str, cold: bool, measure: bool) -> dict:
    """Open the index in this fresh process (cold: its files evicted first); with ``measure``, time the
    three retrievals and dense recall@10 against exact search."""
    from rag.store.index import Index, current_generation

    generation = current_generation(Path(root))
    if cold:
        _evict(generation)
    t0 = time.perf_counter()
    index = Index.open(Path(root))
    result: dict[str, Any] = dict(open_s=time.perf_counter() - t0, **_rss_gb("open"))
    if measure:
        result |= _query(index, generation, np.load(queries_file, allow_pickle=False))
    index.close()
    return result


def _query(index, generation: Path, data) -> dict:
    from rag.answer.pipeline import build_retriever, sentence_cache
    from rag.embedding.factory import build_query_embedder
    from rag.settings import Settings

    settings = Settings()
    embedder = build_query_embedder(settings)
    if embedder.model_id != index.manifest.model:
        raise SystemExit(f"the index was built for {index.manifest.model}, the query model is {embedder.model_id}")
    retriever = build_retriever(index, embedder, settings, sentence_cache(index, embedder))
    texts, qvecs, warm = json.loads(str(data["texts"])), data["vectors"], int(data["warmup"])
    _read_through(generation)
    searches: dict[str, Callable[[str, np.ndarray], object]] = {
        "dense": lambda text, q: index.dense_search(q, CANDIDATES),
        "bm25": lambda text, q: index.lexical_search(text, CANDIDATES),
        "hybrid": lambda text, q: retriever.search(text, settings.top_k, qvec=q),
    }
    for search in searches.values():
        for text, q in zip(texts[:warm], qvecs[:warm]):
            search(text, q)
    result = {}
    for name, search in searches.items():
        ms = []
        for text, q in zip(texts[warm:], qvecs[warm:]):
            t0 = time.perf_counter()
            search(text, q)
            ms.append((time.perf_counter() - t0) * 1000)
        result |= {f"{name}_p50_ms": percentile(ms, 0.5), f"{name}_p99_ms": percentile(ms, 0.99)}
    result |= _rss_gb("queries")
    result["recall_at_10"] = _recall(index, qvecs[warm:])
    return result


def _recall(index, queries: np.ndarray, k: int = 10, block: int = 200_000) -> float:
    """Dense recall@k against a flat (exact) FAISS index over the same live vectors."""
    import faiss

    ids = index.vectors.ids()
    exact = faiss.IndexFlatIP(index.vectors.dimension)
    for start in range(0, len(ids), block):
        exact.add(index.vectors_of(ids[start:start + block]))
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    _, rows = exact.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    faiss.omp_set_num_threads(1)
    hits = [len({int(ids[r]) for r in row if r >= 0} & {h.id for h in index.dense_search(q, k)})
            for row, q in zip(rows, queries)]
    return float(np.sum(hits) / (k * len(queries)))


def _evict(folder: Path) -> None:
    """Drop a (fsynced, so clean) generation's files from the page cache: the next open reads the disk."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _read_through(folder: Path) -> None:
    """Read every file once, into the page cache only (not this process's memory)."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb", buffering=0) as fh:
                while fh.read(1 << 24):
                    pass


def _rss_gb(when: str) -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024 ** 2
    return {f"rss_{when}_gb": fields["VmRSS"], f"rss_{when}_anon_gb": fields["RssAnon"],
            f"rss_{when}_file_gb": fields["RssFile"]}


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def in_fresh_process(fn: Callable, *args):
    """``fn(*args)`` in a new interpreter (spawn), so its memory and page faults are its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# ---- the exact-search threshold -----------------------------------------------------------------
def flat_cost(source: Source, queries: np.ndarray, sizes: list[int], seed: int) -> list[dict]:
    """Query cost of exact (flat) search and of IVF by size, one thread: where ``vector_exact_max`` goes."""
    import faiss

    from rag.store.vectors import Layout, VectorIndex, VectorKind, VectorPolicy, ivf_lists

    rows = []
    for n in sizes:
        vectors = noisy(source.vectors, np.random.default_rng(seed).integers(0, len(source.vectors), n), 0.85, seed)
        ids = np.arange(n, dtype=np.int64)
        row: dict[str, Any] = {"chunks": n}
        exact = None
        for kind in (VectorKind.FLAT, VectorKind.IVF):
            layout = Layout(kind, ivf_lists(n) if kind is VectorKind.IVF else 0)
            index = VectorIndex.build(ids, vectors, layout, VectorPolicy())
            faiss.omp_set_num_threads(1)
            ms, found = [], []
            for q in queries:
                t0 = time.perf_counter()
                found.append({h.id for h in index.search(q, CANDIDATES)[:10]})
                ms.append((time.perf_counter() - t0) * 1000)
            exact = exact or found
            row |= {f"{kind.value}_p50_ms": percentile(ms, 0.5), f"{kind.value}_p99_ms": percentile(ms, 0.99)}
            if kind is VectorKind.IVF:
                row |= {"ivf": index.describe(), "ivf_recall_at_10": float(np.mean([len(a & b) / 10 for a, b
                                                                                   in zip(exact, found)]))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


# ---- the report ---------------------------------------------------------------------------------
COLUMNS = [("chunks", "chunks", "{:,}"), ("vectors", "vector index", "{}"), ("build_s", "build s", "{:.1f}"),
           ("update_s", "update s", "{:.1f}"), ("disk_gb", "disk GB", "{:.2f}"),
           ("build_peak_rss_gb", "build RSS GB", "{:.2f}"), ("open_s", "open cold s", "{:.2f}"),
           ("open_warm_s", "open warm s", "{:.2f}"), ("rss_open_gb", "RSS open GB", "{:.2f}"),
           ("rss_queries_gb", "RSS queried GB", "{:.2f}"), ("dense_p50_ms", "dense p50", "{:.2f}"),
           ("dense_p99_ms", "dense p99", "{:.2f}"), ("bm25_p50_ms", "BM25 p50", "{:.1f}"),
           ("bm25_p99_ms", "BM25 p99", "{:.1f}"), ("hybrid_p50_ms", "hybrid p50", "{:.1f}"),
           ("hybrid_p99_ms", "hybrid p99", "{:.1f}"), ("recall_at_10", "recall@10", "{:.3f}")]
TARGETS = [("hybrid_p50_ms", 20.0), ("hybrid_p99_ms", 60.0), ("rss_queries_gb", 4.0), ("open_s", 5.0)]


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |")
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    for row in (r for r in rows if r["size"] >= TARGETS_AT):
        checks = [f"{key} {row[key]:.2f} ≤ {limit}: {'ok' if row[key] <= limit else 'MISSED'}" for key, limit in TARGETS]
        checks.append(f"recall_at_10 {row['recall_at_10']:.3f} ≥ 0.97: {'ok' if row['recall_at_10'] >= 0.97 else 'MISSED'}")
        out.append(f"{row['chunks']:,} chunks: " + "; ".join(checks))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="chunks per corpus (default 100000 1000000; with --flat-cost: 5000 ... 100000)")
    parser.add_argument("--vectors-from", type=Path, default=ROOT / "index" / "bbc",
                        help="an index of BBC articles whose chunk vectors seed the synthetic ones")
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "data" / "bbc")
    parser.add_argument("--work", type=Path, default=Path("/tmp/rag-scale"), help="where the indexes are built")
    parser.add_argument("--vector-index", choices=["auto", "flat", "hnsw", "ivf"], default=None,
                        help="force a kind (default: RAG_VECTOR_INDEX, else auto)")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--update-docs", type=int, default=100, help="documents the incremental write replaces")
    parser.add_argument("--similarity", type=float, default=0.85, help="expected cosine of a synthetic vector to its real one")
    parser.add_argument("--chunks-per-doc", type=int, default=5)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--flat-cost", action="store_true", help="only: exact vs IVF query cost by index size")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from bench.harness import machine
    from rag.embedding.factory import build_query_embedder
    from rag.settings import Settings

    settings = Settings()
    source = load_source(args.vectors_from, args.corpus)
    texts = make_queries(source, args.warmup + args.queries, args.seed)
    embedder = build_query_embedder(settings)
    qvecs = np.stack([embedder.encode_query(t) for t in texts]).astype(np.float32)
    print(f"machine {machine()}; {len(source.vectors):,} real chunk vectors of {len(source.articles):,} articles "
          f"from {args.vectors_from}; {len(texts)} queries", flush=True)
    if args.flat_cost:
        rows = flat_cost(source, qvecs[args.warmup:], args.sizes or FLAT_COST_SIZES, args.seed)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        return
    del source
    args.work.mkdir(parents=True, exist_ok=True)
    queries_file = str(args.work / "queries.npz")
    np.savez(queries_file, texts=json.dumps(texts), vectors=qvecs, warmup=args.warmup)
    options = dict(vars(args), vectors_from=str(args.vectors_from), corpus=str(args.corpus),
                   chunk_tokens=settings.chunk_tokens, work=str(args.work), json=None)
    rows = []
    for n in args.sizes or SIZES:
        root = args.work / f"n{n}"
        shutil.rmtree(root, ignore_errors=True)
        row = {"size": n} | in_fresh_process(build_corpus, options, n, str(root))
        row |= in_fresh_process(open_and_query, str(root), queries_file, True, True)
        row["open_warm_s"] = in_fresh_process(open_and_query, str(root), queries_file, False, False)["open_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(table(rows))
    for line in verdicts(rows):
        print(line)
    print(f"indexes kept under {args.work} (remove when done)")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "args": options, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
