"""The FastAPI app factory: ``create_app(settings)`` wires state, middlewares, error handlers and routes.

The routes live in ``rag.serve.routes`` (/api, ops, the UI) and ``rag.serve.openai_compat`` (/v1);
the index is loaded, and reloaded when a new generation is published, by ``rag.serve.reload``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from rag import __version__
from rag.answer.generation import GeneratorUnavailable, PromptTooLong
from rag.embedding.model import Embedder
from rag.serve import openai_compat, routes, uploads
from rag.serve.middleware import Admission, BodyLimit, HostGuard, KeyGuard, Measure, SecurityHeaders
from rag.serve.reload import ServiceState
from rag.settings import Settings


def create_app(settings: Settings, embedder: Embedder | None = None,
               ingest_embedder: Embedder | None = None) -> FastAPI:
    """The FastAPI app. Model and index load once, in the lifespan (or pass a loaded ``embedder``); the
    chunk model uploads need loads on the first upload (or pass ``ingest_embedder``)."""
    state = ServiceState(settings, embedder, ingest_embedder=ingest_embedder)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Blocking work (sync routes, streams, reloads) runs on a bounded pool, not one thread per request.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="rag-worker"))
        to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        if state.embedder is None:
            from rag.embedding.factory import build_query_embedder

            state.embedder = await asyncio.to_thread(build_query_embedder, settings)
        await asyncio.to_thread(state.refresh)
        yield
        state.feedback.close()

    app = FastAPI(title="rag: grounded answers from news articles", version=__version__, lifespan=lifespan,
                  description="Every claim cited to an exact span of an article; an honest abstention otherwise.")
    app.state.service = state
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(KeyGuard, keys=settings.api_keys)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, max_upload_bytes=settings.max_upload_bytes)
    app.add_middleware(Admission, limit=settings.max_concurrent_requests, queue_timeout_s=settings.queue_timeout_s,
                       deadline_s=settings.request_deadline_s, metrics=state.metrics)
    app.add_middleware(HostGuard, allowed=allowed_hosts(settings))
    app.add_middleware(SecurityHeaders)
    app.add_middleware(Measure, metrics=state.metrics)  # outermost: sees every status, the guards' included
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(GeneratorUnavailable, _upstream)
    app.add_exception_handler(PromptTooLong, _too_long)
    app.include_router(routes.api)
    app.include_router(uploads.router)
    app.include_router(openai_compat.router)
    app.include_router(routes.ops)
    app.mount("/static", StaticFiles(directory=routes.STATIC), name="static")
    return app


def allowed_hosts(settings: Settings) -> list[str]:
    """The Host allowlist: the setting, plus the address the server was told to listen on (not a wildcard)."""
    extra = [] if settings.host in {"0.0.0.0", "::", ""} else [f"[{settings.host}]" if ":" in settings.host else settings.host]
    return [*settings.allowed_hosts, *extra]


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with one readable sentence per problem, instead of pydantic's error list."""
    return JSONResponse({"detail": readable(exc)}, status_code=422)


async def _upstream(request: Request, exc: GeneratorUnavailable) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=502)


async def _too_long(request: Request, exc: PromptTooLong) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=413)


def readable(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            parts.append(f"the request body is not valid JSON ({err.get('ctx', {}).get('error', 'decode error')})")
            continue
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts) or "invalid request"
