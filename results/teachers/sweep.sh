#!/usr/bin/env bash
# The teacher sweep: fine-tuning settings per GLUE task, one run after another on one thread.
#   OMP_NUM_THREADS=1 bash results/teachers/sweep.sh      # resumable: a finished run is skipped, a cut-off one resumed
#   python results/teachers/collect.py                    # writes results/teachers/results.json and table.md
# Each line: name task encoder-lr head-lr epochs warm-up
set -uo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS_DIR:-runs/teachers}
while read -r name task lr head_lr epochs warmup; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  out="$runs/$name"
  [[ -f "$out/metrics.json" ]] && continue
  resume=(); [[ -d "$out" ]] && resume=(--resume)
  echo "$(date +%H:%M) $name"
  sparsebert finetune --task "$task" --output "$out" --learning-rate "$lr" --head-learning-rate "$head_lr" \
    --epochs "$epochs" --warmup "$warmup" --save-every 100 --keep-checkpoints 1 "${resume[@]}" || echo "$name failed"
done <<'SETTINGS'
cola-lr1e-4-h1e-3-e5   cola  1e-4 1e-3 5 0.1
rte-lr1e-4-h1e-3-e5    rte   1e-4 1e-3 5 0.1
mrpc-lr1e-4-h1e-3-e5   mrpc  1e-4 1e-3 5 0.1
cola-lr2e-4-h2e-3-e5   cola  2e-4 2e-3 5 0.1
rte-lr5e-5-h1e-3-e5    rte   5e-5 1e-3 5 0.1
sts-b-lr1e-4-h1e-3-e5  sts-b 1e-4 1e-3 5 0.1
cola-lr5e-5-h1e-3-e5   cola  5e-5 1e-3 5 0.1
mrpc-lr2e-4-h2e-3-e5   mrpc  2e-4 2e-3 5 0.1
rte-lr2e-4-h2e-3-e8    rte   2e-4 2e-3 8 0.1
cola-lr1e-4-h1e-3-e10  cola  1e-4 1e-3 10 0.06
mrpc-lr5e-5-h1e-3-e5   mrpc  5e-5 1e-3 5 0.1
sts-b-lr2e-4-h2e-3-e5  sts-b 2e-4 2e-3 5 0.1
rte-lr1e-4-h1e-3-e10   rte   1e-4 1e-3 10 0.06
mrpc-lr1e-4-h1e-3-e10  mrpc  1e-4 1e-3 10 0.06
sts-b-lr5e-5-h1e-3-e5  sts-b 5e-5 1e-3 5 0.1
cola-lr1e-4-h1e-4-e5   cola  1e-4 1e-4 5 0.1
rte-lr1e-4-h1e-4-e5    rte   1e-4 1e-4 5 0.1
mrpc-lr1e-4-h1e-4-e5   mrpc  1e-4 1e-4 5 0.1
sts-b-lr1e-4-h1e-4-e5  sts-b 1e-4 1e-4 5 0.1
sts-b-lr1e-4-h1e-3-e10 sts-b 1e-4 1e-3 10 0.06
SETTINGS
