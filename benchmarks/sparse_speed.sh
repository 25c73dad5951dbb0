#!/usr/bin/env bash
# Every engine a user could pick, side by side in one run, and where the sparse engine's time goes:
# the embedded MiniLM magnitude-pruned to 80/90/95/97%, batch 1 and 32 at sequence 128 and the MRPC dev
# set, 1 and 2 threads; one pruned layer's GFLOP/s against MKL and torch.sparse. Writes results/bench/.
# Run it on a quiet machine: bash benchmarks/sparse_speed.sh
set -euo pipefail
mkdir -p results/bench
sparsebert bench --json results/bench/bench.json   # and bench.md (the table), bench.png (the plot)
python benchmarks/kernel_speed.py --threads 1 --json results/bench/kernels_1thread.json
python benchmarks/kernel_speed.py --threads 2 --json results/bench/kernels_2thread.json
python benchmarks/profile_engine.py 1
python benchmarks/profile_engine.py 2
