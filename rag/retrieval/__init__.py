"""Query -> passages: dense and BM25 candidates from the store, fused, de-duplicated, re-scored."""
