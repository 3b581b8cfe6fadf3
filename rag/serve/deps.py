"""FastAPI dependencies shared by the routes: the app's state, the API-key check, the loaded pipeline.

All are ``async``: trivial work needs no worker thread.
"""

from __future__ import annotations

import asyncio
import hmac

from fastapi import Depends, HTTPException, Request

from rag.answer.pipeline import Pipeline
from rag.serve.reload import ServiceState

RETRY_AFTER_S = 5
NOT_LOADED = "no index loaded yet: run rag ingest"


async def service(request: Request) -> ServiceState:
    return request.app.state.service


def key_matches(key: str, keys: list[str]) -> bool:
    """Whether ``key`` is one of ``keys``, compared in constant time; an empty key never matches.

    Example:
        >>> key_matches("s3cret", ["", "s3cret"]), key_matches("", ["", "s3cret"]), key_matches("s3cre", ["s3cret"])
        (True, False, False)
    """
    found = False
    for candidate in keys:  # every key is compared, so the time does not tell which one nearly matched
        found |= bool(candidate) and hmac.compare_digest(key.encode(), candidate.encode())
    return bool(key) and found


def bearer_ok(authorization: str, keys: list[str]) -> bool:
    """Whether an ``Authorization`` header value carries one of ``keys`` as a Bearer token."""
    scheme, _, key = authorization.partition(" ")
    return scheme.lower() == "bearer" and key_matches(key.strip(), keys)


async def authorised(request: Request) -> None:
    """401 unless the request carries one of the configured keys (no keys: open)."""
    keys = request.app.state.service.settings.api_keys
    if not keys:
        return
    if not bearer_ok(request.headers.get("authorization", ""), keys):
        raise HTTPException(401, "missing or invalid API key: send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})


async def pipeline(state: ServiceState = Depends(service)) -> Pipeline:
    """The loaded pipeline, after opening a newer generation if one was published; 503 while there is none."""
    # Only opening a new generation blocks; checking for one is a small file read.
    loaded = await asyncio.to_thread(state.refresh) if state.newer() else state.pipeline
    if loaded is None:
        raise HTTPException(503, state.load_error or NOT_LOADED,
                            headers={"Retry-After": str(RETRY_AFTER_S)})
    return loaded
