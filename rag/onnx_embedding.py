"""Deprecated location of ``rag.embedding.onnx``, kept while ``train/answer_selector.py`` (a run in
progress imports ``quantize_onnx`` from here at its end) moves to the new path; then delete it."""

from rag.embedding.onnx import OnnxEmbedder, OnnxUnavailable, export_onnx, quantize_onnx

__all__ = ["OnnxEmbedder", "OnnxUnavailable", "export_onnx", "quantize_onnx"]
