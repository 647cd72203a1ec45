#!/usr/bin/env bash
# The long reliability tests (pytest marker `heavy`), kept out of every-commit CI.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest -m heavy -q "$@"
