"""The HTTP API and chat UI (FastAPI). Build with ``create_app(settings)``; `rag serve` runs it."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from rag.answer.answering import Answerer
from rag.answer.generation import GeneratorUnavailable
from rag.answer.pipeline import Pipeline
from rag.embedding.model import Embedder
from rag.errors import UserError
from rag.records import Answer, Turn
from rag.serve.api_models import (
    MAX_QUESTION_CHARS,
    AnswerRequest,
    AnswerResponse,
    ChatCompletionMessage,
    ChatCompletionRequest,
)
from rag.settings import Settings
from rag.store.index import Index, current_generation
from rag.text import split_sentences

STATIC = Path(__file__).resolve().parent / "static"
RETRY_AFTER_S = 5
log = logging.getLogger(__name__)


class Metrics:
    """Prometheus metrics in the app's own registry (no process-global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("rag_requests", "HTTP requests", ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("rag_request_seconds", "HTTP request latency", ["route"], registry=self.registry,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.retrieval = Histogram("rag_retrieval_seconds", "Retrieval time per answer", registry=self.registry,
                                   buckets=(.002, .005, .01, .02, .05, .1, .25, .5, 1))
        self.generation = Histogram("rag_generation_seconds", "Generation + verification time per answer",
                                    registry=self.registry, buckets=(.001, .005, .01, .05, .1, .5, 1, 5, 30))
        self.documents = Gauge("rag_index_documents", "Documents in the loaded index", registry=self.registry)
        self.chunks = Gauge("rag_index_chunks", "Chunks in the loaded index", registry=self.registry)
        self.index_bytes = Gauge("rag_index_bytes", "Size of the loaded index on disk", registry=self.registry)

    def observe_answer(self, answer: Answer) -> None:
        t = answer.timings_ms
        self.retrieval.observe((t.get("retrieve", 0) + t.get("condense", 0)) / 1000)
        self.generation.observe((t.get("generate", 0) + t.get("evidence", 0)) / 1000)


class ServiceState:
    """The loaded model and index. The index is (re)opened when a new generation is published."""

    def __init__(self, settings: Settings, embedder: Embedder | None):
        self.settings, self.embedder = settings, embedder
        self.pipeline: Pipeline | None = None
        self.load_error = ""
        self.metrics = Metrics()
        self._lock = threading.Lock()

    def newer(self) -> Path | None:
        """The live generation when it is not the loaded one; None when there is nothing to open."""
        live = current_generation(self.settings.index_dir)
        loaded = self.pipeline.index.generation if self.pipeline else None
        return live if live is not None and live != loaded and self.embedder is not None else None

    def refresh(self) -> Pipeline | None:
        """Open the live generation if it is not the one loaded (cheap when nothing changed)."""
        live = self.newer()
        if live is None:
            return self.pipeline
        with self._lock:
            if self.pipeline is None or self.pipeline.index.generation != live:
                from rag.answer.pipeline import open_pipeline

                try:
                    self.pipeline = open_pipeline(self.settings, self.embedder)
                    self.load_error = ""
                except UserError as exc:
                    self.load_error = str(exc)
                    return self.pipeline
                index = self.pipeline.index
                self.metrics.documents.set(index.manifest.documents)
                self.metrics.chunks.set(index.manifest.chunks)
                self.metrics.index_bytes.set(index.size_bytes())
        return self.pipeline


class BodyLimit:
    """413 for a request body over the limit, declared or streamed (pure ASGI, so it sees raw bytes)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._too_large(send)
        body, sent = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()
        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        payload = json.dumps({"detail": f"request body is larger than {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})


class Measure:
    """Request count and latency per route (pure ASGI: BaseHTTPMiddleware costs ~1 ms a request).

    An exception that escapes the app becomes a JSON 500, so even a bug answers in the API's format.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), 0

        async def record(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, record)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not status:  # nothing sent yet
                status = 500
                await JSONResponse({"detail": "internal error"}, status_code=500)(scope, receive, send)
        route = getattr(scope.get("route"), "path", "unmatched")
        self.metrics.requests.labels(route, scope["method"], str(status)).inc()
        self.metrics.latency.labels(route).observe(time.perf_counter() - t0)


def _readable(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            parts.append(f"the request body is not valid JSON ({err.get('ctx', {}).get('error', 'decode error')})")
            continue
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts) or "invalid request"


def _history(messages: list[Any]) -> list[Turn]:
    return [Turn(m.role, _text(m.content)) for m in messages if m.role in ("user", "assistant")]


def _text(content: Any) -> str:
    """OpenAI message content: a string, null, or a list of parts of which the text ones count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
    return ""


def starter_questions(store: Index, limit: int = 4) -> list[str]:
    """Questions drawn from the loaded articles: their own FAQ-style questions first, then titles."""
    found: list[str] = []
    docs = store.documents(limit=50)
    for meta in docs:
        doc = store.document(meta["doc_id"])
        for s, e in split_sentences(doc.text):
            sentence = doc.text[s:e]
            if sentence.endswith("?") and 20 <= len(sentence) <= 110 and sentence not in found:
                found.append(sentence)
                break
    for meta in docs:
        if len(found) >= limit:
            break
        found.append(f"What does the article “{meta['title']}” report?")
    return found[:limit]


def create_app(settings: Settings, embedder: Embedder | None = None) -> FastAPI:
    """The FastAPI app. Model and index load once, in the lifespan (or pass a loaded ``embedder``)."""
    state = ServiceState(settings, embedder)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state.embedder is None:
            from rag.embedding.factory import build_query_embedder

            state.embedder = await asyncio.to_thread(build_query_embedder, settings)
        await asyncio.to_thread(state.refresh)
        yield

    app = FastAPI(title="rag: grounded answers from news articles", version="0.1.0", lifespan=lifespan,
                  description="Every claim cited to an exact span of an article; an honest abstention otherwise.")
    app.state.service = state
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    app.add_middleware(Measure, metrics=state.metrics)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _readable(exc)}, status_code=422)

    @app.exception_handler(GeneratorUnavailable)
    async def upstream(request: Request, exc: GeneratorUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=502)

    async def authorised(request: Request) -> None:  # async: trivial work needs no worker thread
        if not settings.api_keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or key.strip() not in settings.api_keys:
            raise HTTPException(401, "missing or invalid API key: send 'Authorization: Bearer <key>'",
                                headers={"WWW-Authenticate": "Bearer"})

    async def pipeline() -> Pipeline:
        # Only opening a new generation blocks; checking for one is a small file read.
        loaded = await asyncio.to_thread(state.refresh) if state.newer() else state.pipeline
        if loaded is None:
            raise HTTPException(503, f"no index loaded yet: {state.load_error or 'run rag ingest'}",
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        return loaded

    guarded = [Depends(authorised)]

    @app.post("/api/answer", response_model=AnswerResponse, dependencies=guarded, tags=["answers"])
    def answer(body: AnswerRequest, p: Pipeline = Depends(pipeline)) -> dict:
        """Answer a question (with optional history) from the articles, with verified citations."""
        result = p.answerer.answer(body.question, _history(body.history), body.top_k)
        state.metrics.observe_answer(result)
        return result.to_dict()

    @app.post("/api/chat", dependencies=guarded, tags=["answers"],
              responses={200: {"content": {"text/event-stream": {}},
                               "description": "SSE: `token` events, one `citations`, then `done` (the answer object)."}})
    async def chat(body: AnswerRequest, p: Pipeline = Depends(pipeline)) -> EventSourceResponse:
        """The same answer as /api/answer, streamed as server-sent events."""
        events = _answer_events(p.answerer, body, state)
        return EventSourceResponse(_threaded(events), ping=15)

    @app.get("/api/search", dependencies=guarded, tags=["retrieval"])
    def search(q: str = Query(min_length=1, max_length=MAX_QUESTION_CHARS), k: int = Query(5, ge=1, le=50),
               p: Pipeline = Depends(pipeline)) -> dict:
        """Passages for a query, best first."""
        if not q.strip():
            raise HTTPException(422, "q: the query is empty")
        return {"passages": [passage.to_dict() for passage in p.retriever.search(q, k)]}

    @app.get("/api/documents", dependencies=guarded, tags=["documents"])
    def documents(offset: int = Query(0, ge=0, le=2**62), limit: int = Query(100, ge=1, le=1000),
                  p: Pipeline = Depends(pipeline)) -> dict:
        return {"documents": p.index.documents(offset, limit), "total": p.index.counts()[0]}

    @app.get("/api/documents/{doc_id:path}", dependencies=guarded, tags=["documents"])
    def document(doc_id: str, p: Pipeline = Depends(pipeline)) -> dict:
        """One article: ``text[start:end]`` equals the text of every citation of it."""
        doc = p.index.document(doc_id)
        if doc is None:
            raise HTTPException(404, f"no document {doc_id!r}")
        return {"doc_id": doc.doc_id, "title": doc.title, "text": doc.text, "source": doc.source,
                "published": doc.published, "metadata": doc.metadata}

    @app.get("/api/starters", dependencies=guarded, tags=["ui"])
    def starters(p: Pipeline = Depends(pipeline)) -> dict:
        return {"questions": starter_questions(p.index)}

    @app.post("/v1/chat/completions", dependencies=guarded, tags=["openai"])
    async def chat_completions(body: ChatCompletionRequest, p: Pipeline = Depends(pipeline)):
        """OpenAI chat-completions shape; the last user message is the question. Citations ride in ``citations``."""
        question, history = _openai_question(body.messages)
        try:
            request = AnswerRequest(question=question,
                                    history=[{"role": t.role, "content": t.content} for t in history][-20:])
        except ValidationError as exc:
            raise HTTPException(422, "messages: " + "; ".join(
                str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())) from exc
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if body.stream:
            return EventSourceResponse(_threaded(_openai_chunks(p.answerer, request, state, body.model, completion_id,
                                                                created)), ping=15)
        result = await asyncio.to_thread(p.answerer.answer, request.question, _history(request.history))
        state.metrics.observe_answer(result)
        return {"id": completion_id, "object": "chat.completion", "created": created, "model": body.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result.answer},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                "citations": [c.to_dict() for c in result.citations], "abstained": result.abstained}

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    def readyz() -> Response:
        loaded = state.refresh()
        if loaded is None:
            return JSONResponse({"status": "not ready", "detail": state.load_error or "model or index not loaded"},
                                status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
        m = loaded.index.manifest
        return JSONResponse({"status": "ready", "documents": m.documents, "chunks": m.chunks,
                             "generation": m.generation, "generator": loaded.answerer.generator.name})

    @app.get("/metrics", tags=["ops"])
    def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def index_page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _openai_question(messages: list[ChatCompletionMessage]) -> tuple[str, list[Turn]]:
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    if not users:
        raise HTTPException(422, "messages: at least one user message is required")
    return _text(messages[users[-1]].content), _history(messages[:users[-1]])


def _answer_events(a: Answerer, body: AnswerRequest, state: ServiceState) -> Iterator[dict]:
    try:
        for item in a.stream(body.question, _history(body.history), body.top_k):
            if isinstance(item, Answer):
                state.metrics.observe_answer(item)
                yield {"event": "citations", "data": json.dumps({"citations": [c.to_dict() for c in item.citations]})}
                yield {"event": "done", "data": json.dumps(item.to_dict(), ensure_ascii=False)}
            else:
                yield {"event": "token", "data": json.dumps({"text": item}, ensure_ascii=False)}
    except GeneratorUnavailable as exc:
        yield {"event": "error", "data": json.dumps({"detail": str(exc)})}


def _openai_chunks(a: Answerer, request: AnswerRequest, state: ServiceState, model: str, cid: str,
                   created: int) -> Iterator[dict]:
    def chunk(delta: dict, finish: str | None = None, **extra) -> dict:
        return {"data": json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra},
                                   ensure_ascii=False)}
    yield chunk({"role": "assistant", "content": ""})
    try:
        final = None
        for item in a.stream(request.question, _history(request.history)):
            if isinstance(item, Answer):
                final = item
            else:
                yield chunk({"content": item})
        if final is not None:
            state.metrics.observe_answer(final)
            yield chunk({}, "stop", citations=[c.to_dict() for c in final.citations], abstained=final.abstained)
    except GeneratorUnavailable as exc:
        yield {"data": json.dumps({"error": {"message": str(exc), "type": "upstream_unavailable"}})}
    yield {"data": "[DONE]"}


async def _threaded(events: Iterator[dict]) -> AsyncIterator[dict]:
    """Run a blocking generator in a worker thread, so the event loop keeps serving others."""
    sentinel = object()
    while True:
        item = await asyncio.to_thread(next, events, sentinel)
        if item is sentinel:
            return
        yield item
