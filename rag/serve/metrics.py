"""Prometheus metrics of one app, in its own registry (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rag.records import Answer


class Metrics:
    """Request counts and latencies, time per answer stage, and the size of the loaded index."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("rag_requests", "HTTP requests", ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("rag_request_seconds", "HTTP request latency", ["route"], registry=self.registry,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.retrieval = Histogram("rag_retrieval_seconds", "Follow-up condensing + retrieval time per answer",
                                   registry=self.registry, buckets=(.002, .005, .01, .02, .05, .1, .25, .5, 1))
        self.evidence = Histogram("rag_evidence_seconds", "Evidence scoring time per answer", registry=self.registry,
                                  buckets=(.001, .002, .005, .01, .02, .05, .1, .25, .5, 1))
        self.generation = Histogram("rag_generation_seconds", "Generation + citation verification time per answer",
                                    registry=self.registry, buckets=(.001, .005, .01, .05, .1, .5, 1, 5, 30))
        self.documents = Gauge("rag_index_documents", "Documents in the loaded index", registry=self.registry)
        self.chunks = Gauge("rag_index_chunks", "Chunks in the loaded index", registry=self.registry)
        self.rejected = Counter("rag_rejected_requests", "Requests turned away: busy (503) or past the deadline (504)",
                                ["reason"], registry=self.registry)
        self.reload_failures = Counter("rag_reload_failures", "Index generations that failed to open",
                                       registry=self.registry)
        self.index_bytes = Gauge("rag_index_bytes", "Size of the loaded index on disk", registry=self.registry)

    def observe_answer(self, answer: Answer) -> None:
        """Stage times of one answer; generation is what the total leaves after the earlier stages,
        since the verification that follows generating is not timed on its own."""
        t = answer.timings_ms
        before = t.get("condense", 0) + t.get("retrieve", 0)
        self.retrieval.observe(before / 1000)
        self.evidence.observe(t.get("evidence", 0) / 1000)
        self.generation.observe(max(0.0, t.get("total", 0) - before - t.get("evidence", 0)) / 1000)
