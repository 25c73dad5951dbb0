"""Useful GFLOP/s of one pruned layer: the sparse kernel against MKL's dense product and torch.sparse CSR.

The three MiniLM matrices of a layer (fused Q/K/V 1152x384, FFN up 1536x384, FFN down 384x1536),
random sparsity, at batch 32 x 128 tokens and at 128 tokens: CSR with fp32 and int8 values, and int8 1x4
blocks (a matrix of the same sparsity pruned in blocks),
every alternative timed in the same process with the same threads, the C kernel in each width the processor
has (AVX-512 with VNNI, AVX2). "Useful" counts 2 FLOPs per non-zero
per token (the dense product is credited with the same, so its figure is its speed on this layer's work); each
record also holds the times, so that sparsity 1.0 (an empty matrix) gives the kernel's fixed cost per row and strip.
    python benchmarks/kernel_speed.py [--threads N] [--sparsities 0.9,0.95,1.0] [--json results/bench/kernels.json]
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from sparsebert.benchmarking import median_ms
from sparsebert.sparse.calibration import machine
from sparsebert.sparse.kernels import ISAS, KERNEL, CsrMatrix, spmm, use_kernel

SHAPES = {"qkv": (1152, 384), "ffn_up": (1536, 384), "ffn_down": (384, 1536)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--sparsities", default="0.5,0.6,0.7,0.8,0.9,0.95,0.97")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    # the widest first; where the C kernel is not built, the numba fall-back alone
    widths = [w for w in reversed(ISAS) if use_kernel(w) == w] if KERNEL != "numba" else ["numba"]
    records = []
    for sparsity in map(float, args.sparsities.split(",")):
        for name, (out_f, in_f) in SHAPES.items():
            weight = rng.standard_normal((out_f, in_f)).astype(np.float32)
            weight[rng.random(weight.shape) < sparsity] = 0
            bias = np.zeros(out_f, np.float32)
            dense = torch.from_numpy(weight)
            torch_csr = dense.to_sparse_csr()
            fp32, int8 = CsrMatrix.from_dense(weight, bias), CsrMatrix.from_dense(weight, bias, "int8")
            # the same sparsity in 1x4 blocks, as `prune --pattern 1x4` leaves a matrix
            blocked = rng.standard_normal((out_f, in_f)).astype(np.float32)
            blocked *= np.repeat(rng.random((out_f, in_f // 4)) >= sparsity, 4, axis=1)
            int8_1x4 = CsrMatrix.from_dense(blocked, bias, "int8", block=4)
            for tokens in (128, 4096):
                x = torch.randn(tokens, in_f)
                out = torch.empty(tokens, out_f)
                useful = 2 * fp32.nnz * tokens
                with torch.inference_mode():
                    times = {"mkl_dense": median_ms(lambda: torch.mm(x, dense.T, out=out), 15, 3),
                             "torch_sparse_csr": median_ms(lambda: torch_csr @ x.T, 15, 3)}
                    for width in widths:
                        if width != "numba":
                            use_kernel(width)
                        for values, m in (("fp32", fp32), ("int8", int8), ("int8_1x4", int8_1x4)):
                            times[f"{width}_{values}"] = median_ms(lambda: spmm(x, m, out=out), 15, 3)
                record = {"matrix": name, "shape": [out_f, in_f], "sparsity": sparsity, "tokens": tokens,
                          "threads": args.threads,
                          "nnz": fp32.nnz, **{f"{k}_ms": round(t, 4) for k, t in times.items()},
                          **{f"{k}_gflops": round(useful / t / 1e6, 2) for k, t in times.items()},  # t in ms
                          "speedup_over_dense": round(times["mkl_dense"] / times[f"{widths[0]}_fp32"], 2),
                          **machine()}
                records.append(record)
                print(json.dumps(record))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(records, indent=2) + "\n")


if __name__ == "__main__":
    main()
