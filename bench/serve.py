"""Serving benchmark: cold start and /api/answer latency under concurrent loopback clients.

    rag ingest ../shared/data/bbc --index index/bbc      # once (or: python bench/ingest.py --index index/bbc)
    python bench/serve.py --index index/bbc --clients 4 --requests 400

Starts `rag serve` as a separate process, times process start → /readyz 200 (cold start), then
runs a bounded number of requests from N concurrent clients (extractive generator) and prints
throughput and p50/p95/p99. Questions are the headlines of the indexed articles, asked as questions.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import cpu_seconds, free_port, machine, start_server  # noqa: E402
from rag.eval.stats import percentile  # noqa: E402  (one definition of p50/p95/p99 for every report)


def questions(base: str, n: int, seed: int = 7) -> list[str]:
    docs, offset = [], 0
    while True:
        page = httpx.get(f"{base}/api/documents", params={"offset": offset, "limit": 1000}).json()
        docs += page["documents"]
        offset += 1000
        if offset >= page["total"]:
            break
    rng = random.Random(seed)
    return [f"What happened: {d['title']}?" for d in rng.choices(docs, k=n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=ROOT / "index" / "bbc")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    port = free_port()
    proc, cold = start_server(args.index, port)
    base = f"http://127.0.0.1:{port}"
    try:
        qs = questions(base, args.requests + args.warmup)
        with httpx.Client(timeout=30) as client:
            for q in qs[:args.warmup]:
                client.post(f"{base}/api/answer", json={"question": q})

        local = threading.local()  # one keep-alive connection per client, as real clients do

        def one(q: str) -> tuple[float, int, str]:
            if not hasattr(local, "client"):
                local.client = httpx.Client(timeout=30)
            t0 = time.perf_counter()
            r = local.client.post(f"{base}/api/answer", json={"question": q})
            return (time.perf_counter() - t0) * 1000, r.status_code, "" if r.status_code == 200 else r.text[:200]

        t0, cpu0, client0 = time.perf_counter(), cpu_seconds(proc.pid), time.process_time()
        with ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(one, qs[args.warmup:]))
        wall, server_cpu = time.perf_counter() - t0, cpu_seconds(proc.pid) - cpu0
        client_cpu = time.process_time() - client0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    latencies = [ms for ms, _, _ in results]
    errors = [(status, body) for _, status, body in results if status != 200]
    print(f"machine       {machine()}")
    print(f"index         {args.index}")
    print(f"cold start    {cold:.2f} s (process start → /readyz 200)")
    print(f"requests      {len(results)} from {args.clients} concurrent clients, {len(errors)} errors")
    for status, body in errors[:3]:
        print(f"  error       {status}: {body}")
    print(f"throughput    {len(results) / wall:.1f} req/s")
    print(f"CPU           server {server_cpu / len(results) * 1000:.1f} ms, load generator "
          f"{client_cpu / len(results) * 1000:.1f} ms per request (same {os.cpu_count()} cores)")
    print(f"latency       p50 {percentile(latencies, .5):.1f} ms · p95 {percentile(latencies, .95):.1f} ms · "
          f"p99 {percentile(latencies, .99):.1f} ms · mean {statistics.fmean(latencies):.1f} ms")


if __name__ == "__main__":
    main()
