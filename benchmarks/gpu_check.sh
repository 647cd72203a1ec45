#!/usr/bin/env bash
# One script for a lent GPU machine (under 8 minutes): the `cuda` tests, the in-process load
# generator, then a gRPC sweep. Results go under $OUT when it is set (else ./gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
pip install -q -e '.[test]' > "$OUT/pip.log" 2>&1
timeout 120 python -m pytest -m cuda -q -p no:cacheprovider 2>&1 | tee "$OUT/cuda-tests.txt"
timeout 180 python benchmarks/gpu_load.py --streams 64,256,512,1024 --out "$OUT" \
  2>&1 | tee "$OUT/gpu-load.txt"
timeout 240 streamstt bench --spawn --serve-arg=--device=cuda --serve-arg=--max-streams=1100 \
  --serve-arg=--max-batch-size=256 --serve-arg=--max-wait-ms=20 \
  --audio tests/data --streams 64,256 --duration-s 20 --latency-budget-ms 2000 \
  --budget-ms 1000 --stagger-ms 5 --no-plots --out "$OUT/grpc" 2>&1 | tail -20 \
  | tee "$OUT/grpc-sweep.txt"
