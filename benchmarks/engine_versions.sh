#!/usr/bin/env bash
# The sparse engine of an earlier revision against this checkout's, side by side on this machine: each
# revision's own `sparsebert bench` (the embedded MiniLM magnitude-pruned to 80, 90 and 95%, 2 threads, batch 1
# and 32 at sequence 128, the MRPC dev set), the two alternated ROUNDS times, then one table of each engine's
# median over the rounds (OUT/versions.md). Run it with nothing else on the machine.
#   bash benchmarks/engine_versions.sh adb7688 results/bench/avx2          # ROUNDS=2 by default
#   COLLECT=1 bash benchmarks/engine_versions.sh adb7688 results/bench/avx2  # the table again, timing nothing
set -euo pipefail
rev=$1
out=$2
mkdir -p "$out"
if [ -z "${COLLECT:-}" ]; then
    before=$(mktemp -d)/engine-$rev
    git worktree add --detach "$before" "$rev" > /dev/null
    python3 -m venv "$before/.venv"
    "$before/.venv/bin/pip" install -q -c constraints.txt -e "$before[onnx]"
    args="--sparsities 0.8,0.9,0.95 --threads 2 --dev-task mrpc
          --engines pytorch-fp32,onnxruntime-int8,sparsebert-fp32,sparsebert-int8,sparsebert-int8-1x4"
    for round in $(seq "${ROUNDS:-2}"); do
        (cd "$before" && .venv/bin/sparsebert bench $args --json "$OLDPWD/$out/before-r$round.json")
        sparsebert bench $args --json "$out/now-r$round.json"
    done
    git worktree remove --force "$before"
fi
python - "$rev" "$out" > "$out/versions.md" <<'PY'
import json, statistics, sys
from pathlib import Path

rev, out = sys.argv[1], Path(sys.argv[2])
runs = {side: [json.loads(p.read_text()) for p in sorted(out.glob(f"{side}-r*.json"))] for side in ("before", "now")}

def median(side, engine, sparsity, key):
    values = [r["ms"] if key != "dev" else 1000 / r["examples_per_second"] for run in runs[side] for r in run
              if r["engine"] == engine and r["sparsity"] == sparsity
              and (r.get("batch_size") == key if key != "dev" else "dataset" in r)]
    return statistics.median(values) if values else None

machine = runs["now"][0][0]["machine"]
print(f"{machine['processor']} ({', '.join(machine['instruction_sets'])}); kernel now: {machine['kernel']}; "
      f"2 threads; median of {len(runs['now'])} rounds, the revisions alternated. ms per batch (the MRPC dev set: "
      f"ms per example); `now / before` above 1 means this checkout is faster.\n")
print(f"| engine | sparsity | batch 1: {rev} | now | now / before | batch 32: {rev} | now | now / before "
      f"| MRPC dev: {rev} | now | now / before |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
rows = sorted({(r["engine"], r["sparsity"]) for run in runs["now"] for r in run}, key=lambda k: (k[1] or 0, k[0]))
for engine, sparsity in rows:
    cells = []
    for key in (1, 32, "dev"):
        b, n = median("before", engine, sparsity, key), median("now", engine, sparsity, key)
        cells += ["–", "–", "–"] if b is None or n is None else [f"{b:.2f}", f"{n:.2f}", f"{b / n:.2f}x"]
    print(f"| {engine} | {sparsity if sparsity is not None else 'dense'} | " + " | ".join(cells) + " |")
PY
cat "$out/versions.md"
