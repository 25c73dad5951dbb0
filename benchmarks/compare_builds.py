"""The same sparse engine on two or more builds of the kernel library, taking turns: is a kernel change faster?

Builds a variant of `src/sparsebert/sparse/_spmm.c` the way the install does, e.g.

    gcc -O3 -fopenmp -std=gnu11 -shared -fPIC -I$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])") \
        variant.c -o /tmp/variant.so

then times the embedded MiniLM magnitude-pruned to --sparsity on each library in turn, round by round (the
machine's drift then falls on every build alike), at batch 1 and 32 of 128 tokens, 32 of 48 and 1 of 12, and
checks that the builds give the same logits. The first library is the installed one unless given.

    python benchmarks/compare_builds.py /tmp/variant.so [--baseline LIB] [--sparsity 0.95] [--values int8]
        [--threads 2] [--rounds 8] [--json OUT.json]
"""

import argparse
import ctypes
import json
import statistics
import time

import torch

from sparsebert.benchmarking import interleaved_rounds, magnitude_pruned
from sparsebert.sparse import kernels
from sparsebert.sparse.calibration import machine
from sparsebert.sparse.engine import from_hf_model

SHAPES = {"batch 1 x 128": (1, 128), "batch 32 x 128": (32, 128), "batch 32 x 48": (32, 48), "batch 1 x 12": (1, 12)}


def library(path: str):
    """A build of the kernel library, declared as the installed one is and set to the same instruction set."""
    lib = kernels.declare(ctypes.CDLL(path))
    lib.sb_use_isa(kernels.ISAS[kernels.KERNEL])
    return lib


parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("libraries", nargs="+")
parser.add_argument("--baseline", default=None, help="default: the installed library")
parser.add_argument("--sparsity", type=float, default=0.95)
parser.add_argument("--values", default="int8", choices=["int8", "fp32"])
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--rounds", type=int, default=8)
parser.add_argument("--json", default=None)
args = parser.parse_args()
if kernels._C is None:
    raise SystemExit("the C kernel is not in use here (numba fall-back): nothing to compare")
torch.set_num_threads(args.threads)
paths = [args.baseline or kernels._C._name] + args.libraries
libraries = {path: library(path) for path in paths}
engine = from_hf_model(magnitude_pruned(args.sparsity), values=args.values)
generator = torch.Generator().manual_seed(0)
inputs = {shape: torch.randint(1000, 30000, size, generator=generator) for shape, size in SHAPES.items()}
logits = {}


def timed(path: str, lib, shape: str, ids: torch.Tensor):
    """ms per call of the engine on the library `lib` built at `path` (the mean of a few calls after one untimed);
    keeps the logits."""
    def measure() -> float:
        kernels._C = lib  # the engine calls the kernels through this module attribute
        mask, calls = torch.ones_like(ids), 20 if ids.shape[0] == 1 else 3
        engine(input_ids=ids, attention_mask=mask)
        start = time.perf_counter()
        for _ in range(calls):
            out = engine(input_ids=ids, attention_mask=mask)
        logits[path, shape] = out.logits
        return (time.perf_counter() - start) / calls * 1e3
    return measure


with torch.inference_mode():
    times = interleaved_rounds([(path, {shape: timed(path, lib, shape, ids) for shape, ids in inputs.items()})
                                for path, lib in libraries.items()], args.rounds)
records = [{"library": path, "shape": shape, "ms": round(statistics.median(times[path][shape]), 3),
            "ms_min": round(min(times[path][shape]), 3), "ms_max": round(max(times[path][shape]), 3),
            "max_logit_diff_from_first": float((logits[path, shape] - logits[paths[0], shape]).abs().max()),
            "sparsity": args.sparsity, "values": args.values, "threads": args.threads, "rounds": args.rounds,
            "machine": machine()} for path in paths for shape in SHAPES]
for r in records:
    print(f"{r['shape']:15s} {r['ms']:8.2f} ms [{r['ms_min']:.2f}-{r['ms_max']:.2f}]  "
          f"diff {r['max_logit_diff_from_first']:.1e}  {r['library']}")
if args.json:
    with open(args.json, "w") as f:
        json.dump(records, f, indent=2)
