"""Starter questions for the chat UI, drawn from the loaded articles."""

from __future__ import annotations

from rag.store.index import Index
from rag.text import split_sentences


def starter_questions(index: Index, limit: int = 4) -> list[str]:
    """The articles' own FAQ-style questions first, then questions about their titles."""
    found: list[str] = []
    docs = index.documents(limit=50)
    for meta in docs:
        doc = index.document(meta["doc_id"])
        for s, e in split_sentences(doc.text):
            sentence = doc.text[s:e]
            if sentence.endswith("?") and 20 <= len(sentence) <= 110 and sentence not in found:
                found.append(sentence)
                break
    for meta in docs:
        if len(found) >= limit:
            break
        found.append(f"What does the article “{meta['title']}” report?")
    return found[:limit]
