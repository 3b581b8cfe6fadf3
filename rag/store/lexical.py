"""BM25 over chunks (bm25s), built at ingest time and saved beside the vectors."""

from __future__ import annotations

import json
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from bm25s.tokenization import Tokenizer

from rag.records import Hit, Ranked


def _tokenizer() -> Tokenizer:
    return Tokenizer(stemmer=Stemmer.Stemmer("english"), stopwords="en")


class LexicalIndex:
    """BM25 scores for chunk ids. Row ``i`` of the BM25 matrix is chunk id ``ids[i]``."""

    def __init__(self, bm25: bm25s.BM25, tokenizer: Tokenizer, ids: np.ndarray):
        self.bm25, self.tokenizer, self.ids = bm25, tokenizer, ids
        self._df: dict[str, int] | None = None

    def idf(self, stem: str) -> float:
        """BM25's idf of a stemmed term over chunks; a term the corpus lacks gets the highest idf."""
        if self._df is None:
            indptr = np.asarray(self.bm25.scores["indptr"])
            columns = self.bm25.vocab_dict
            self._df = {}
            for term, sid in self.tokenizer.stem_to_sid.items():
                col = columns.get(str(sid), columns.get(sid))
                if col is not None and col + 1 < len(indptr):
                    self._df[term] = int(indptr[col + 1] - indptr[col])
        n = max(len(self.ids), 1)
        df = self._df.get(stem, 0)
        return float(np.log(1 + (n - df + 0.5) / (df + 0.5)))

    @classmethod
    def build(cls, ids: list[int], texts: list[str]) -> LexicalIndex:
        tokenizer = _tokenizer()
        tokens = tokenizer.tokenize(texts, update_vocab=True, return_as="ids", show_progress=False)
        bm25 = bm25s.BM25()
        bm25.index(tokens, show_progress=False)
        return cls(bm25, tokenizer, np.asarray(ids, dtype=np.int64))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.bm25.save(str(folder))
        self.tokenizer.save_vocab(str(folder))
        np.save(folder / "ids.npy", self.ids)
        (folder / "tokenizer.json").write_text(json.dumps({"stemmer": "english", "stopwords": "en"}))

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        tokenizer = _tokenizer()
        tokenizer.load_vocab(str(folder))
        return cls(bm25s.BM25.load(str(folder), mmap=False), tokenizer, np.load(folder / "ids.npy"))

    def search(self, query: str, k: int) -> Ranked:
        """Top-k (chunk id, BM25 score) pairs with a positive score, best first."""
        if len(self.ids) == 0:
            return []
        tokens = self.tokenizer.tokenize([query], update_vocab=False, return_as="ids", show_progress=False)
        if not tokens or not tokens[0]:
            return []
        scores = self.bm25.get_scores(tokens[0])
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [Hit(int(self.ids[i]), float(scores[i])) for i in top if scores[i] > 0]
