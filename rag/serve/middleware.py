"""Pure ASGI middlewares (Starlette's ``BaseHTTPMiddleware`` costs ~1 ms a request): body limit, metrics."""

from __future__ import annotations

import json
import logging
import time

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from rag.serve.deps import bearer_ok
from rag.serve.metrics import Metrics

log = logging.getLogger(__name__)


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


class KeyGuard:
    """With API keys set, the operational pages need a key too: the metrics (they name routes and
    counts) and the API's own description (/docs, /redoc, /openapi.json). /healthz, /readyz and the
    chat page stay open for load balancers and browsers."""

    GUARDED = ("/metrics", "/openapi.json", "/docs", "/redoc")

    def __init__(self, app: ASGIApp, keys: list[str]):
        self.app, self.keys = app, keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not self.keys or not path.startswith(self.GUARDED):
            return await self.app(scope, receive, send)
        if bearer_ok(dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1"), self.keys):
            return await self.app(scope, receive, send)
        payload = json.dumps({"detail": "missing or invalid API key: send 'Authorization: Bearer <key>'"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": payload})


class Measure:
    """Request count and latency per route.

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
