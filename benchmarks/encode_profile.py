"""Where a sentence embedder's time goes when it encodes one sentence at a time (batch 1), on the sparse engine.

Encodes the first STS-B dev sentences one by one through `load_sparse(MODEL).encode`, with the engine's parts
wrapped in timers: the layers that run as one C call each (`layers`), or with `--in-steps` every layer a call per
step, split into the sparse products (Q/K/V, attention output, and the FFN's, fused or apart), attention and
residual + LayerNorm; the embeddings' LayerNorm counts under `LayerNorm` either way. `forward_rest_ms` is the
rest of the encoder (the embeddings' gathers, the layer loop's Python), `encode_rest_ms` the tokenizer, packing,
pooling and normalising around it. Records the CPU features beside the times.
    python benchmarks/encode_profile.py results/embedder/export-90 --threads 2 --out results/embedder/epyc-avx512
"""

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

from sparsebert.benchmarking import timed
from sparsebert.embedding import sts_b_pairs
from sparsebert.loading import load_sparse
from sparsebert.sparse import engine as engine_module
from sparsebert.sparse.calibration import machine
from sparsebert.sparse.engine import EngineLinear, SparseModel

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("model")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--sentences", type=int, default=300)
parser.add_argument("--in-steps", action="store_true", help="run every layer a call per step, to split its time")
parser.add_argument("--out", default=None, help="folder for encode_profile.json (default: print only)")
args = parser.parse_args()
torch.set_num_threads(args.threads)
model = load_sparse(args.model)
if args.in_steps:
    for layer in model.layers:
        layer.one_call = None
sentences = sts_b_pairs()[0][:args.sentences]
spent = defaultdict(float)
model.encode(sentences[:20], batch_size=1)  # warm: buffers, the kernels' scratch
start = time.perf_counter()
model.encode(sentences, batch_size=1)
whole = time.perf_counter() - start
for name, part in (("encoder_layer", "layers"), ("fused_ffn", "products"), ("packed_attention", "attention"),
                   ("add_layernorm", "LayerNorm")):
    setattr(engine_module, name, timed(spent, part, getattr(engine_module, name)))
EngineLinear.__call__ = timed(spent, "products", EngineLinear.__call__)
SparseModel._encoder = timed(spent, "forward", SparseModel._encoder)
start = time.perf_counter()
model.encode(sentences, batch_size=1)
wrapped = time.perf_counter() - start
ms = {part: seconds / len(sentences) * 1e3 for part, seconds in spent.items()}
parts = {k: round(v, 3) for k, v in ms.items() if k != "forward"}
record = {"model": args.model, "threads": args.threads, "sentences": len(sentences), "batch_size": 1,
          "layers": "a call per step" if args.in_steps else "one C call each",
          "ms_per_sentence": round(whole / len(sentences) * 1e3, 3),
          "ms_per_sentence_timed": round(wrapped / len(sentences) * 1e3, 3), "parts_ms": parts,
          "forward_ms": round(ms["forward"], 3), "forward_rest_ms": round(ms["forward"] - sum(parts.values()), 3),
          "encode_rest_ms": round((wrapped / len(sentences) * 1e3) - ms["forward"], 3),
          "machine": machine()}
print(json.dumps(record, indent=2))
if args.out:
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "encode_profile.json").write_text(json.dumps(record, indent=2) + "\n")
