"""The HTTP API and chat UI (FastAPI): ``rag.serve.app.create_app``; `rag serve` runs it."""
