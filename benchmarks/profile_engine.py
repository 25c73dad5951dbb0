"""Where the sparse engine's time goes: the CSR layers against everything else, at batch 1 and 32.

Times the embedded MiniLM magnitude-pruned to 95% through the engine, then the same model with every
SparseLinear replaced by a stand-in that returns zeros (so what remains is embeddings,
attention products, softmax, LayerNorm, GELU). Writes results/bench/profile.json.
Usage: python benchmarks/profile_engine.py [THREADS]
"""

import json
import sys
from pathlib import Path

import torch

from sparsebert.jobs.bench import magnitude_pruned, median_ms
from sparsebert.sparse.engine import SparseLinear, match_threads, sparsify

threads = int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads()
torch.set_num_threads(threads)
match_threads()
model = magnitude_pruned(0.95)
sparsify(model)
records = []
for batch in (1, 32):
    ids = torch.randint(1000, 30000, (batch, 128), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.inference_mode():
        whole = median_ms(lambda: model(**inputs), 7, 2)
        original = SparseLinear.forward
        SparseLinear.forward = lambda self, x: x.new_zeros(*x.shape[:-1], self.out_features)
        try:
            rest = median_ms(lambda: model(**inputs), 7, 2)
        finally:
            SparseLinear.forward = original
    records.append({"batch_size": batch, "seq_length": 128, "threads": threads, "engine_ms": round(whole, 2),
                    "without_csr_layers_ms": round(rest, 2), "csr_layers_ms": round(whole - rest, 2),
                    "csr_share": round((whole - rest) / whole, 3)})
    print(records[-1])
Path("results/bench").mkdir(parents=True, exist_ok=True)
Path(f"results/bench/profile_{threads}thread.json").write_text(json.dumps(records, indent=2) + "\n")
