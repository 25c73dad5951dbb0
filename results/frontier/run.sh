#!/usr/bin/env bash
# The frontier of the main job's models: the quick preset's teacher (PyTorch fp32, PyTorch int8, ONNX Runtime
# int8), its 95% student, and an 80% student in 1x4 blocks pruned from the same teacher with the same preset,
# each exported with int8 and with fp32 values on the sparse engine; 2 threads, sequence 128, the MRPC dev set.
# The full grid of the frontier (kap and prune-teacher at 80, 90 and 95%, both patterns, small dense students,
# MRPC and STS-B) is src/sparsebert/research/experiments/frontier.yaml: `python benchmarks/frontier.py` takes it too.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -f runs/run-quick/student/metrics.json ] || sparsebert run --output runs/run-quick
[ -f runs/quick-80-1x4/metrics.json ] || sparsebert prune --config runs/run-quick/student/config.yaml \
    --sparsity 0.8 --pattern 1x4 --output runs/quick-80-1x4
python benchmarks/frontier.py --teacher runs/run-quick/teacher --students runs/run-quick/student,runs/quick-80-1x4 \
    --out results/frontier --threads 2 --rounds 5
