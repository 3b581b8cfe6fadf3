#!/usr/bin/env bash
# Fresh machine → chat UI on the bundled articles at http://127.0.0.1:8000/ (builds the index on first run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/rag serve "$@"
