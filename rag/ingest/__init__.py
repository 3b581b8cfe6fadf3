"""Ingest: load article files, chunk them, embed the chunks (and evidence sentences), publish an index."""
