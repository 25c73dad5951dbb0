#!/usr/bin/env bash
# The teacher sweep: fine-tuning settings per GLUE task, one run after another on one thread.
#   OMP_NUM_THREADS=1 bash results/teachers/sweep.sh      # resumable: a finished run is skipped, a cut-off one resumed
#   python results/teachers/collect.py                    # adds the finished runs to results.json and table.md
# Several lanes may run this script at once: each takes the next setting no other lane holds. A setting already
# in results.json (collected from an earlier machine) is not run again.
# Each line: name task encoder-lr head-lr epochs warm-up precision (bf16: autocast, AMX on this CPU; 1.7x
# faster a step than fp32 on one thread; the first bf16 line repeats an fp32 setting to compare them)
set -uo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS_DIR:-runs/teachers}
mkdir -p "$runs"
while read -r name task lr head_lr epochs warmup precision; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  out="$runs/$name"
  [[ -f "$out/metrics.json" ]] && continue
  grep -q "\"name\": \"$name\"" results/teachers/results.json && continue
  exec {lock}>"$runs/.$name.lock"
  flock -n "$lock" || { exec {lock}>&-; continue; }
  resume=(); [[ -f "$out/config.yaml" ]] && resume=(--resume)
  echo "$(date +%H:%M) $name"
  sparsebert finetune --task "$task" --output "$out" --learning-rate "$lr" --head-learning-rate "$head_lr" \
    --epochs "$epochs" --warmup "$warmup" --precision "$precision" --save-every 100 --keep-checkpoints 1 \
    --overwrite "${resume[@]}" || echo "$name failed"
  exec {lock}>&-
done <<'SETTINGS'
cola-lr1e-4-h1e-3-e5   cola  1e-4 1e-3 5 0.1 fp32
rte-lr1e-4-h1e-3-e5    rte   1e-4 1e-3 5 0.1 fp32
mrpc-lr1e-4-h1e-3-e5   mrpc  1e-4 1e-3 5 0.1 fp32
cola-lr2e-4-h2e-3-e5   cola  2e-4 2e-3 5 0.1 fp32
rte-lr5e-5-h1e-3-e5    rte   5e-5 1e-3 5 0.1 fp32
cola-lr1e-4-h1e-3-e5-bf16  cola  1e-4 1e-3 5 0.1 bf16
sts-b-lr1e-4-h1e-3-e5      sts-b 1e-4 1e-3 5 0.1 bf16
mrpc-lr1e-4-h1e-3-e3       mrpc  1e-4 1e-3 3 0.1 bf16
rte-lr1e-4-h1e-3-e10       rte   1e-4 1e-3 10 0.06 bf16
cola-lr5e-5-h1e-3-e5       cola  5e-5 1e-3 5 0.1 bf16
sts-b-lr5e-5-h1e-3-e5      sts-b 5e-5 1e-3 5 0.1 bf16
mrpc-lr5e-5-h1e-3-e3       mrpc  5e-5 1e-3 3 0.1 bf16
rte-lr1e-4-h1e-4-e5        rte   1e-4 1e-4 5 0.1 bf16
cola-lr1e-4-h1e-4-e5       cola  1e-4 1e-4 5 0.1 bf16
sts-b-lr2e-4-h2e-3-e5      sts-b 2e-4 2e-3 5 0.1 bf16
mrpc-lr1e-4-h1e-4-e3       mrpc  1e-4 1e-4 3 0.1 bf16
rte-lr1e-4-h1e-3-e3        rte   1e-4 1e-3 3 0.1 bf16
cola-lr1e-4-h1e-3-e10      cola  1e-4 1e-3 10 0.06 bf16
sts-b-lr1e-4-h1e-4-e5      sts-b 1e-4 1e-4 5 0.1 bf16
mrpc-lr2e-4-h2e-3-e3       mrpc  2e-4 2e-3 3 0.1 bf16
sts-b-lr1e-4-h1e-3-e10     sts-b 1e-4 1e-3 10 0.06 bf16
mrpc-lr1e-4-h1e-3-e5-w0    mrpc  1e-4 1e-3 5 0.0 bf16
sts-b-lr1e-4-h1e-3-e3      sts-b 1e-4 1e-3 3 0.1 bf16
SETTINGS
