"""Server-sent events: an answer stream (text pieces, then the verified ``Answer``) as SSE events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

from rag.answer.answering import Answerer
from rag.answer.generation import GeneratorUnavailable
from rag.records import Answer, Turn
from rag.serve.metrics import Metrics


def answer_events(answerer: Answerer, question: str, history: list[Turn], top_k: int | None,
                  metrics: Metrics) -> Iterator[dict]:
    """/api/chat: ``token`` events, then one ``citations`` event, then ``done`` with the answer object."""
    try:
        for item in answerer.stream(question, history, top_k):
            if isinstance(item, Answer):
                metrics.observe_answer(item)
                yield {"event": "citations", "data": json.dumps({"citations": [c.to_dict() for c in item.citations]})}
                yield {"event": "done", "data": json.dumps(item.to_dict(), ensure_ascii=False)}
            else:
                yield {"event": "token", "data": json.dumps({"text": item}, ensure_ascii=False)}
    except GeneratorUnavailable as exc:
        yield {"event": "error", "data": json.dumps({"detail": str(exc)})}


async def threaded(events: Iterator[dict]) -> AsyncIterator[dict]:
    """Run a blocking generator in a worker thread, so the event loop keeps serving others."""
    sentinel = object()
    while True:
        item = await asyncio.to_thread(next, events, sentinel)
        if item is sentinel:
            return
        yield item
