"""A lean embedder for queries and short texts: the same model exported once to ONNX, run by onnxruntime.

The float export gives sentence-transformers' embeddings (cosine 1.000000 on the packaged model) at
~5 ms per query on one core instead of ~15 ms through torch; its int8 copy (per-channel dynamic
quantization) ~2 ms, with vectors at cosine ~0.99 to the model's. Serving imports neither torch nor
sentence-transformers (cold start). Chunks are still embedded by ``SentenceTransformerEmbedder``.

The export needs torch and runs once per model: the files are cached under ``cache_dir`` keyed by the
weights' sha256 (``<sha16>.onnx``, ``<sha16>.int8.onnx``). Each is written to a temp name, fsynced and
renamed into place, and its own sha256 is recorded beside it (``<file>.sha256``); a cached file is
trusted by that record, not by existing, so a truncated or damaged one is rebuilt instead of loaded.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from rag.durable import fsync_path
from rag.embedding.model import WEIGHTS, check_weights, mean_pooled, resolve_model, sha256_file

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PAD_SLACK = 1.15  # a batch holds texts at most 15% longer than its shortest


class OnnxUnavailable(RuntimeError):
    """onnxruntime is missing or the model is not a mean-pooled transformer; use the torch embedder."""


def export_onnx(spec: str, target: Path) -> None:
    """Export the model's transformer to ONNX (dynamic batch and length) into ``target`` (the cache
    passes a temp name and publishes it: ``model_file``)."""
    import torch

    from rag.embedding.transformer import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(spec)

    class LastHidden(torch.nn.Module):
        def __init__(self, model: torch.nn.Module):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    import warnings

    sample = embedder.tokenizer("a sample sentence", return_tensors="pt")
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "last_hidden_state")}
    with warnings.catch_warnings():  # tracer notes about shapes that are constant for this model
        warnings.simplefilter("ignore")
        torch.onnx.export(LastHidden(embedder._transformer).eval(), tuple(sample[k] for k in INPUTS), str(target),
                          input_names=list(INPUTS), output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)


def quantize_onnx(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of ``source`` into ``target``, one scale per output channel.

    Per-tensor scales lose too much on this model (cosine 0.96 to the float vectors); per-channel
    keeps 0.99 at 2.4x the speed on one core.
    """
    # onnxruntime.quantization configures the root logger when imported (basicConfig) and advises shape
    # pre-processing on it (no gain here): both are undone, so other libraries' debug lines stay quiet.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logging.disable(logging.WARNING)
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.disable(logging.NOTSET)
        root.handlers[:] = handlers
        root.setLevel(level)


def _record(path: Path) -> Path:
    return path.with_name(f"{path.name}.sha256")


def recorded_digest(path: Path) -> str | None:
    """sha256 of the cached ``path`` when it still matches the digest recorded when it was written, else None."""
    record = _record(path)
    if not path.is_file() or not record.is_file():
        return None
    digest, expected = sha256_file(path), record.read_text(encoding="utf-8").strip()
    if digest != expected:
        log.warning("%s has sha256 %s, not the %s recorded when it was written: rebuilding it", path, digest, expected)
        return None
    return digest


def _install(tmp: Path, target: Path) -> str:
    """Publish a freshly built ``tmp`` as ``target``, durably, then record its digest the same way."""
    fsync_path(tmp)
    digest = sha256_file(tmp)
    _record(target).unlink(missing_ok=True)  # the old record must never vouch for the new file
    os.replace(tmp, target)
    fsync_path(target.parent)
    record_tmp = _record(tmp)
    record_tmp.write_text(digest, encoding="utf-8")
    fsync_path(record_tmp)
    os.replace(record_tmp, _record(target))
    fsync_path(target.parent)
    return digest


@contextmanager
def _cache_lock(cache_dir: Path) -> Iterator[None]:
    """One process checks and builds cache files at a time: a server starting while ingest exports
    waits for the export instead of making its own (and no one removes a temp file being written)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        fh = open(cache_dir / ".lock", "a")
    except OSError:  # a read-only cache (a deployed image): files are still verified, nothing is built
        yield
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _cached_file(target: Path, build: Callable[[Path], None]) -> str:
    """sha256 of the cache file ``target``, which ``build(temp path)`` makes unless its record vouches
    for it. Call under ``_cache_lock``. Temp files a killed build left behind are removed first."""
    digest = recorded_digest(target)
    if digest is not None:
        return digest
    stem, suffix = target.name.removesuffix(".onnx"), ".onnx"
    for leftover in target.parent.glob(f"{stem}.tmp*{suffix}*"):
        leftover.unlink(missing_ok=True)
    tmp = target.with_name(f"{stem}.tmp{os.getpid()}{suffix}")
    try:
        build(tmp)
        return _install(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def model_file(spec: str, cache_dir: Path, weights_digest: str, int8: bool) -> tuple[Path, str]:
    """The ONNX file the embedder runs (exported, and quantized for ``int8``, when the cache lacks a
    sound one) and its sha256."""
    float_path = cache_dir / f"{weights_digest[:16]}.onnx"
    with _cache_lock(cache_dir):
        if not int8:
            return float_path, _cached_file(float_path, lambda tmp: export_onnx(spec, tmp))

        def quantize(tmp: Path) -> None:
            _cached_file(float_path, lambda t: export_onnx(spec, t))
            quantize_onnx(float_path, tmp)
        int8_path = float_path.with_suffix(".int8.onnx")
        return int8_path, _cached_file(int8_path, quantize)


class OnnxEmbedder:
    """The ``Embedder`` protocol on onnxruntime and the model's own fast tokenizer.

    Args:
        spec: as for ``SentenceTransformerEmbedder`` (a ``package:`` spec or a model folder).
        cache_dir: where the exported ``.onnx`` lives.
        threads: onnxruntime intra-op threads (1 suits a server answering several requests at once).
        int8: run a dynamically quantized copy (vectors approximate the model's: cosine ~0.99).
        parallel: what ``encode`` runs at once (with ``threads`` 1: the runs share the session's pool):
            texts with the int8 model, whole batches with the float one (ingest: one per core).
    """

    def __init__(self, spec: str, cache_dir: Path, threads: int = 1, int8: bool = False, parallel: int = 1):
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise OnnxUnavailable("onnxruntime is not installed") from exc
        location, expected_sha = resolve_model(spec)
        folder = Path(location)
        if not (folder / WEIGHTS).is_file() or not mean_pooled(folder):
            raise OnnxUnavailable(f"{spec} is not a mean-pooled safetensors model")
        onnx_path, onnx_digest = model_file(spec, cache_dir, check_weights(folder, expected_sha), int8)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        config = json.loads((folder / "sentence_bert_config.json").read_text())
        self.max_tokens = int(config.get("max_seq_length", 256)) - 2
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_tokens + 2)
        self.tokenizer.no_padding()  # tokenizer.json pads to 128; batches are padded in _run instead
        self._counter = Tokenizer.from_file(str(folder / "tokenizer.json"))  # counts what truncation would cut
        self._counter.no_padding()
        self._counter.no_truncation()
        # The quantized file is made on each machine (onnxruntime versions may round differently), so
        # its own hash names the variant: stored sentence vectors must come from this very file.
        self.variant = f"int8-{onnx_digest[:12]}" if int8 else "float"
        self.model_id, self.parallel = spec, parallel
        self.dimension = int(json.loads((folder / "config.json").read_text())["hidden_size"])

    def count_tokens(self, text: str) -> int:
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def _run(self, encodings: list) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            ids[row, :len(e.ids)], mask[row, :len(e.ids)] = e.ids, 1
        hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return (pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)).astype(np.float32)

    def encode(self, texts: list[str], batch_size: int = 16) -> np.ndarray:
        """Normalised float32 embeddings. Texts are sorted by token count and a batch closes when the
        next text is much longer than its first: on CPU a padded token costs as much as a real one.

        The int8 model runs one text per call: dynamic quantization scales activations per call, so
        in a batch a text's vector would depend on its batch-mates (cosine down to 0.984). Texts then
        run ``parallel`` at a time, each on one thread, which is as fast as batching on this model.
        """
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # One by one: encode_batch's thread pool costs more than it saves on a handful of sentences.
        encodings = [self.tokenizer.encode(t) for t in texts]
        if self.variant != "float":
            if self.parallel > 1 and len(texts) > 1:
                pool = ThreadPoolExecutor(self.parallel)  # onnxruntime releases the GIL while it runs
                try:
                    return np.concatenate(list(pool.map(lambda e: self._run([e]), encodings)))
                finally:  # on Ctrl-C, drop the queued texts instead of embedding them all first
                    pool.shutdown(cancel_futures=True)
            return np.concatenate([self._run([e]) for e in encodings])
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        batches: list[list[int]] = [[]]
        for i in order:
            first = batches[-1][0] if batches[-1] else None
            if first is not None and (len(batches[-1]) == batch_size
                                      or len(encodings[i].ids) > PAD_SLACK * len(encodings[first].ids)):
                batches.append([])
            batches[-1].append(i)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if self.parallel > 1 and len(batches) > 1:  # whole batches side by side, one thread each
            pool = ThreadPoolExecutor(self.parallel)
            try:
                for batch, vectors in zip(batches, pool.map(lambda b: self._run([encodings[j] for j in b]), batches)):
                    out[batch] = vectors
            finally:
                pool.shutdown(cancel_futures=True)
            return out
        for batch in batches:
            out[batch] = self._run([encodings[j] for j in batch])
        return out

    def encode_query(self, text: str) -> np.ndarray:
        return self._run([self.tokenizer.encode(text)])[0]
