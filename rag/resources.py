"""Data that ships inside the package: the prompt templates and the demo articles.

A wheel carries them as ``rag/_data/prompts`` and ``rag/_data/articles`` (pyproject.toml maps the
repository's ``prompts/`` and ``data/articles/`` there at build time, so the repository stays the
one source). A source checkout or an editable install reads the repository's folders directly.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# name → the repository folder the wheel copies it from
SOURCES = {"prompts": "prompts", "articles": "data/articles"}


def bundled(name: str) -> Path:
    """The folder of bundled data ``name`` ("prompts" or "articles").

    Example:
        >>> sorted(p.name for p in bundled("prompts").glob("*.txt"))
        ['answer.txt', 'condense.txt', 'system.txt']
    """
    installed = Path(str(resources.files("rag"))) / "_data" / name
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / SOURCES[name]


def default_articles() -> Path:
    """``data/articles`` under the working directory (the CLI contract), else the bundled demo articles."""
    local = Path("data") / "articles"
    return local if local.is_dir() else bundled("articles")
