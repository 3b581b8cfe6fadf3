"""The on-disk index: generations of FAISS vectors, SQLite docstore, BM25 and sentence vectors."""
