#!/usr/bin/env bash
# Two processes (torchrun, gloo) against one on the real MiniLM with the Taylor criterion: pruning at
# distilling on an MRPC slice, the same global batch. Once with dropout off (the runs should agree within
# float noise), once with MiniLM's own dropout (each rank draws its own masks: the runs differ).
#   bash benchmarks/distributed_minilm.sh TEACHER [OUT]     # TEACHER: an MRPC teacher folder (sparsebert finetune)
# Writes OUT/comparison.json (default results/distributed).
set -euo pipefail
teacher=$1
out=${2:-results/distributed}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
python - "$work" <<'PY'
import json, shutil, sys
from pathlib import Path
from sparsebert.models import resolve_model_path
work = Path(sys.argv[1])
for name, dropout in (("dropout-off", 0.0), ("dropout-on", None)):
    folder = work / f"minilm-{name}"
    shutil.copytree(resolve_model_path(None), folder)
    if dropout is not None:
        config = json.loads((folder / "config.json").read_text())
        config.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
        (folder / "config.json").write_text(json.dumps(config, indent=2))
PY
args=(--teacher "$teacher" --task mrpc --max-train-samples 256 --batch-size 16 --max-steps 16 --sparsity 0.5
      --prune-events 4 --eval-every 16 --save-every 0 --criterion taylor --seed 5)
for name in dropout-off dropout-on; do
  OMP_NUM_THREADS=1 sparsebert prune "${args[@]}" --student "$work/minilm-$name" --output "$work/$name-one"
  OMP_NUM_THREADS=1 python -m torch.distributed.run --standalone --nproc-per-node 2 -m sparsebert prune "${args[@]}" \
    --student "$work/minilm-$name" --output "$work/$name-two"
done
python - "$work" "$out" <<'PY'
import json, sys
from pathlib import Path
import torch
from safetensors.torch import load_file
work, out = Path(sys.argv[1]), Path(sys.argv[2])
report = {}
for name in ("dropout-off", "dropout-on"):
    one, two = work / f"{name}-one", work / f"{name}-two"
    m1, m2 = (load_file(str(d / "masks.safetensors")) for d in (one, two))
    w1, w2 = (load_file(str(d / "model.safetensors")) for d in (one, two))
    differing = sum((m1[k] != m2[k]).sum().item() for k in m1)
    total = sum(v.numel() for v in m1.values())
    # weights compared where both runs kept them (a weight one run pruned and the other kept differs by itself)
    kept = {k: (m1[f"{k}"] != 0) & (m2[f"{k}"] != 0) if k in m1 else torch.ones_like(w1[k], dtype=torch.bool)
            for k in w1}
    diff = max(float(((w1[k].float() - w2[k].float()).abs() * kept[k]).max()) for k in w1)
    f1, f2 = (json.loads((d / "metrics.json").read_text())["final"] for d in (one, two))
    report[name] = {"mask_entries": total, "mask_entries_differing": differing,
                    "max_weight_difference_where_both_keep": diff, "one_process": f1, "two_processes": f2}
report["settings"] = "prune --task mrpc --max-train-samples 256 --batch-size 16 --max-steps 16 --sparsity 0.5 " \
                     "--prune-events 4 --criterion taylor --seed 5, student: the embedded MiniLM; one thread per process"
(out / "comparison.json").write_text(json.dumps(report, indent=2) + "\n")
print(json.dumps(report, indent=2))
PY
