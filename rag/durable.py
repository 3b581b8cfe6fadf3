"""Durable writes: what a crash (SIGKILL, power loss) must not undo once a rename has published it.

A file is fsynced before the rename that publishes it, and the folder that holds it after: the
index's generations and CURRENT (``rag.store.writer``) and the cached model exports
(``rag.embedding.onnx``) all go this way.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file's data, or a folder's entries (files created, renamed or removed in it)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file under ``folder``, then every folder bottom-up (``bm25/``, ``sentences/``, itself)."""
    for here, _dirs, files in os.walk(folder, topdown=False):
        for name in files:
            fsync_path(Path(here, name))
        fsync_path(Path(here))


def write_durably(path: Path, data: bytes) -> None:
    """Write and fsync, so a rename that publishes the file never exposes an empty one after a crash."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
