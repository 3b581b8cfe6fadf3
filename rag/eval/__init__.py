"""Evaluation: `rag eval` on question sets with gold evidence, `rag eval-beir` on BEIR folders."""
