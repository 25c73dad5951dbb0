"""What attention in bfloat16 moves and what it saves, for a model with int8 weights: the sparse engine with fp32
attention and with bfloat16 attention, each against the model in dense PyTorch fp32 on a task's dev set at its
real lengths, and each timed on random batches (sequence 128, batch 1 and 32), taking turns round by round.

Per attention: the largest logit difference, the predictions that change, the dev metric, the last hidden
state's relative error (its norm over the dense one's), and the median ms (min and max) of each batch. MODEL is
a fine-tuned Hugging Face classifier folder (pruned or not; `--sparsity` prunes it by magnitude first); without
one, the embedded MiniLM magnitude-pruned to 95% with a new, random head (its logits are small, so only the
hidden states say much). Records the CPU features beside them.
    python benchmarks/bf16_attention.py --model runs/frontier/prune-teacher-mrpc-s0.9-seed1 --task mrpc \
        --json results/export/bf16_attention.json
"""

import argparse
import json
import statistics
from pathlib import Path

import torch

from sparsebert.benchmarking import interleaved_rounds, magnitude_pruned, median_ms, synthetic_inputs
from sparsebert.data import encode, eval_batches
from sparsebert.loading import load_model
from sparsebert.metrics import compute_metrics
from sparsebert.pruning import build_pruner, find_targets
from sparsebert.sparse.calibration import machine
from sparsebert.sparse.engine import from_hf_model
from sparsebert.tasks import get_task, load_split

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default=None)
parser.add_argument("--task", default="mrpc")
parser.add_argument("--sparsity", type=float, default=None, help="prune MODEL by magnitude first (default: as it is)")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--rounds", type=int, default=5)
parser.add_argument("--json", default=None, help="write the record here (default: print only)")
args = parser.parse_args()
torch.set_num_threads(args.threads)

task = get_task(args.task)
if args.model is None:
    args.sparsity = args.sparsity or 0.95
    model = magnitude_pruned(args.sparsity)
    _, tokenizer, _ = load_model(None, task, new_head=True)
else:
    model, tokenizer, _ = load_model(args.model, task, new_head=False)
    if args.sparsity:
        build_pruner(find_targets(model), args.sparsity, 0, 0, 1).step(0)
model.eval()
dev = encode(load_split(task, None, "dev"), tokenizer, 128, task.is_regression)
batches = list(eval_batches(dev, 32))


def run(forward):
    logits, hidden = [], []
    with torch.no_grad():
        for batch in batches:
            out = forward({k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
            logits.append(out.logits)
            hidden.append(out.hidden_states[-1][batch["attention_mask"].bool()])  # the real tokens
    return torch.cat(logits), torch.cat(hidden)


def predictions(logits):
    return logits.squeeze(-1) if task.is_regression else logits.argmax(-1)


labels = torch.cat([batch["labels"] for batch in batches])
dense_logits, dense_hidden = run(lambda b: model(**b, output_hidden_states=True))
engine = from_hf_model(model, values="int8")
record = {"model": args.model or "embedded MiniLM, new head", "task": task.name, "sparsity": args.sparsity,
          "examples": len(labels), "dense": compute_metrics(task, labels.numpy(), predictions(dense_logits).numpy()),
          "dense_max_abs_logit": float(dense_logits.abs().max()),
          "machine": machine()}
for attention in ("fp32", "bf16"):
    engine.attention_bf16 = attention == "bf16"
    logits, hidden = run(lambda b: engine(**b, output_hidden_states=True))
    record[f"int8 weights, {attention} attention"] = {
        "metrics": compute_metrics(task, labels.numpy(), predictions(logits).numpy()),
        "max_logit_diff": float((logits - dense_logits).abs().max()),
        "changed_predictions": (None if task.is_regression
                                else int((predictions(logits) != predictions(dense_logits)).sum())),
        "last_hidden_relative_error": float((hidden - dense_hidden).norm() / dense_hidden.norm())}


def timing(bf16: bool, inputs: dict):
    def measure():
        engine.attention_bf16 = bf16
        return median_ms(lambda: engine(**inputs), 5, 1)
    return measure


random_batches = {f"batch {batch} x 128": synthetic_inputs(model.config.vocab_size, batch, 128) for batch in (1, 32)}
figures = interleaved_rounds([(attention, {name: timing(attention == "bf16", inputs)
                                           for name, inputs in random_batches.items()})
                              for attention in ("fp32", "bf16")], args.rounds)
for attention, measures in figures.items():
    record[f"int8 weights, {attention} attention"]["ms"] = {
        name: {"median": round(statistics.median(ms), 2), "min": round(min(ms), 2), "max": round(max(ms), 2)}
        for name, ms in measures.items()}
print(json.dumps(record, indent=1))
if args.json:
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
