#!/usr/bin/env bash
# Sparse sentence embedders: all-MiniLM-L6-v2 pruned while it distils from its dense self, on the bundled GLUE
# training sentences (STS-B dev kept out), each run's record copied here as it lands. One run a call:
#     bash results/embedder/run.sh NAME [prune-embedder flags]
# e.g. `bash results/embedder/run.sh 90-lr3e-4 --learning-rate 3e-4 --epochs 1` (a run's flags: README.md). RUNS (default runs/embedder) holds the run folders.
set -euo pipefail
cd "$(dirname "$0")/../.."
name=$1; shift
runs=${RUNS:-runs/embedder}
mkdir -p "$runs" results/embedder/records
if [ -f "$runs/$name/metrics.json" ]; then echo "$name: done"; else
    if [ -f "$runs/$name/config.yaml" ]; then
        sparsebert prune-embedder --resume --output "$runs/$name"
    else
        sparsebert prune-embedder --max-steps 800 --eval-every 200 --output "$runs/$name" "$@"
    fi
fi
mkdir -p "results/embedder/records/$name"
cp "$runs/$name"/{config.yaml,metrics.json,log.jsonl,sparsity.json} "results/embedder/records/$name/"
