"""Settings whose value is one of a few names (retrieval mode, fusion, vector index kind)."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

E = TypeVar("E", bound=StrEnum)


def parse_choice(cls: type[E], value: str, what: str) -> E:
    """The member of ``cls`` named ``value`` (case and surrounding spaces do not count).

    Raises:
        ValueError: no such member; the message lists the ones there are.

    Example:
        >>> from rag.retrieval.fusion import Fusion
        >>> parse_choice(Fusion, " RRF ", "fusion")
        <Fusion.RRF: 'rrf'>
    """
    try:
        return cls(value.strip().lower())
    except ValueError:
        raise ValueError(f"unknown {what} {value!r}: choose one of {', '.join(m.value for m in cls)}") from None
