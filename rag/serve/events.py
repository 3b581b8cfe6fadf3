"""Server-sent events: an answer stream (text pieces, then the verified ``Answer``) as SSE events."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Generator, Iterator

from rag.answer.answering import Answerer
from rag.answer.generation import GeneratorUnavailable
from rag.filters import Filters
from rag.records import Answer, Turn
from rag.serve.metrics import Metrics

INTERNAL_ERROR = "the answer failed on the server (the details are in its log)"

log = logging.getLogger(__name__)


def answer_events(answerer: Answerer, question: str, history: list[Turn], top_k: int | None,
                  metrics: Metrics, filters: Filters | None = None) -> Iterator[dict]:
    """/api/chat: ``token`` events, then one ``citations`` event, then ``done`` with the answer object."""
    try:
        for item in answerer.stream(question, history, top_k, filters):
            if isinstance(item, Answer):
                metrics.observe_answer(item)
                yield {"event": "citations", "data": json.dumps({"citations": [c.to_dict() for c in item.citations]})}
                yield {"event": "done", "data": json.dumps(item.to_dict(), ensure_ascii=False)}
            else:
                yield {"event": "token", "data": json.dumps({"text": item}, ensure_ascii=False)}
    except Exception as exc:  # logged in failure_detail; after the headers, the stream must still end properly
        yield {"event": "error", "data": json.dumps({"detail": failure_detail(exc)})}


def failure_detail(exc: Exception) -> str:
    """What a client is told when an answer stream fails after its headers went out (a 500 is no longer
    possible): a backend's own short message, or a generic one for a bug, whose traceback goes to the log."""
    if isinstance(exc, GeneratorUnavailable):
        return str(exc)
    log.error("an answer stream failed", exc_info=exc)
    return INTERNAL_ERROR


async def threaded(events: Generator[dict, None, None]) -> AsyncIterator[dict]:
    """Run a blocking generator in a worker thread, so the event loop keeps serving others.

    When the client hangs up, the generator is closed as soon as its current step ends, so what it
    holds (the llama.cpp lock, an upstream connection) is released then, not whenever it is collected.
    """
    sentinel = object()
    step = threading.Lock()  # close() must wait for a next() still running in a worker

    def advance():
        with step:
            return next(events, sentinel)

    def close() -> None:
        with step:
            events.close()

    try:
        while True:
            item = await asyncio.to_thread(advance)
            if item is sentinel:
                return
            yield item
    finally:
        asyncio.get_running_loop().run_in_executor(None, close)  # not awaited: the task may be cancelled
