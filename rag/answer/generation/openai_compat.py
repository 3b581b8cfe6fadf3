"""Any OpenAI-compatible chat-completions server (vLLM, llama.cpp server, Ollama, hosted APIs)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import httpx

from rag.answer.generation import AnswerContext, GeneratorUnavailable
from rag.answer.generation.chat import HISTORY_TOKENS, answer_messages
from rag.answer.prompts import PromptLibrary

RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
# Not JSON, or JSON without the chat-completion fields we read.
MALFORMED = (ValueError, KeyError, IndexError, TypeError, AttributeError)

log = logging.getLogger(__name__)


class OpenAIGenerator:
    """Chat completions over HTTP with timeouts, retries (connection errors, 5xx, 429) and streaming.

    Failures raise ``GeneratorUnavailable`` with a short message that an API client may see (no URL, no
    response body: those can carry internal addresses and secrets); the detail goes to the log.

    Args:
        base_url: e.g. ``http://127.0.0.1:8080/v1``.
        timeout_s: read timeout per request; connecting gets at most 5 s.
    """

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str, prompts: PromptLibrary,
                 timeout_s: float = 60.0, retries: int = 2, max_tokens: int = 256,
                 history_tokens: int = HISTORY_TOKENS):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.timeout_s = timeout_s
        self.model, self.prompts, self.retries, self.max_tokens = model, prompts, retries, max_tokens
        self.history_tokens = history_tokens
        self.client = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)),
                                   headers={"Authorization": f"Bearer {api_key}"})

    def _body(self, messages: list[dict[str, str]], max_tokens: int, stream: bool) -> dict:
        return {"model": self.model, "messages": messages, "temperature": 0.0, "max_tokens": max_tokens,
                "stream": stream}

    def _with_retries(self, call):
        delay = 0.5
        for attempt in range(self.retries + 1):
            try:
                return call()
            except httpx.HTTPStatusError as exc:
                status = exc.response.status_code
                if status not in RETRYABLE_STATUS or attempt == self.retries:
                    log.warning("%s answered HTTP %s: %s", self.url, status, exc.response.text[:300])
                    raise GeneratorUnavailable(f"the language model server returned HTTP {status}") from exc
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise self._transport_failure(exc) from exc
            time.sleep(delay)
            delay *= 2

    def _transport_failure(self, exc: httpx.TransportError) -> GeneratorUnavailable:
        log.warning("the OpenAI-compatible server at %s failed: %s: %s", self.url, type(exc).__name__, exc)
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            return GeneratorUnavailable(f"the language model server did not answer within {self.timeout_s:g} s")
        return GeneratorUnavailable(f"cannot reach the language model server ({type(exc).__name__}): "
                                    "is it running? Check RAG_OPENAI_BASE_URL.")

    def _malformed(self, exc: Exception, what: str) -> GeneratorUnavailable:
        log.warning("%s sent a malformed %s: %s: %s", self.url, what, type(exc).__name__, exc)
        return GeneratorUnavailable("the language model server sent a malformed reply")

    def complete(self, messages: list[dict[str, str]], max_tokens: int | None = None) -> str:
        def call() -> str:
            r = self.client.post(self.url, json=self._body(messages, max_tokens or self.max_tokens, False))
            r.raise_for_status()
            try:
                return r.json()["choices"][0]["message"]["content"] or ""
            except MALFORMED as exc:
                raise self._malformed(exc, f"completion ({r.text[:300]!r})") from exc
        return self._with_retries(call)

    def generate(self, ctx: AnswerContext) -> str:
        return self.complete(answer_messages(ctx, self.prompts, self.history_tokens))

    def stream(self, ctx: AnswerContext) -> Iterator[str]:
        body = self._body(answer_messages(ctx, self.prompts, self.history_tokens), self.max_tokens, True)

        def open_stream():
            request = self.client.build_request("POST", self.url, json=body)
            response = self.client.send(request, stream=True)
            if response.status_code >= 400:
                response.read()
                response.raise_for_status()
            return response

        response = self._with_retries(open_stream)
        try:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    delta = json.loads(data)["choices"][0].get("delta", {}).get("content")
                except MALFORMED as exc:
                    raise self._malformed(exc, f"stream chunk ({data[:300]!r})") from exc
                if delta:
                    yield delta
        except httpx.TransportError as exc:
            raise self._transport_failure(exc) from exc
        finally:
            response.close()
