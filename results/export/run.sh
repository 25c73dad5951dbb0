#!/usr/bin/env bash
# Size and dev metrics of pruned models, dense and through the sparse engine with each stored precision.
#   bash results/export/run.sh NAME TASK MODEL      # e.g. mrpc95 mrpc runs/quick-mrpc/student
# writes results/export/NAME/: one evaluate JSON per way of running the model (dense PyTorch; the engine on the
# pruned folder, fp32 values; the engine on exports with fp32, fp16 and int8 values) and each export's report.
set -euo pipefail
name=$1 task=$2 model=$3
out=results/export/$name
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
sparsebert evaluate "$model" --task "$task" --json "$out/dense.json" --overwrite
sparsebert evaluate "$model" --task "$task" --engine sparse --json "$out/engine_fp32.json" --overwrite
for values in fp32 fp16 int8; do
  sparsebert export "$model" "$tmp/$values" --values "$values" --embeddings "$( [ "$values" = fp32 ] && echo fp32 || echo "$values" )"
  sparsebert evaluate "$tmp/$values" --task "$task" --engine sparse --json "$out/export_${values}.json" --overwrite
  cp "$tmp/$values/export_report.json" "$out/export_report_${values}.json"
done
