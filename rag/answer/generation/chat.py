"""Chat messages for LLM generators: system prompt, recent history, fenced passages and question."""

from __future__ import annotations

from rag.answer.generation import AnswerContext
from rag.answer.prompts import PromptLibrary, format_passages
from rag.text import get_encoding

HISTORY_TURNS = 6
HISTORY_TOKENS = 1000  # Settings.history_tokens: what earlier turns may cost in a prompt


def answer_messages(ctx: AnswerContext, prompts: PromptLibrary,
                    history_tokens: int = HISTORY_TOKENS) -> list[dict[str, str]]:
    """System prompt, the newest turns that fit ``history_tokens``, then the numbered passages and the
    question as fenced data. Passages are packed under their own budget (``pack_passages``)."""
    messages = [{"role": "system", "content": prompts.text("system")}]
    messages += [{"role": t.role, "content": t.content} for t in recent_turns(ctx, history_tokens)]
    messages.append({"role": "user", "content": prompts.render(
        "answer", passages=format_passages(ctx.passages), question=ctx.question)})
    return messages


def recent_turns(ctx: AnswerContext, budget: int) -> list:
    """The newest of the last ``HISTORY_TURNS`` turns whose cl100k tokens fit ``budget``, oldest first.

    A turn that does not fit ends the history there: a conversation is never shown with a hole in it.
    """
    encoding, kept, used = get_encoding(), [], 0
    for turn in reversed(ctx.history[-HISTORY_TURNS:]):
        used += len(encoding.encode_ordinary(turn.content)) + 4  # + the chat template's role markers
        if used > budget:
            break
        kept.append(turn)
    return kept[::-1]
