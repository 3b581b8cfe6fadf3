"""Sentence-aware, token-bounded chunks whose offsets point at exact document characters.

Windows are packed from whole sentences (tiktoken ``cl100k_base`` counts) with an overlap of
trailing sentences. A sentence is split only when it alone exceeds the window. When the embedding
model's own tokenizer would truncate a window, the window is split again, so nothing is silently
lost at embedding time.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from rag.records import Chunk, Document
from rag.text import ENCODING_NAME, Span, get_encoding, split_sentences, strip_span


class Chunker:
    """Packs sentences into windows of about ``max_tokens`` with ``overlap`` share repeated.

    Args:
        max_tokens: window size in cl100k_base tokens.
        overlap: share of ``max_tokens`` carried over (as whole sentences) into the next window.
        model_token_count: the embedding model's own token counter, with ``model_max_tokens``
            its limit; windows over the limit are split further.
        title_prefix: chunks are embedded as "title\n\ntext" (see ``embedding_text``); the
            title's tokens then count against the model limit too.
    """

    def __init__(self, max_tokens: int = 200, overlap: float = 0.15,
                 model_token_count: Callable[[str], int] | None = None, model_max_tokens: int = 0,
                 title_prefix: bool = False):
        self.title_prefix = title_prefix
        if max_tokens < 1 or not 0 <= overlap < 1:
            raise ValueError("chunk size must be ≥ 1 token and overlap in [0, 1)")
        self.max_tokens = max_tokens
        self.overlap_tokens = int(round(max_tokens * overlap))
        self.model_token_count = model_token_count
        self.model_max_tokens = model_max_tokens
        self.encoding = get_encoding()

    def config(self) -> dict:
        """What the index's manifest records: another config means every chunk must be redone."""
        return {"encoding": ENCODING_NAME, "max_tokens": self.max_tokens, "overlap_tokens": self.overlap_tokens,
                "model_max_tokens": self.model_max_tokens, "title_prefix": self.title_prefix}

    def count(self, text: str) -> int:
        return len(self.encoding.encode_ordinary(text))

    def embedding_text(self, chunk: Chunk, title: str) -> str:
        """What the model sees for a chunk: its title first when ``title_prefix`` is on."""
        return f"{title}\n\n{chunk.text}" if self.title_prefix and title else chunk.text

    def _model_limit(self, doc: Document) -> int:
        if not (self.title_prefix and self.model_token_count and self.model_max_tokens):
            return self.model_max_tokens
        # A very long title may take at most half the model's window; the chunk gets the rest.
        return max(self.model_max_tokens // 2, self.model_max_tokens - self.model_token_count(doc.title + "\n\n"))

    def chunk(self, doc: Document) -> list[Chunk]:
        """Split one document into chunks, in order."""
        text, limit = doc.text, self._model_limit(doc)
        pieces: list[Span] = []
        for span in split_sentences(text):
            pieces.extend(self._split_long(text, span, limit))
        counts = [self.count(text[s:e]) for s, e in pieces]
        windows = [w for window in self._pack(counts) for w in self._fit_model(text, pieces, window, limit)]
        chunks = []
        for ordinal, (first, last) in enumerate(windows):
            start, end = pieces[first][0], pieces[last][1]
            body = text[start:end]
            chunks.append(Chunk(f"{doc.doc_id}#{ordinal}", doc.doc_id, ordinal, start, end, body,
                                self.count(body)))
        return chunks

    def _split_long(self, text: str, span: Span, limit: int) -> list[Span]:
        """Halve a span at the whitespace nearest its middle until each half fits the window."""
        start, end = span
        if end - start <= 1 or self._piece_fits(text[start:end], limit):
            return [span]
        mid = (start + end) // 2
        gaps = [m.start() for m in re.finditer(r"\s+", text[start:end])]
        cut = start + min(gaps, key=lambda g: abs(start + g - mid)) if gaps else mid
        if cut <= start or cut >= end:
            cut = mid
        # Never cut inside a surrogate-free code point: Python str indices are code points already.
        halves = [strip_span(text, start, cut), strip_span(text, cut, end)]
        return [piece for half in halves if half for piece in self._split_long(text, half, limit)]

    def _piece_fits(self, piece: str, limit: int) -> bool:
        n = self.count(piece)
        if n > self.max_tokens:
            return False
        # A wordpiece covers at least one character, so short pieces need no model tokenizer call.
        if self.model_token_count is None or not limit or len(piece) <= limit:
            return True
        return self.model_token_count(piece) <= limit

    def _pack(self, counts: list[int]) -> list[tuple[int, int]]:
        """Greedy windows of piece indices [first, last], with trailing-sentence overlap."""
        windows: list[tuple[int, int]] = []
        first = 0
        while first < len(counts):
            last, total = first, counts[first]
            while last + 1 < len(counts) and total + counts[last + 1] <= self.max_tokens:
                last += 1
                total += counts[last]
            windows.append((first, last))
            if last + 1 >= len(counts):
                break
            nxt, carried = last + 1, 0
            while nxt - 1 > first and carried + counts[nxt - 1] <= self.overlap_tokens:
                nxt -= 1
                carried += counts[nxt]
            first = nxt
        return windows

    def _fit_model(self, text: str, pieces: list[Span], window: tuple[int, int], limit: int) -> list[tuple[int, int]]:
        """Split a window until it fits both the window size and the embedding model.

        Packing adds up the pieces' counts, but the whitespace between pieces can be tokens of its
        own ("\r", "\n\n"), so the joined text is counted again here.
        """
        first, last = window
        body = text[pieces[first][0]:pieces[last][1]]
        fits = self.count(body) <= self.max_tokens and (
            self.model_token_count is None or not limit or self.model_token_count(body) <= limit)
        if fits or first == last:  # _split_long already made every piece fit
            return [window]
        mid = (first + last) // 2
        return (self._fit_model(text, pieces, (first, mid), limit)
                + self._fit_model(text, pieces, (mid + 1, last), limit))
