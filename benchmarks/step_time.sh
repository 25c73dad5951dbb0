#!/usr/bin/env bash
# Seconds per optimiser step, side by side on this machine: plain fine-tuning, pruning at distilling with
# the cached teacher, and with the teacher run live, in fp32; fine-tuning and cached pruning again with bf16
# autocast (--precision bf16). MRPC, embedded MiniLM, batch 32, STEPS (default 40) steps each, on the threads torch
# is given (OMP_NUM_THREADS). Writes OUT/step_time.json (default results/step_time). Usage: bash benchmarks/step_time.sh
set -euo pipefail
out=${OUT:-results/step_time}
steps=${STEPS:-40}
work=$(mktemp -d)
mkdir -p "$out"
common=(--task mrpc --batch-size 32 --max-steps "$steps" --eval-every 1000 --save-every 0
        --max-train-samples $((steps * 32)))
sparsebert finetune "${common[@]}" --output "$work/teacher"
sparsebert prune "${common[@]}" --teacher "$work/teacher" --output "$work/cached" --sparsity 0.95
sparsebert prune "${common[@]}" --teacher "$work/teacher" --output "$work/live" --sparsity 0.95 --no-cache-teacher
sparsebert finetune "${common[@]}" --output "$work/teacher-bf16" --precision bf16
sparsebert prune "${common[@]}" --teacher "$work/teacher" --output "$work/cached-bf16" --sparsity 0.95 --precision bf16
python3 - "$work" "$out/step_time.json" "$steps" <<'PY'
import json, sys, torch
from sparsebert.sparse.calibration import machine
work, path, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
step = {name: json.load(open(f"{work}/{name}/metrics.json"))["seconds_per_step"]
        for name in ("teacher", "cached", "live", "teacher-bf16", "cached-bf16")}
record = {"machine": machine(), "threads": torch.get_num_threads(), "batch_size": 32, "steps": steps,
          "cpu_bf16": torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported(),
          "finetune_s_per_step": step["teacher"], "prune_cached_s_per_step": step["cached"],
          "prune_live_s_per_step": step["live"],
          "cached_over_finetune": round(step["cached"] / step["teacher"], 3),
          "live_over_finetune": round(step["live"] / step["teacher"], 3),
          "finetune_bf16_s_per_step": step["teacher-bf16"], "prune_cached_bf16_s_per_step": step["cached-bf16"],
          "finetune_fp32_over_bf16": round(step["teacher"] / step["teacher-bf16"], 3),
          "prune_cached_fp32_over_bf16": round(step["cached"] / step["cached-bf16"], 3)}
json.dump(record, open(path, "w"), indent=2)
print(json.dumps(record, indent=2))
PY
rm -rf "$work"
