"""Embedding models from installed packages: the ingest model (torch), its ONNX copy for answers, a cache."""
