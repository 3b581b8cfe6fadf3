"""A scripted OpenAI-compatible chat-completions server on loopback, for tests of the LLM paths.

A real HTTP server (stdlib ``ThreadingHTTPServer`` in a thread) answers ``POST /v1/chat/completions``,
stream and non-stream, with the reply the test scripted: so a test decides what the "LLM" drafts
and can assert what verification lets through to the client. Every request is recorded.

Example (``Settings(generator="openai", openai_base_url=llm.url)`` points the app at it):
    >>> import httpx
    >>> with ScriptedLLM() as llm:
    ...     llm.script(Draft("Ties began in 1952 [1]."))
    ...     r = httpx.post(f"{llm.url}/chat/completions", json={"messages": [{"role": "user", "content": "When?"}]})
    >>> r.json()["choices"][0]["message"]["content"], len(llm.requests)
    ('Ties began in 1952 [1].', 1)
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Draft:
    """A completion whose content is ``text``; streamed in pieces of ``piece_chars`` characters, so
    pieces cut across words, sentence ends and ``[n]`` markers."""

    text: str
    piece_chars: int = 5


@dataclass(frozen=True)
class BrokenStream:
    """Streams ``before`` as a normal draft, then a chunk that is not JSON (non-stream: a body that is not)."""

    before: str = ""


@dataclass(frozen=True)
class HTTPFailure:
    """An HTTP error status with ``body``, before any stream starts."""

    status: int = 500
    body: str = "internal error"


@dataclass(frozen=True)
class Stall:
    """Sends the stream's role chunk, then nothing for ``seconds`` (non-stream: no response for that long)."""

    seconds: float


Reply = Draft | BrokenStream | HTTPFailure | Stall
Script = Reply | Callable[[list[dict]], Reply]


def passage_number(messages: list[dict], quote: str) -> int:
    """The number of the first prompt passage (``[n] Title`` blocks in the last user message) holding ``quote``.

    Raises:
        LookupError: no passage holds it (the test's draft could not cite it correctly).
    """
    prompt = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    parts = re.split(r"(?m)^\[(\d+)\] ", prompt)
    for n, block in zip(parts[1::2], parts[2::2]):
        if quote in block:
            return int(n)
    raise LookupError(f"no passage of the prompt holds {quote!r}")


def citing(template: str, **quotes: str) -> Callable[[list[dict]], Draft]:
    r"""A draft whose ``{name}`` fields become the number of the passage that holds ``quotes[name]``.

    Example:
        >>> prompt = "<passages>\n[1] Trade\nTrade grew.\n\n[2] Ties\nTies began in 1952.\n</passages>"
        >>> citing("Ties began in 1952 [{ties}].", ties="began in 1952")([{"role": "user", "content": prompt}])
        Draft(text='Ties began in 1952 [2].', piece_chars=5)
    """
    def reply(messages: list[dict]) -> Draft:
        return Draft(template.format(**{name: passage_number(messages, q) for name, q in quotes.items()}))
    return reply


class ScriptedLLM:
    """The server. ``url`` is its ``/v1`` base URL; ``requests`` the JSON bodies it received, in order.

    ``script(a, b, c)`` queues replies: each request takes the next one, and the last one repeats
    (so one scripted failure also answers the generator's retries). A script may be a callable given
    the request's messages. A reply the script cannot make (an exception) is an HTTP 500 whose body
    names the exception, and is kept in ``errors`` for the test to assert on.
    """

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.errors: list[Exception] = []
        self._queue: deque[Script] = deque()
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=10)

    def script(self, *replies: Script) -> None:
        """Replace the queue: the requests from now on get ``replies`` in order, the last one repeating."""
        with self._lock:
            self._queue = deque(replies)
            self.requests.clear()
            self.errors.clear()

    def _next(self, body: dict) -> Reply:
        with self._lock:
            self.requests.append(body)
            if not self._queue:
                raise LookupError("the test scripted no reply for this request")
            script = self._queue.popleft() if len(self._queue) > 1 else self._queue[0]
        return script(body.get("messages", [])) if callable(script) else script


def _handler(llm: ScriptedLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args) -> None:
            pass  # keep pytest output clean

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._json(404, {"error": {"message": f"no route {self.path}"}})
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            try:
                reply = llm._next(body)
            except Exception as exc:  # a test's script bug is reported, not a hung client
                llm.errors.append(exc)
                return self._json(500, {"error": {"message": f"script error: {exc!r}"}})
            if isinstance(reply, HTTPFailure):
                return self._raw(reply.status, "application/json", reply.body.encode())
            if isinstance(reply, Stall) and not body.get("stream"):
                time.sleep(reply.seconds)
                return self._json(200, _completion(body, ""))
            if body.get("stream"):
                return self._stream(body, reply)
            if isinstance(reply, BrokenStream):
                return self._raw(200, "application/json", b'{"choices": [{"message": ')
            return self._json(200, _completion(body, reply.text))

        def _stream(self, body: dict, reply: Reply) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self._event(_chunk(body, {"role": "assistant", "content": ""}))
            if isinstance(reply, Stall):
                time.sleep(reply.seconds)
                return
            text = reply.before if isinstance(reply, BrokenStream) else reply.text
            self._pieces(body, text, reply.piece_chars if isinstance(reply, Draft) else 5)
            if isinstance(reply, BrokenStream):  # then a valid chunk and [DONE]: only the bad chunk is wrong
                self._send(b'data: {"choices": [{"delta": {"content": "unterminated\n\n')
                self._pieces(body, " More text after the broken chunk.", 5)
            self._event(_chunk(body, {}, "stop"))
            self._send(b"data: [DONE]\n\n")

        def _pieces(self, body: dict, text: str, size: int) -> None:
            for i in range(0, len(text), size):
                self._event(_chunk(body, {"content": text[i:i + size]}))

        def _event(self, payload: dict) -> None:
            self._send(f"data: {json.dumps(payload)}\n\n".encode())

        def _send(self, data: bytes) -> None:
            self.wfile.write(data)
            self.wfile.flush()

        def _json(self, status: int, payload: dict) -> None:
            self._raw(status, "application/json", json.dumps(payload).encode())

        def _raw(self, status: int, content_type: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self._send(data)

    return Handler


def _completion(body: dict, text: str) -> dict:
    return {"id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "scripted"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


def _chunk(body: dict, delta: dict, finish: str | None = None) -> dict:
    return {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": body.get("model", "scripted"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
