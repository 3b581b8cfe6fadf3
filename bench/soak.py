"""Soak benchmark: mixed traffic against a real `rag serve` while a re-ingest publishes a new index generation.

    python bench/soak.py                          # 60 s, 8 clients, the 408 BBC articles of eval/news_corpus.txt
    python bench/soak.py --seconds 5 --clients 2 --corpus data/articles --index /tmp/soak-articles   # smoke
    python bench/soak.py --json soak.json         # the figures as one flat JSON object too

Works on copies in a temporary folder, so neither the corpus nor ``--index`` is changed (``--index`` is
built from ``--corpus`` first when it holds no index; default index/news, the news eval's index). Starts
`rag serve` (extractive) on the index copy, warms it up, then for ``--seconds`` runs ``--clients``
keep-alive loopback clients, each picking /api/answer, /api/chat (SSE, read to the end) or /api/search
at random with a question of eval/news.jsonl or eval/questions.jsonl (follow-ups with their
conversation). At ``--ingest-at`` (a third of the run) it appends a paragraph to ``--modify`` articles
of the corpus copy and runs `rag ingest` on it, which publishes a new generation; /readyz is polled to
see when the server switches to it.

Prints requests, errors and p50/p95/p99 per route and overall, throughput, the generation before and
after with when the switch was seen, and the server's RSS (sampled every second) at start, end, max and
its growth. Exits non-zero when any request failed (a non-200, an SSE ``error`` event or a stream
without ``done``, a connection error), RSS grew by 10% or more, the ingest failed, or the server never
switched to the new generation.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import free_port, log_tail, machine, rss_mb, start_server  # noqa: E402
from rag.eval.evaluation import Case, load_cases  # noqa: E402
from rag.eval.stats import percentile  # noqa: E402  (one definition of p50/p95/p99 for every report)
from rag.store.index import current_generation  # noqa: E402

BBC = ROOT.parent / "shared" / "data" / "bbc"
NEWS_CORPUS = ROOT / "eval" / "news_corpus.txt"
QUESTION_FILES = [ROOT / "eval" / "news.jsonl", ROOT / "eval" / "questions.jsonl"]
DEFAULT_INDEX = ROOT / "index" / "news"
MAX_RSS_GROWTH_PCT = 10.0
SWITCH_GRACE_S = 30.0  # after the load, how long the server may still take to open the new generation
INGEST_TIMEOUT_S = 1800.0
REQUEST_TIMEOUT_S = 60.0
UPDATE = "\n\nUpdate: this report was revised after publication, and the figures above were checked again.\n"


class Query(NamedTuple):
    question: str
    history: list[dict[str, str]]  # earlier turns as /api/answer takes them, oldest first


class Result(NamedTuple):
    route: str
    ms: float
    at_s: float  # when it finished, seconds since the load started
    error: str  # "" for a success


@dataclass(frozen=True)
class IngestRun:
    modified: list[str]
    started_s: float
    finished_s: float
    returncode: int
    output: str  # the summary line of `rag ingest`, or why it failed


@dataclass(frozen=True)
class Soak:
    results: list[Result]
    wall_s: float
    ingest: IngestRun
    generations: list[tuple[float, str]]  # (seen at, seconds since the load started; name), the first at 0
    readyz_errors: list[str]
    rss_mb: list[float]  # one sample a second, the first right after the warm-up


# ---- inputs: corpus, index, questions ----

def copy_corpus(source: Path | None, dest: Path) -> Path:
    """The corpus the soak may modify: a copy of ``source``, or of the BBC files listed in eval/news_corpus.txt."""
    if source is not None:
        if not source.is_dir():
            sys.exit(f"--corpus {source}: not a folder of articles")
        shutil.copytree(source, dest)
        return dest
    lines = NEWS_CORPUS.read_text(encoding="utf-8").splitlines()
    for rel in (line.strip() for line in lines if line.strip() and not line.startswith("#")):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(BBC / rel, dest / rel)
    return dest


def ingest_command(corpus: Path, index: Path) -> list[str]:
    return [sys.executable, "-m", "rag", "ingest", str(corpus), "--index", str(index)]


def ensure_index(index: Path, corpus: Path) -> None:
    """Build ``index`` from the (still unmodified) corpus copy when it holds no generation yet."""
    if current_generation(index) is not None:
        return
    print(f"building {index} from {corpus} (once) …", flush=True)
    subprocess.run(ingest_command(corpus, index), cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def copy_index(index: Path, dest: Path) -> Path:
    """The index the server reads and the re-ingest writes: a copy, so ``--index`` stays as it was built."""
    shutil.copytree(index, dest, ignore=shutil.ignore_patterns(".lock", ".staging-*"))
    return dest


def load_queries(paths: list[Path]) -> list[Query]:
    """Every question of the eval files; a follow-up carries the turns before it."""
    cases = load_cases(paths)
    by_id = {case.id: case for case in cases}
    return [Query(case.question, conversation(case, by_id)) for case in cases]


def conversation(case: Case, by_id: dict[str, Case]) -> list[dict[str, str]]:
    """The turns before a follow-up: each earlier question, with its gold answer as the reply."""
    turns: list[dict[str, str]] = []
    while case.history_of:
        case = by_id[case.history_of]
        reply = case.answers[0] if case.answers else "The articles do not say."
        turns[:0] = [{"role": "user", "content": case.question}, {"role": "assistant", "content": reply}]
    return turns


# ---- the three routes: each returns "" or what went wrong ----

def ask_answer(client: httpx.Client, query: Query) -> str:
    r = client.post("/api/answer", json={"question": query.question, "history": query.history})
    return "" if r.status_code == 200 else f"{r.status_code}: {r.text[:200]}"


def ask_chat(client: httpx.Client, query: Query) -> str:
    with client.stream("POST", "/api/chat", json={"question": query.question, "history": query.history}) as r:
        if r.status_code != 200:
            return f"{r.status_code}: {r.read().decode(errors='replace')[:200]}"
        names = []
        for event, data in sse_events(r.iter_lines()):
            if event == "error":
                return f"SSE error event: {data[:200]}"
            names.append(event)
    return "" if "done" in names else f"stream ended without a done event (last events: {names[-3:]})"


def ask_search(client: httpx.Client, query: Query) -> str:
    r = client.get("/api/search", params={"q": query.question, "k": 5})
    return "" if r.status_code == 200 else f"{r.status_code}: {r.text[:200]}"


ROUTES: dict[str, Callable[[httpx.Client, Query], str]] = {"answer": ask_answer, "chat": ask_chat, "search": ask_search}


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream; comments (pings) are skipped.

    Example:
        >>> list(sse_events(["event: token", 'data: {"text": "Hi"}', "", ": ping", "", "event: done", "data: {}", ""]))
        [('token', '{"text": "Hi"}'), ('done', '{}')]
    """
    event, data = "message", []
    for line in lines:
        if not line:  # a blank line ends an event
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def call(client: httpx.Client, route: str, query: Query, t0: float) -> Result:
    start = time.perf_counter()
    try:
        error = ROUTES[route](client, query)
    except httpx.HTTPError as exc:  # refused, reset, timed out: the server failed this client
        error = f"{type(exc).__name__}: {exc}"
    end = time.perf_counter()
    return Result(route, (end - start) * 1000, end - t0, error)


# ---- the load, the re-ingest and the monitors ----

def client_loop(n: int, base: str, queries: list[Query], t0: float, deadline: float, seed: int) -> list[Result]:
    """One keep-alive client asking until the deadline: a random route with a random question each time."""
    rng, results = random.Random(seed * 1000 + n), []
    with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as client:
        while time.perf_counter() < deadline:
            results.append(call(client, rng.choice(list(ROUTES)), rng.choice(queries), t0))
    return results


def warm_up(base: str, queries: list[Query], n: int, clients: int) -> str:
    """``n`` requests over the routes from ``clients`` concurrent clients, so the server's worker threads
    have all run before RSS is first sampled; returns the live generation. Exits on a failed request."""
    def one(i: int) -> Result:
        with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as client:
            return call(client, list(ROUTES)[i % len(ROUTES)], queries[i % len(queries)], time.perf_counter())

    with ThreadPoolExecutor(clients) as pool:
        for result in pool.map(one, range(n)):
            if result.error:
                sys.exit(f"warm-up {result.route} failed: {result.error}")
    return httpx.get(f"{base}/readyz", timeout=10).json()["generation"]


def modify_articles(corpus: Path, n: int, seed: int) -> list[str]:
    """Append a paragraph to ``n`` seeded-random .txt/.md articles, so the re-ingest has real work."""
    articles = sorted(p for p in corpus.rglob("*") if p.suffix in (".txt", ".md") and p.is_file())
    chosen = random.Random(seed).sample(articles, min(n, len(articles)))
    for path in chosen:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(UPDATE)
    return [p.relative_to(corpus).as_posix() for p in chosen]


def reingest_at(start_at: float, t0: float, corpus: Path, index: Path, modify: int, seed: int) -> IngestRun:
    """At ``start_at`` (perf_counter), modify a few articles and run the real `rag ingest` on the index copy."""
    time.sleep(max(0.0, start_at - time.perf_counter()))
    started = time.perf_counter() - t0
    modified = modify_articles(corpus, modify, seed)
    try:
        done = subprocess.run(ingest_command(corpus, index), cwd=ROOT, capture_output=True, text=True,
                              timeout=INGEST_TIMEOUT_S)
        # rich wraps the summary at 80 columns when not on a terminal: join it back into one line.
        returncode, output = done.returncode, " ".join((done.stdout if done.returncode == 0 else done.stderr).split())
    except subprocess.TimeoutExpired:
        returncode, output = -1, f"timed out after {INGEST_TIMEOUT_S:.0f} s"
    return IngestRun(modified, started, time.perf_counter() - t0, returncode, output[-400:])


def sample_rss(pid: int, stop: threading.Event, samples: list[float]) -> None:
    """The server's RSS once a second until ``stop``, and once more then."""
    try:
        while not stop.is_set():
            samples.append(rss_mb(pid))
            stop.wait(1.0)
        samples.append(rss_mb(pid))
    except OSError:  # the server died: the failed requests say so
        return


def watch_generation(base: str, t0: float, stop: threading.Event, seen: list[tuple[float, str]],
                     errors: list[str]) -> None:
    """Poll /readyz every 0.2 s until ``stop``; append (seconds since t0, generation) at each change."""
    with httpx.Client(base_url=base, timeout=10) as client:
        while not stop.wait(0.2):
            try:
                r = client.get("/readyz")
            except httpx.HTTPError as exc:
                errors.append(f"readyz {type(exc).__name__}: {exc}")
                continue
            if r.status_code != 200:
                errors.append(f"readyz {r.status_code}: {r.text[:200]}")
            elif r.json()["generation"] != seen[-1][1]:
                seen.append((time.perf_counter() - t0, r.json()["generation"]))


def run_soak(args: argparse.Namespace, base: str, pid: int, queries: list[Query], corpus: Path, index: Path,
             before: str) -> Soak:
    """The clients for ``args.seconds``, the re-ingest partway through, RSS and /readyz watched throughout."""
    stop, rss, generations, readyz_errors = threading.Event(), [], [(0.0, before)], []
    t0 = time.perf_counter()
    monitors = [threading.Thread(target=sample_rss, args=(pid, stop, rss)),
                threading.Thread(target=watch_generation, args=(base, t0, stop, generations, readyz_errors))]
    for monitor in monitors:
        monitor.start()
    try:
        with ThreadPoolExecutor(args.clients + 1) as pool:
            ingest = pool.submit(reingest_at, t0 + args.ingest_at, t0, corpus, index, args.modify, args.seed)
            clients = [pool.submit(client_loop, n, base, queries, t0, t0 + args.seconds, args.seed)
                       for n in range(args.clients)]
            results = [result for client in clients for result in client.result()]
            wall = time.perf_counter() - t0
            run = ingest.result()
        switch_deadline = time.perf_counter() + SWITCH_GRACE_S
        while run.returncode == 0 and len(generations) < 2 and time.perf_counter() < switch_deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        for monitor in monitors:
            monitor.join()
    return Soak(results, wall, run, generations, readyz_errors, rss)


# ---- figures, report, verdict ----

def latency_figures(name: str, results: list[Result]) -> dict[str, Any]:
    ms = [r.ms for r in results]
    return {f"{name}/requests": len(results), f"{name}/errors": sum(1 for r in results if r.error),
            **{f"{name}/p{q}_ms": round(percentile(ms, q / 100), 1) for q in (50, 95, 99)}}


def figures(soak: Soak, args: argparse.Namespace) -> dict[str, Any]:
    """Every reported number in one flat dict, keys namespaced by route or topic."""
    switch_s = soak.generations[1][0] if len(soak.generations) > 1 else None
    during = [r for r in soak.results if switch_s and soak.ingest.started_s <= r.at_s <= switch_s]
    start, end = (soak.rss_mb[0], soak.rss_mb[-1]) if soak.rss_mb else (0.0, 0.0)
    fig: dict[str, Any] = {"config/seconds": args.seconds, "config/clients": args.clients,
                           "config/corpus": str(args.corpus or NEWS_CORPUS), "config/index": str(args.index),
                           "overall/throughput_rps": round(len(soak.results) / soak.wall_s, 1)}
    for route in ROUTES:
        fig |= latency_figures(route, [r for r in soak.results if r.route == route])
    fig |= latency_figures("overall", soak.results)
    fig |= latency_figures("during_ingest", during)  # from the ingest's start to the switch
    fig |= {"readyz/errors": len(soak.readyz_errors),
            "errors/total": fig["overall/errors"] + len(soak.readyz_errors),
            "ingest/modified": soak.ingest.modified, "ingest/started_s": round(soak.ingest.started_s, 1),
            "ingest/finished_s": round(soak.ingest.finished_s, 1), "ingest/returncode": soak.ingest.returncode,
            "ingest/output": soak.ingest.output,
            "generation/before": soak.generations[0][1], "generation/after": soak.generations[-1][1],
            "generation/switch_s": round(switch_s, 1) if switch_s else None,
            "rss/start_mb": round(start, 1), "rss/end_mb": round(end, 1), "rss/max_mb": round(max(soak.rss_mb, default=0), 1),
            "rss/growth_pct": round(100 * (end - start) / start, 1) if start else None,
            "rss/samples_mb": [round(mb, 1) for mb in soak.rss_mb]}
    return fig


def failures(fig: dict[str, Any]) -> list[str]:
    """Why the soak failed; empty when it passed."""
    problems = []
    if fig["errors/total"]:
        problems.append(f"{fig['errors/total']} failed requests")
    if fig["rss/growth_pct"] is None or fig["rss/growth_pct"] >= MAX_RSS_GROWTH_PCT:
        problems.append(f"server RSS grew {fig['rss/growth_pct']}% (limit: below {MAX_RSS_GROWTH_PCT:.0f}%)")
    if fig["ingest/returncode"] != 0:
        problems.append(f"rag ingest failed ({fig['ingest/returncode']}): {fig['ingest/output']}")
    elif fig["generation/switch_s"] is None:
        problems.append(f"the server still serves {fig['generation/before']} {SWITCH_GRACE_S:.0f} s after the ingest")
    return problems


def print_report(fig: dict[str, Any], soak: Soak, cold_s: float) -> None:
    print(f"machine       {machine()}")
    print(f"corpus        {fig['config/corpus']} (a copy)   index {fig['config/index']} (a copy)")
    print(f"cold start    {cold_s:.2f} s (process start → /readyz 200)")
    print(f"load          {fig['config/seconds']:g} s of {fig['config/clients']} keep-alive clients, "
          f"routes {' · '.join(ROUTES)} at random; {soak.wall_s:.1f} s until the last answer")
    counts = " · ".join(f"{route} {fig[f'{route}/requests']}" for route in ROUTES)
    print(f"requests      {fig['overall/requests']} ({counts}), {fig['overall/throughput_rps']} req/s")
    print(f"errors        {fig['errors/total']} (" + " · ".join(f"{r} {fig[f'{r}/errors']}" for r in [*ROUTES, "readyz"]) + ")")
    for error, n in Counter(r.error for r in soak.results if r.error).most_common(5):
        print(f"  {n} ×        {error}")
    for error in soak.readyz_errors[:3]:
        print(f"  error       {error}")
    for name in [*ROUTES, "overall", "during_ingest"]:
        print(f"{'latency' if name == 'answer' else '':<14}{name:<14} p50 {fig[f'{name}/p50_ms']:7.1f} ms · "
              f"p95 {fig[f'{name}/p95_ms']:7.1f} ms · p99 {fig[f'{name}/p99_ms']:7.1f} ms  ({fig[f'{name}/requests']})")
    print(f"re-ingest     {len(fig['ingest/modified'])} articles modified at {fig['ingest/started_s']} s, "
          f"rag ingest done at {fig['ingest/finished_s']} s: {fig['ingest/output']}")
    switch = f"seen at {fig['generation/switch_s']} s" if fig["generation/switch_s"] else "never seen"
    print(f"generation    {fig['generation/before']} → {fig['generation/after']}, switch {switch}"
          + (" (after the load ended)" if fig["generation/switch_s"] and fig["generation/switch_s"] > soak.wall_s else ""))
    print(f"server RSS    start {fig['rss/start_mb']} MB · end {fig['rss/end_mb']} MB · max {fig['rss/max_mb']} MB "
          f"· growth {fig['rss/growth_pct']}% ({len(soak.rss_mb)} samples)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load (default: 60)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent keep-alive clients (default: 8)")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="folder of articles (default: the BBC files listed in eval/news_corpus.txt)")
    parser.add_argument("--index", type=Path, default=DEFAULT_INDEX,
                        help="index built from --corpus; built first when empty (default: index/news)")
    parser.add_argument("--ingest-at", type=float, default=None, help="seconds into the load (default: a third)")
    parser.add_argument("--modify", type=int, default=3, help="articles changed before the re-ingest (default: 3)")
    parser.add_argument("--warmup", type=int, default=200, help="requests before the clock starts and RSS is first read "
                        "(default: 200; with 20, the first seconds of 8 clients still grow thread arenas by ~5%%)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the figures to OUT")
    args = parser.parse_args()
    args.index = args.index.resolve()  # the subprocesses run in the repository root
    args.corpus = args.corpus.resolve() if args.corpus else None
    args.ingest_at = args.seconds / 3 if args.ingest_at is None else args.ingest_at
    return args


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="rag-soak-") as tmp:
        work = Path(tmp)
        corpus = copy_corpus(args.corpus, work / "corpus")
        ensure_index(args.index, corpus)
        index = copy_index(args.index, work / "index")
        queries = load_queries(QUESTION_FILES)
        port, log = free_port(), work / "serve.log"
        base = f"http://127.0.0.1:{port}"
        proc, cold_s = start_server(index, port, log)
        try:
            before = warm_up(base, queries, args.warmup, args.clients)
            soak = run_soak(args, base, proc.pid, queries, corpus, index, before)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        fig = figures(soak, args)
        print_report(fig, soak, cold_s)
        problems = failures(fig)
        if fig["errors/total"]:
            print(f"server log (last lines):{log_tail(log) or ' empty'}")
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2) + "\n", encoding="utf-8")
    if problems:
        sys.exit("FAIL: " + "; ".join(problems))
    print("PASS: no failed requests, RSS growth below 10%, new generation picked up")


if __name__ == "__main__":
    main()
