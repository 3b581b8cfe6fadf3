"""The /api routes (answers, search, documents, starters, feedback) and the ops routes (health, readiness, metrics, UI)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette.sse import EventSourceResponse

from rag.answer.pipeline import Pipeline
from rag.filters import MAX_VALUES, BadFilter, Filters
from rag.serve.api_models import MAX_QUESTION_CHARS, AnswerRequest, AnswerResponse, FeedbackCreated, FeedbackRequest, turns
from rag.serve.deps import NOT_LOADED, RETRY_AFTER_S, authorised, pipeline, service
from rag.serve.events import answer_events, threaded
from rag.serve.reload import ServiceState, without_paths

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger(__name__)

api = APIRouter(dependencies=[Depends(authorised)])
ops = APIRouter()


@api.post("/api/answer", response_model=AnswerResponse, tags=["answers"])
def answer(body: AnswerRequest, p: Pipeline = Depends(pipeline), state: ServiceState = Depends(service)) -> dict:
    """Answer a question (with optional history) from the articles, with verified citations."""
    result = p.answerer.answer(body.question, turns(body.history), body.top_k, body.parsed_filters())
    state.metrics.observe_answer(result)
    return result.to_dict()


@api.post("/api/chat", tags=["answers"],
          responses={200: {"content": {"text/event-stream": {}},
                           "description": "SSE: `token` events, one `citations`, then `done` (the answer object)."}})
async def chat(body: AnswerRequest, p: Pipeline = Depends(pipeline),
               state: ServiceState = Depends(service)) -> EventSourceResponse:
    """The same answer as /api/answer, streamed as server-sent events."""
    events = answer_events(p.answerer, body.question, turns(body.history), body.top_k, state.metrics,
                           body.parsed_filters())
    return EventSourceResponse(threaded(events), ping=15)


@api.get("/api/search", tags=["retrieval"])
def search(q: str = Query(min_length=1, max_length=MAX_QUESTION_CHARS), k: int = Query(5, ge=1, le=50),
           sources: list[str] = Query([], max_length=MAX_VALUES), published_after: str | None = None,
           published_before: str | None = None, doc_ids: list[str] = Query([], max_length=MAX_VALUES),
           p: Pipeline = Depends(pipeline)) -> dict:
    """Passages for a query, best first; only from the articles that pass the filters when given."""
    if not q.strip():
        raise HTTPException(422, "q: the query is empty")
    try:
        filters = Filters.parse(sources, published_after, published_before, doc_ids)
    except BadFilter as exc:
        raise HTTPException(422, str(exc)) from exc
    return {"passages": [passage.to_dict() for passage in p.retriever.search(q, k, filters=filters or None)]}


@api.get("/api/documents", tags=["documents"])
def documents(offset: int = Query(0, ge=0, le=2**62), limit: int = Query(100, ge=1, le=1000),
              p: Pipeline = Depends(pipeline)) -> dict:
    listed = [row | {"published": row["published"] or None} for row in p.index.documents(offset, limit)]
    return {"documents": listed, "total": p.index.counts()[0]}


@api.get("/api/documents/{doc_id:path}", tags=["documents"])
def document(doc_id: str, p: Pipeline = Depends(pipeline)) -> dict:
    """One article: ``text[start:end]`` equals the text of every citation of it."""
    doc = p.index.document(doc_id)
    if doc is None:
        raise HTTPException(404, f"no document {doc_id!r}")
    return {"doc_id": doc.doc_id, "title": doc.title, "text": doc.text, "source": doc.source,
            "published": doc.published or None, "metadata": doc.metadata}


@api.get("/api/facets", tags=["documents"])
def facets(p: Pipeline = Depends(pipeline)) -> dict:
    """What filters can choose from: sources with their article counts, the first and last publication dates."""
    return p.index.catalogue().facets()


@api.get("/api/starters", tags=["ui"])
def starters(p: Pipeline = Depends(pipeline), state: ServiceState = Depends(service)) -> dict:
    return {"questions": state.starters(p)}


@api.post("/api/feedback", status_code=201, response_model=FeedbackCreated, tags=["feedback"])
def feedback(body: FeedbackRequest, state: ServiceState = Depends(service)) -> dict:
    """Rate an answer (1 good, -1 bad), with an optional comment; `rag eval --from-feedback` exports the ratings."""
    loaded = state.pipeline
    try:
        new_id = state.feedback.add(body.record(), loaded.index.generation.name if loaded else "")
    except (sqlite3.Error, OSError) as exc:  # a full disk, a read-only index folder: the operator's to fix
        log.exception("feedback could not be stored")
        raise HTTPException(503, f"feedback could not be stored ({without_paths(str(exc))})",
                            headers={"Retry-After": str(RETRY_AFTER_S)}) from exc
    return {"id": new_id}


@ops.get("/healthz", tags=["ops"])
def healthz() -> dict:
    return {"status": "ok"}


@ops.get("/readyz", tags=["ops"])
def readyz(state: ServiceState = Depends(service)) -> Response:
    """200 once an index is loaded (with what it holds); 503 before. No filesystem paths, ever."""
    loaded = state.refresh()  # cheap: a failed generation is retried only after its back-off
    if loaded is None:
        return JSONResponse({"status": "not ready", "detail": state.load_error or NOT_LOADED},
                            status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
    m = loaded.index.manifest
    body = {"status": "ready", "documents": m.documents, "chunks": m.chunks,
            "generation": m.generation, "vector_store": m.store, "generator": loaded.answerer.generator.name}
    if state.load_error:  # a newer generation failed: still serving this one
        body["reload_error"] = state.load_error
    return JSONResponse(body)


@ops.get("/metrics", tags=["ops"])
def metrics(state: ServiceState = Depends(service)) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@ops.get("/", include_in_schema=False)
def index_page() -> FileResponse:
    return FileResponse(STATIC / "index.html")
