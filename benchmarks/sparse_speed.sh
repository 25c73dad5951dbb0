#!/usr/bin/env bash
# Dense PyTorch against the sparse engine on the embedded MiniLM, magnitude-pruned on the spot:
# batch 1 and 32 at sequence 128, and a sweep of sparsities. Writes results/bench/.
# Usage: bash benchmarks/sparse_speed.sh
set -euo pipefail
mkdir -p results/bench
sparsebert bench --sparsity 0.95 --batch-sizes 1,32 --seq-length 128 --json results/bench/bench_95.json
sparsebert bench --sweep --batch-sizes 1,32 --seq-length 128 --repeats 5 --json results/bench/sweep.json \
  --plot results/bench/sweep.png
