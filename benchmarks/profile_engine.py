"""Where the sparse engine's time goes: per part of the forward, at batch 1 and 32 (sequence 128).

Times the embedded MiniLM magnitude-pruned to 95% through the engine (fp32 and int8 values) as it runs (`engine_ms`:
each layer one C call where it can), then again with every layer a call per step (`in_steps_ms`), each step's
function wrapped in a timer: the sparse linears (Q/K/V, attention output; the fused FFN), attention, residual +
LayerNorm; the rest (embeddings, packing, head, Python) is the in-steps whole minus those. Writes
OUT/profile_<N>thread.json, each record with the processor and the instruction sets the kernels chose from.
    python benchmarks/profile_engine.py [THREADS] [OUT]      # OUT: results/bench by default
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

from sparsebert.benchmarking import magnitude_pruned, median_ms, timed
from sparsebert.sparse import engine as engine_module
from sparsebert.sparse.calibration import machine
from sparsebert.sparse.engine import EngineLinear, from_hf_model

threads = int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads()
out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("results/bench")
torch.set_num_threads(threads)
pruned = magnitude_pruned(0.95)
engines = {values: from_hf_model(pruned, values=values) for values in ("fp32", "int8")}
spent = defaultdict(float)

records = []
for values, batch in ((v, b) for v in engines for b in (1, 32)):
    engine = engines[values]
    ids = torch.randint(1000, 30000, (batch, 128), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    whole = median_ms(lambda: engine(**inputs), 10, 2)
    one_calls = [layer.one_call for layer in engine.layers]
    for layer in engine.layers:  # a layer in one C call hides its parts from the timers
        layer.one_call = None
    in_steps = median_ms(lambda: engine(**inputs), 10, 2)
    originals = {name: getattr(engine_module, name) for name in ("fused_ffn", "packed_attention", "add_layernorm")}
    linear_call = EngineLinear.__call__
    parts = {"fused_ffn": "ffn (up + GELU + down, fused)", "packed_attention": "attention",
             "add_layernorm": "residual + LayerNorm"}
    for name, part in parts.items():
        setattr(engine_module, name, timed(spent, part, originals[name]))
    EngineLinear.__call__ = timed(spent, "linears (Q/K/V, attention output)", linear_call)
    try:
        spent.clear()
        calls = 10
        for _ in range(calls):
            engine(**inputs)
    finally:
        for name, fn in originals.items():
            setattr(engine_module, name, fn)
        EngineLinear.__call__ = linear_call
        for layer, one_call in zip(engine.layers, one_calls):
            layer.one_call = one_call
    per_part = {part: round(seconds / calls * 1e3, 2) for part, seconds in spent.items()}
    records.append({"batch_size": batch, "seq_length": 128, "threads": threads, "sparsity": 0.95, "values": values,
                    "engine_ms": round(whole, 2), "in_steps_ms": round(in_steps, 2), "parts_ms": per_part,
                    "rest_ms": round(in_steps - sum(per_part.values()), 2),
                    "machine": machine()})
    print(json.dumps(records[-1]))
out.mkdir(parents=True, exist_ok=True)
(out / f"profile_{threads}thread.json").write_text(json.dumps(records, indent=2) + "\n")
