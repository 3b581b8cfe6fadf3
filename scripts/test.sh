#!/usr/bin/env bash
# Fresh machine → every test (real model, FAISS, uvicorn, llama.cpp server, Chromium), then the eval gate.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export HF_HUB_OFFLINE=1
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pytest -q "$@"  # pyproject.toml adds doctests, -rs and --durations; CI=true makes a skip fail
# The eval question set on the bundled articles must meet eval/thresholds.json (the other eval/*.jsonl
# sets ask about other corpora).
.venv/bin/rag ingest --index index/ci
.venv/bin/rag eval eval/questions.jsonl --index index/ci --report eval/reports/ci --check --no-plot
