"""A layer in one C call against a call per step: what the return to Python between a layer's steps costs.

The embedded MiniLM magnitude-pruned to --sparsity on the sparse engine (int8 values, as the export's default), every
layer run as one C call (`sb_layer`, where its matrices all run sparse) and as the engine's call per step, taking
turns round by round, on random tokens: batch 1 and 32 of 128 tokens, and one sentence of 12. The two give the
same logits bit for bit (checked here too). Records the CPU features beside the times.
    python benchmarks/layer_calls.py --threads 2 --rounds 7 --json results/bench/epyc-avx512/layer_calls.json
"""

import argparse
import json
import statistics

import torch

from sparsebert.benchmarking import interleaved_rounds, magnitude_pruned, median_ms, synthetic_inputs
from sparsebert.sparse.calibration import machine
from sparsebert.sparse.engine import from_hf_model

SHAPES = {"batch 1 x 128": (1, 128, 50), "batch 32 x 128": (32, 128, 3), "batch 1 x 12": (1, 12, 200)}

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--sparsity", type=float, default=0.95)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--rounds", type=int, default=7)
parser.add_argument("--json", default=None, help="write the record here (default: print only)")
args = parser.parse_args()
torch.set_num_threads(args.threads)

model = magnitude_pruned(args.sparsity)
engine = from_hf_model(model, values="int8")
one_call = [layer.one_call for layer in engine.layers]
if None in one_call:
    raise SystemExit(f"not every layer runs as one call here ({engine.describe()}): nothing to compare")


def layers_as(calls):
    for layer, call in zip(engine.layers, calls):
        layer.one_call = call


def timing(calls, inputs, repeats):
    def measure():
        layers_as(calls)
        return median_ms(lambda: engine(**inputs), repeats, 2)
    return measure


inputs = {shape: synthetic_inputs(model.config.vocab_size, batch, length) for shape, (batch, length, _) in
          SHAPES.items()}
for shape, batch in inputs.items():
    logits = []
    for calls in (one_call, [None] * len(one_call)):
        layers_as(calls)
        logits.append(engine(**batch).logits)
    assert torch.equal(*logits), f"{shape}: the two ways differ"
figures = interleaved_rounds([(way, {shape: timing(calls, inputs[shape], repeats)
                                     for shape, (_, _, repeats) in SHAPES.items()})
                              for way, calls in (("a call per step", [None] * len(one_call)),
                                                 ("one C call a layer", one_call))], args.rounds)
record = {"sparsity": args.sparsity, "values": "int8", "threads": args.threads, "rounds": args.rounds,
          "describe": engine.describe(), "machine": machine(), "ms": {}}
for shape in SHAPES:
    steps, one = (figures[way][shape] for way in ("a call per step", "one C call a layer"))
    record["ms"][shape] = {way: [round(f(times), 3) for f in (statistics.median, min, max)]  # median, min, max
                           for way, times in (("a call per step", steps), ("one C call a layer", one))}
    record["ms"][shape]["speed-up"] = round(statistics.median(steps) / statistics.median(one), 3)
    print(f"{shape}: a call per step {statistics.median(steps):.2f} ms, one C call a layer "
          f"{statistics.median(one):.2f} ms ({record['ms'][shape]['speed-up']:.2f}x)")
if args.json:
    with open(args.json, "w") as f:
        json.dump(record, f, indent=1)
