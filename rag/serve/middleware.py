"""Pure ASGI middlewares (Starlette's ``BaseHTTPMiddleware`` costs ~1 ms a request): body limit, metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from rag.serve.deps import bearer_ok
from rag.serve.metrics import Metrics

log = logging.getLogger(__name__)


UPLOAD_PATH = "/api/documents"  # POST: uploads, under their own, larger limit (Settings.max_upload_bytes)


class UploadTooLarge(Exception):
    """Raised from ``receive`` when an upload's body passes its limit while it streams in."""


class BodyLimit:
    """413 for a request body over the limit, declared or streamed (pure ASGI, so it sees raw bytes).

    A body is read whole before the app runs, except an upload (``POST /api/documents``): it streams
    through to the route (which spools it to disk) and is counted on the way, so it never sits in memory.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int = 0):
        self.app, self.max_bytes, self.max_upload_bytes = app, max_bytes, max_upload_bytes or max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if scope["method"] == "POST" and scope.get("path") == UPLOAD_PATH:
            return await self._stream_upload(scope, receive, send, declared)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(send, self.max_bytes)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._too_large(send, self.max_bytes)
        body, sent = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()
        await self.app(scope, replay, send)

    async def _stream_upload(self, scope: Scope, receive: Receive, send: Send, declared: bytes | None) -> None:
        limit = self.max_upload_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self._too_large(send, limit, upload=True)
        size, started = 0, False

        async def counted() -> dict:
            nonlocal size
            message = await receive()
            size += len(message.get("body", b""))
            if size > limit:
                raise UploadTooLarge
            return message

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)
        try:
            await self.app(scope, counted, tracked)
        except UploadTooLarge:
            if not started:
                await self._too_large(send, limit, upload=True)

    async def _too_large(self, send: Send, limit: int, upload: bool = False) -> None:
        detail = (f"the upload is larger than {limit} bytes (RAG_MAX_UPLOAD_BYTES): send fewer or smaller files "
                  "per request" if upload else f"request body is larger than {limit} bytes")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps({"detail": detail}).encode()})


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


async def _reply(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *(headers or [])]})
    await send({"type": "http.response.body", "body": json.dumps({"detail": detail}).encode()})


def host_of(header: str) -> str:
    """The host part of a Host header, without its port; IPv6 keeps its brackets.

    Example:
        >>> host_of("127.0.0.1:8000"), host_of("[::1]:8000"), host_of("Example.org")
        ('127.0.0.1', '[::1]', 'example.org')
    """
    header = header.strip().lower()
    if header.startswith("["):
        return header[:header.find("]") + 1]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostGuard:
    """400 for a Host header not in the allowlist: a page on another origin that rebinds its DNS name to
    127.0.0.1 cannot reach the API through the user's browser (its requests carry the attacker's host)."""

    def __init__(self, app: ASGIApp, allowed: list[str]):
        self.app, self.allowed = app, {host_of(h) for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "*" in self.allowed:
            return await self.app(scope, receive, send)
        host = host_of(dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1"))
        if host in self.allowed:
            return await self.app(scope, receive, send)
        await _reply(send, 400, "this server does not answer for that host name (RAG_ALLOWED_HOSTS)")


class SecurityHeaders:
    """Headers on every response: a CSP with no inline script (the UI has none), no framing, no MIME sniffing.

    The OpenAPI pages (/docs, /redoc) run FastAPI's inline bootstrap script, so they get only the rest.
    """

    CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
           "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    COMMON = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
              (b"referrer-policy", b"no-referrer")]

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        docs = scope.get("path", "").startswith(("/docs", "/redoc"))
        extra = self.COMMON if docs else [(b"content-security-policy", self.CSP.encode()), *self.COMMON]

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)
        await self.app(scope, receive, with_headers)


class Admission:
    """Bounded work: at most ``limit`` /api and /v1 requests at work at once.

    A request waits at most ``queue_timeout_s`` for a slot, else 503 with ``Retry-After``; one whose
    response has not started within ``deadline_s`` gets a 504 (a stream, once started, runs on under its
    generator's own timeout). Health, readiness, metrics and the UI's files are never queued.
    """

    LIMITED = ("/api/", "/v1/")
    # An ingest, once begun, runs to its publish in a worker thread: a 504 would not stop it, and the
    # client would not learn whether its articles landed. Its size is bounded by the upload limit instead.
    UNTIMED = {("POST", UPLOAD_PATH), ("DELETE", UPLOAD_PATH)}

    def __init__(self, app: ASGIApp, limit: int, queue_timeout_s: float, deadline_s: float, metrics: Metrics):
        self.app, self.limit, self.queue_timeout_s, self.deadline_s = app, limit, queue_timeout_s, deadline_s
        self.metrics = metrics
        self._slots: asyncio.Semaphore | None = None  # made on first use, inside the server's event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(self.LIMITED):
            return await self.app(scope, receive, send)
        self._slots = self._slots or asyncio.Semaphore(self.limit)
        try:
            await asyncio.wait_for(self._slots.acquire(), self.queue_timeout_s)
        except TimeoutError:
            self.metrics.rejected.labels("busy").inc()
            return await _reply(send, 503, f"the server is busy ({self.limit} requests at work): retry shortly",
                                [(b"retry-after", b"1")])
        try:
            if self._untimed(scope):
                await self.app(scope, receive, send)
            else:
                await self._within_deadline(scope, receive, send)
        finally:
            self._slots.release()

    def _untimed(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        return (scope["method"], UPLOAD_PATH if path.startswith(UPLOAD_PATH + "/") else path) in self.UNTIMED

    async def _within_deadline(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)
        task = asyncio.ensure_future(self.app(scope, receive, tracked))
        done, _ = await asyncio.wait({task}, timeout=self.deadline_s)
        if done or started:
            return await task
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        if not started:
            self.metrics.rejected.labels("deadline").inc()
            await _reply(send, 504, f"no answer within {self.deadline_s:g} s (RAG_REQUEST_DEADLINE_S)")
