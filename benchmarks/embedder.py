"""Sentence embedders: quality and speed, side by side. For each model folder (an encoder such as the embedded
all-MiniLM-L6-v2, or its pruned or exported form) on the sparse engine: the STS-B dev Spearman correlation of the
cosine similarities of its embeddings with the gold scores (unsupervised: nothing is trained on STS-B), and
sentences per second on the STS-B dev sentences at their own lengths, in batches of 1 and 32. Beside them, the
dense model in sentence-transformers with PyTorch where sentence-transformers is installed. Timings are
interleaved round by round; run it with nothing else on the machine.
    python benchmarks/embedder.py [MODEL ...] [--threads 2] [--rounds 3] [--json results/embedder/embedder.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from sparsebert.models import resolve_model_path
from sparsebert.runio import write_json
from sparsebert.sparse.calibration import instruction_sets, processor
from sparsebert.sparse.engine import load_sparse
from sparsebert.sparse.kernels import KERNEL
from sparsebert.tasks import get_task, load_split


def sts_b_dev() -> tuple[list[str], list[str], np.ndarray]:
    pairs = load_split(get_task("sts-b"), None, "dev")
    return [p.text_a for p in pairs], [p.text_b for p in pairs], np.array([p.label for p in pairs], dtype=float)


def spearman_of(encode, first: list[str], second: list[str], gold: np.ndarray) -> float:
    a, b = encode(first), encode(second)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(spearmanr(cosine, gold).statistic)


def encoders(models: list[str]) -> dict[str, callable]:
    """{label: function (sentences, batch_size) -> matrix} for every model on the engine, and the first model in
    sentence-transformers where it is installed."""
    found = {}
    for path in models:
        engine = load_sparse(path)
        found[f"sparsebert {Path(path).name}"] = lambda s, b=32, e=engine: e.encode(s, batch_size=b)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        print("sentence-transformers is not installed: its row is skipped", file=sys.stderr)
        return found
    dense = SentenceTransformer(models[0], device="cpu")
    found[f"sentence-transformers {Path(models[0]).name}"] = lambda s, b=32: dense.encode(
        s, batch_size=b, normalize_embeddings=True, convert_to_numpy=True)
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="model folders (default: the embedded all-MiniLM-L6-v2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default="results/embedder/embedder.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    first, second, gold = sts_b_dev()
    sentences = first + second
    found = encoders(args.models or [resolve_model_path(None)])
    records = {label: {"model": label, "sts_b_dev_spearman": round(spearman_of(fn, first, second, gold), 4)}
               for label, fn in found.items()}
    single = sentences[:200]  # batch 1: a sample, the same for every model
    times = {label: {1: [], 32: []} for label in found}
    for round_ in range(args.rounds):
        for label, fn in found.items():
            for batch, texts in ((32, sentences), (1, single)):
                start = time.perf_counter()
                fn(texts, batch)
                times[label][batch].append(len(texts) / (time.perf_counter() - start))
        print(f"round {round_ + 1} of {args.rounds}", file=sys.stderr)
    machine = {"processor": processor(), "instruction_sets": instruction_sets(), "kernel": KERNEL,
               "threads": args.threads, "rounds": args.rounds}
    for label, record in records.items():
        for batch in (1, 32):
            record[f"sentences_per_second_b{batch}"] = round(statistics.median(times[label][batch]), 1)
        record["machine"] = machine
    out = list(records.values())
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(args.json), out)
    for r in out:
        print(f"{r['model']}: STS-B dev Spearman {r['sts_b_dev_spearman']:.4f}, "
              f"{r['sentences_per_second_b32']:.0f} sentences/s at batch 32, {r['sentences_per_second_b1']:.0f} at 1")


if __name__ == "__main__":
    sys.exit(main())
