"""Grounded question answering over news articles, every claim cited to an exact span."""

__version__ = "0.1.0"
