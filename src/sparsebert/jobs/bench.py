"""sparsebert bench: dense PyTorch against the sparse engine, in the same run with the same threads."""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import UserError
from ..pruning import build_pruner, find_targets
from ..runio import write_json
from ..sparse.engine import match_threads, sparsify

SWEEP = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97)


def add_arguments(p) -> None:
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", default=None, help="a pruned model folder (default: embedded MiniLM pruned on the spot)")
    source.add_argument("--sparsity", type=float, default=None, help="magnitude-prune the embedded model to this (default 0.95)")
    p.add_argument("--sweep", action="store_true", help=f"time sparsities {', '.join(map(str, SWEEP))}; plot speed-up")
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--seq-length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="threads for both engines (default: PyTorch's)")
    p.add_argument("--json", default="bench.json")
    p.add_argument("--plot", default=None, help="PNG of speed-up against sparsity (with --sweep; default beside --json)")


def median_ms(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def magnitude_pruned(sparsity: float):
    from ..models import load_model
    from ..tasks import get_task

    model, _, _ = load_model(None, get_task("mrpc"), new_head=True)
    pruner = build_pruner(find_targets(model), sparsity, 0, 0, 1)
    pruner.step(0)
    return model.eval()


def time_model(dense, sparsity: float, batch_sizes, args) -> list[dict]:
    sparse = copy.deepcopy(dense)
    sparsify(sparse)
    records = []
    for batch in batch_sizes:
        ids = torch.randint(1000, dense.config.vocab_size, (batch, args.seq_length),
                            generator=torch.Generator().manual_seed(0))
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        with torch.inference_mode():
            dense_ms = median_ms(lambda: dense(**inputs), args.repeats, args.warmup)
            sparse_ms = median_ms(lambda: sparse(**inputs), args.repeats, args.warmup)
            max_diff = float((dense(**inputs).logits - sparse(**inputs).logits).abs().max())
        records.append({"batch_size": batch, "seq_length": args.seq_length, "sparsity": round(sparsity, 4),
                        "dense_ms": round(dense_ms, 2), "sparse_ms": round(sparse_ms, 2),
                        "speedup": round(dense_ms / sparse_ms, 3), "threads": torch.get_num_threads(),
                        "max_logit_diff": max_diff})
        tqdm.write(f"sparsity {sparsity:.2f} batch {batch:3d}: dense {dense_ms:8.1f} ms  sparse {sparse_ms:8.1f} ms  "
                   f"speed-up {dense_ms / sparse_ms:.2f}x")
    return records


def run(args) -> list[dict]:
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        raise UserError(f"--batch-sizes '{args.batch_sizes}': give whole numbers separated by commas") from None
    if min(batch_sizes) < 1 or args.seq_length < 1 or args.repeats < 1:
        raise UserError("--batch-sizes, --seq-length and --repeats must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    match_threads()
    records = []
    if args.model:
        from ..models import resolve_model_path
        from .export import load_dense

        dense = load_dense(resolve_model_path(args.model))
        level = float(sum((m.weight == 0).sum() for m in find_targets(dense).values()) /
                      sum(m.weight.numel() for m in find_targets(dense).values()))
        records += time_model(dense, level, batch_sizes, args)
    else:
        levels = SWEEP if args.sweep else [0.95 if args.sparsity is None else args.sparsity]
        for level in levels:
            if not 0 <= level < 1:
                raise UserError(f"--sparsity {level}: give a fraction in [0, 1)")
            records += time_model(magnitude_pruned(level), level, batch_sizes, args)
    write_json(Path(args.json), records)
    print(f"{'sparsity':>8} {'batch':>5} {'seq':>4} {'dense ms':>9} {'sparse ms':>9} {'speed-up':>8}")
    for r in records:
        print(f"{r['sparsity']:8.2f} {r['batch_size']:5d} {r['seq_length']:4d} {r['dense_ms']:9.1f} "
              f"{r['sparse_ms']:9.1f} {r['speedup']:7.2f}x")
    if args.sweep:
        plot_sweep(records, Path(args.plot or Path(args.json).with_suffix(".png")))
    return records


def plot_sweep(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for batch in sorted({r["batch_size"] for r in records}):
        rows = [r for r in records if r["batch_size"] == batch]
        ax.plot([r["sparsity"] for r in rows], [r["speedup"] for r in rows], marker="o", label=f"batch {batch}")
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xlabel("sparsity of the encoder linear weights")
    ax.set_ylabel("speed-up over dense PyTorch")
    ax.set_title(f"MiniLM-L6, sequence {records[0]['seq_length']}, {records[0]['threads']} threads")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
