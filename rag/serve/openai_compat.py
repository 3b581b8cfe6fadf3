"""The OpenAI-compatible adapter: ``POST /v1/chat/completions`` (stream and non-stream).

The last user message is the question and the messages before it the history; the answer's
citations ride in an extra ``citations`` field (and ``abstained``), which OpenAI clients keep in
``model_extra``. A request may carry ``filters`` and ``top_k`` as extra body fields (``extra_body`` in
the OpenAI clients), read as /api/answer reads them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

from fastapi import APIRouter, Depends, HTTPException
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse

from rag.answer.answering import Answerer
from rag.answer.generation import GeneratorUnavailable
from rag.answer.pipeline import Pipeline
from rag.records import Answer, Turn
from rag.serve.api_models import MAX_HISTORY, AnswerRequest, ChatCompletionMessage, ChatCompletionRequest, turns
from rag.serve.deps import authorised, pipeline, service
from rag.serve.events import failure_detail, threaded
from rag.serve.metrics import Metrics
from rag.serve.reload import ServiceState

router = APIRouter(dependencies=[Depends(authorised)], tags=["openai"])


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, p: Pipeline = Depends(pipeline),
                           state: ServiceState = Depends(service)):
    """OpenAI chat-completions shape; the last user message is the question. Citations ride in ``citations``."""
    request = _answer_request(body)
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if body.stream:
        chunks = _chunks(p.answerer, request, state.metrics, body.model, completion_id, created)
        return EventSourceResponse(threaded(chunks), ping=15)
    result = await asyncio.to_thread(p.answerer.answer, request.question, turns(request.history), request.top_k,
                                     request.parsed_filters())
    state.metrics.observe_answer(result)
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": body.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.answer},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "citations": [c.to_dict() for c in result.citations], "abstained": result.abstained}


def _answer_request(body: ChatCompletionRequest) -> AnswerRequest:
    """The /api/answer request the messages (and extra fields) amount to, validated like one (422 on what it rejects)."""
    question, history = _question(body.messages)
    try:
        return AnswerRequest(question=question, top_k=body.top_k, filters=body.filters,
                             history=[{"role": t.role, "content": t.content} for t in history][-MAX_HISTORY:])
    except ValidationError as exc:
        raise HTTPException(422, "messages: " + "; ".join(
            str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())) from exc


def _question(messages: list[ChatCompletionMessage]) -> tuple[str, list[Turn]]:
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    if not users:
        raise HTTPException(422, "messages: at least one user message is required")
    return messages[users[-1]].text(), turns(messages[:users[-1]])


def _chunks(answerer: Answerer, request: AnswerRequest, metrics: Metrics, model: str, cid: str,
            created: int) -> Iterator[dict]:
    def chunk(delta: dict, finish: str | None = None, **extra) -> dict:
        return {"data": json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra},
                                   ensure_ascii=False)}
    yield chunk({"role": "assistant", "content": ""})
    try:
        final = None
        for item in answerer.stream(request.question, turns(request.history), request.top_k,
                                    request.parsed_filters()):
            if isinstance(item, Answer):
                final = item
            else:
                yield chunk({"content": item})
        if final is not None:
            metrics.observe_answer(final)
            yield chunk({}, "stop", citations=[c.to_dict() for c in final.citations], abstained=final.abstained)
    except Exception as exc:  # logged in failure_detail; the stream must still end with [DONE]
        kind = "upstream_unavailable" if isinstance(exc, GeneratorUnavailable) else "server_error"
        yield {"data": json.dumps({"error": {"message": failure_detail(exc), "type": kind}})}
    yield {"data": "[DONE]"}
