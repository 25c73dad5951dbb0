"""Where an int8 export's logit error comes from: a fine-tuned classifier's pruned weights stored per row in int8
(as `sparsebert export` stores them, dequantised back into the model: the error of the values alone, not of the
engine), in PyTorch against the model itself in fp32 on a task's dev set. Rows: every matrix in int8; one kind of
matrix at a time; one layer at a time; finer grids than int8 (255 and 1023 levels a side); fp16 and bfloat16
values; int8 with the inputs of the largest activations (the outlier features) kept exact. Then the activations
as the int8 1x4 kernel quantizes them (per token, 7 bits with a zero point; `kernels.quantize_activations`), with
fp32 weights: alone, in 8 bits, with the largest-activation inputs kept exact, per group of 64 inputs instead of
per token; and the 1x4 kernel's whole arithmetic (int8 weights, 7-bit activations), against its earlier one
(63 steps a side for the weights, 8-bit activations). Then the export's two roundings of int8 values (to nearest,
and with error compensation calibrated on the task's first 256 training examples, `export --calibration auto`):
their values in PyTorch, and each export on the sparse engine with its own arithmetic. For each: the largest and
mean logit difference and the predictions that change.
    python benchmarks/int8_error.py --model runs/frontier/prune-teacher-mrpc-s0.9-seed1 --task mrpc \
        --json results/export/int8_error.json
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sparsebert.config import ExportConfig
from sparsebert.data import encode, eval_batches
from sparsebert.jobs import export
from sparsebert.loading import load_model, load_sparse
from sparsebert.pruning import find_targets
from sparsebert.sparse.format import state_prefix
from sparsebert.sparse.kernels import CsrMatrix, dense_to_csr, quantize_activations, quantize_rows
from sparsebert.tasks import get_task, load_split
from sparsebert.training import machine_of

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", required=True, help="a fine-tuned (pruned) Hugging Face classifier folder")
parser.add_argument("--task", default="mrpc")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--json", default=None, help="write the record here (default: print only)")
args = parser.parse_args()
torch.set_num_threads(args.threads)

task = get_task(args.task)
model, tokenizer, _ = load_model(args.model, task, new_head=False)
model.eval()
batches = list(eval_batches(encode(load_split(task, None, "dev"), tokenizer, 128, task.is_regression), 64))
targets = find_targets(model)  # the pruned matrices, as the export finds them
original = {name: m.weight.detach().clone() for name, m in targets.items()}


def logits(run=None) -> torch.Tensor:
    """The dev set's logits from the model (or `run`: the sparse engine on an export)."""
    with torch.no_grad():
        return torch.cat([(run or model)(**{k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
                          .logits for b in batches])


def per_row(weight: torch.Tensor, levels: int) -> torch.Tensor:
    """The weight as its non-zeros stored symmetric per row on `levels` steps a side (127: the export's int8)."""
    w = weight.numpy()
    row_offsets, cols, values = dense_to_csr(w)
    q, scales = quantize_rows(values, row_offsets, levels)
    rows = np.repeat(np.arange(w.shape[0]), np.diff(row_offsets))
    out = np.zeros_like(w)
    out[rows, cols.astype(np.int64)] = q.astype(np.float32) * scales[rows]
    return torch.from_numpy(out)


def activation_peaks() -> dict[str, torch.Tensor]:
    """Each matrix's largest activation per input on the first dev batches, in fp32."""
    for name, m in targets.items():
        m.weight.data = original[name]
    peaks = {}

    def hook(name):
        def record(module, inputs, output):
            peak = inputs[0].detach().abs().flatten(0, -2).amax(0)
            peaks[name] = torch.maximum(peaks.get(name, peak), peak)
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in targets.items()]
    with torch.no_grad():
        for b in batches[:2]:
            model(**{k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    for h in handles:
        h.remove()
    return peaks


def outlier_inputs(count: int) -> dict[str, torch.Tensor]:
    """Each matrix's `count` inputs with the largest activations (the outlier features)."""
    return {name: peak.topk(count).indices for name, peak in peaks.items()}


peaks = activation_peaks()
reference = logits()
predicted = reference.argmax(-1)
records = []


def measure(label: str, stored, activations=None) -> None:
    """stored(name, weight) -> the weight as run, or None to keep it in fp32; activations(name, x) -> each matrix's
    input (tokens, in) as run."""
    for name, m in targets.items():
        w = stored(name, original[name])
        m.weight.data = original[name] if w is None else w
    handles = [] if activations is None else [m.register_forward_pre_hook(
        lambda module, inputs, name=name: (activations(name, inputs[0].flatten(0, -2)).view_as(inputs[0]),))
        for name, m in targets.items()]
    got = logits()
    for h in handles:
        h.remove()
    record(label, got)


def record(label: str, got: torch.Tensor, **extra) -> None:
    changed = int((got.argmax(-1) != predicted).sum()) if not task.is_regression else None
    diff = (got - reference).abs()
    records.append({"values": label, "max_logit_diff": round(float(diff.max()), 4),
                    "mean_logit_diff": round(float(diff.mean()), 5), "predictions_changed": changed, **extra})
    print(f"{label:44s} {records[-1]['max_logit_diff']:.4f} (mean {records[-1]['mean_logit_diff']:.5f})  "
          f"changed {changed}", flush=True)


print(f"largest logit {float(reference.abs().max()):.3f} over {len(reference)} dev examples")
measure("int8, every matrix", lambda n, w: per_row(w, 127))
for kind in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
             "intermediate.dense", "layer.N.output.dense"):
    def only(n, w, kind=kind):
        hit = n.endswith(".output.dense") and "attention" not in n if kind.startswith("layer.N") else kind in n
        return per_row(w, 127) if hit else None
    measure(f"int8, {kind} only", only)
layers = model.config.num_hidden_layers
for layer in range(layers):
    measure(f"int8, layer {layer} only", lambda n, w, layer=layer: per_row(w, 127) if f"layer.{layer}." in n else None)
for levels in (255, 1023):
    measure(f"{levels} levels a side, every matrix", lambda n, w, levels=levels: per_row(w, levels))
measure("fp16, every matrix", lambda n, w: w.half().float())
measure("bfloat16, every matrix", lambda n, w: w.bfloat16().float())
for count in (4, 16):
    kept = outlier_inputs(count)

    def with_outliers_exact(n, w, kept=kept):
        q = per_row(w, 127)
        q[:, kept[n]] = w[:, kept[n]]
        return q
    measure(f"int8, the {count} largest-activation inputs exact", with_outliers_exact)

fp32 = lambda n, w: None
measure("activations 7 bits per token (the 1x4 kernel's), fp32 weights", fp32, lambda n, x: quantize_activations(x))
measure("activations 8 bits per token, fp32 weights", fp32, lambda n, x: quantize_activations(x, 255))
for count in (1, 4, 16):
    kept = outlier_inputs(count)

    def outliers_exact(n, x, kept=kept):
        q = quantize_activations(x.index_fill(1, kept[n], 0.0))
        q[:, kept[n]] = x[:, kept[n]]
        return q
    measure(f"activations 7 bits, the {count} largest-activation inputs exact", fp32, outliers_exact)
measure("activations 7 bits per 64 inputs of a token, fp32 weights", fp32,
        lambda n, x: quantize_activations(x.reshape(-1, 64)).view_as(x))
measure("int8 and 7-bit activations (the 1x4 kernel's)", lambda n, w: per_row(w, 127), lambda n, x: quantize_activations(x))
measure("63 steps a side and 8-bit activations (its earlier form)", lambda n, w: per_row(w, 63),
        lambda n, x: quantize_activations(x, 255))

for name, m in targets.items():
    m.weight.data = original[name]
roundings = export.int8_roundings(model, tokenizer, load_split(task, None, "train")[:export.CALIBRATION_EXAMPLES])
measure("int8 compensated (export --calibration auto)", lambda n, w: CsrMatrix.from_dense(
    w.numpy(), values="int8", rounding=roundings[f"{state_prefix(model)}{n}.weight"]).dense_weight())
with tempfile.TemporaryDirectory() as exports:
    for way in ("none", "auto"):
        start = time.perf_counter()
        report = export.run(ExportConfig(model=args.model, output=f"{exports}/{way}", calibration=way))
        seconds = round(time.perf_counter() - start, 1)
        record(f"the engine on the int8 export, rounding {report['rounding']}",
               logits(load_sparse(Path(exports) / way)), export_seconds=seconds)

if args.json:
    with open(args.json, "w") as f:
        json.dump({"model": args.model, "task": args.task, "machine": machine_of(torch.device("cpu")),
                   "largest_logit": round(float(reference.abs().max()), 4),
                   "examples": len(reference), "rows": records}, f, indent=1)
