"""Chat messages for LLM generators: system prompt, recent history, fenced passages and question."""

from __future__ import annotations

from rag.answer.generation import AnswerContext
from rag.answer.prompts import PromptLibrary, format_passages

HISTORY_TURNS = 6


def answer_messages(ctx: AnswerContext, prompts: PromptLibrary) -> list[dict[str, str]]:
    """System prompt, the last few turns, then the numbered passages and the question as fenced data."""
    messages = [{"role": "system", "content": prompts.text("system")}]
    for turn in ctx.history[-HISTORY_TURNS:]:
        messages.append({"role": turn.role, "content": turn.content})
    messages.append({"role": "user", "content": prompts.render(
        "answer", passages=format_passages(ctx.passages), question=ctx.question)})
    return messages
