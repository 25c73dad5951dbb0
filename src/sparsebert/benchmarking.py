"""The timing harness behind `sparsebert bench` and the benchmarks: each engine a user could pick (dense PyTorch
fp32, PyTorch dynamic int8, ONNX Runtime fp32 and dynamic int8, the sparse engine with fp32 or int8 values) as one
function of the inputs, timed alike (median of repeats after warm-up), on synthetic batches or a real dev set,
with its speed-up over dense PyTorch fp32 measured beside it; a table and a plot of the records.
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

from .config import BENCH_ENGINES

# sparsebert-int8-1x4: the embedded model pruned in 1x4 blocks at the same sparsity (int8 block kernel)
SPARSE_ENGINES = tuple(e for e in BENCH_ENGINES if e.startswith("sparsebert"))
DENSE_ENGINES = tuple(e for e in BENCH_ENGINES if e not in SPARSE_ENGINES)


def median_ms(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def timed(spent: dict, part: str, fn):
    """fn, adding the seconds each call takes to spent[part] (a profile by parts: wrap the functions that make a part)."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[part] += time.perf_counter() - start
    return wrapper


def magnitude_pruned(sparsity: float, pattern: str = "unstructured"):
    from .loading import load_model
    from .pruning import build_pruner, find_targets
    from .tasks import get_task

    model, _, _ = load_model(None, get_task("mrpc"), new_head=True)
    pruner = build_pruner(find_targets(model), sparsity, 0, 0, 1, pattern=pattern)
    pruner.step(0)
    return model.eval()


def target_sparsity(model) -> float:
    from .pruning import find_targets

    targets = find_targets(model).values()
    return round(float(sum((m.weight == 0).sum() for m in targets) / sum(m.weight.numel() for m in targets)), 4)


def onnx_files(model, tokenizer, folder: Path) -> dict[str, Path]:
    """The model in ONNX, and in ONNX Runtime's dynamic int8 two ways a user would try: quantized as exported,
    and quantized after ONNX Runtime's transformer optimizer has fused attention, GELU and the LayerNorms
    (faster at batch 1, slower at batch 32 on the machines measured so far). Per-channel weights changed
    neither's speed there, so both keep one scale per tensor."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from onnxruntime.transformers import optimizer

    from .sparse.onnx import export_onnx

    export_onnx(model, tokenizer, folder / "model.onnx")
    quantize_dynamic(str(folder / "model.onnx"), str(folder / "model.int8.onnx"), weight_type=QuantType.QInt8)
    config = model.config
    fused = optimizer.optimize_model(str(folder / "model.onnx"), model_type="bert", num_heads=config.num_attention_heads,
                                     hidden_size=config.hidden_size)
    fused.save_model_to_file(str(folder / "model.fused.onnx"))
    # the fused operators come from ONNX Runtime's own domain: the quantizer needs their shapes inferred first
    quant_pre_process(str(folder / "model.fused.onnx"), str(folder / "model.fused.shaped.onnx"), skip_optimization=True)
    quantize_dynamic(str(folder / "model.fused.shaped.onnx"), str(folder / "model.fused.int8.onnx"),
                     weight_type=QuantType.QInt8)
    return {"onnxruntime-fp32": folder / "model.onnx", "onnxruntime-int8": folder / "model.int8.onnx",
            "onnxruntime-int8-fused": folder / "model.fused.int8.onnx"}


def onnx_session(path: Path, threads: int, spinning: bool = True):
    """An ONNX Runtime session on the CPU with `threads` threads; spinning=False: its threads sleep after a run
    instead of spinning on the cores, which engines timed right after it need."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def build_engine(name: str, model, threads: int, onnx: dict[str, Path], spinning: bool = True):
    """A function of the inputs dict returning logits as a torch tensor. spinning=False: ONNX Runtime's threads
    sleep after a run instead of spinning on the cores, which engines timed right after it need."""
    import torch

    if name == "pytorch-fp32":
        return lambda inputs: model(**inputs).logits
    if name == "pytorch-int8":
        quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
        return lambda inputs: quantized(**inputs).logits
    if name.startswith("onnxruntime"):
        session = onnx_session(onnx[name], threads, spinning)
        return lambda inputs: torch.from_numpy(session.run(["logits"], {k: v.numpy() for k, v in inputs.items()})[0])
    from .sparse.engine import from_hf_model

    engine = from_hf_model(model, values=name.split("-")[1])
    return lambda inputs: engine(**inputs).logits


def synthetic_inputs(vocab_size: int, batch: int, seq_length: int) -> dict:
    import torch

    ids = torch.randint(1000, vocab_size, (batch, seq_length), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def dev_batches(task_name: str, tokenizer, length: int, batch_size: int = 32) -> list[dict]:
    from .data import encode, eval_batches
    from .tasks import get_task, load_split

    task = get_task(task_name)
    dev = encode(load_split(task, None, "dev"), tokenizer, length, task.is_regression)
    return [{k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids")} for b in eval_batches(dev, batch_size)]


def time_engine(name, fn, reference, sparsity, threads, batch_sizes, config, dev) -> list[dict]:
    import torch

    records = []
    with torch.inference_mode():
        for batch in batch_sizes:
            inputs = synthetic_inputs(reference.config.vocab_size, batch, config.seq_length)
            ms = median_ms(lambda: fn(inputs), config.repeats, config.warmup)
            diff = float((fn(inputs) - reference(**inputs).logits).abs().max())
            records.append({"engine": name, "sparsity": sparsity, "threads": threads, "batch_size": batch,
                            "seq_length": config.seq_length, "ms": round(ms, 2), "max_logit_diff": diff})
            print(f"{threads} thr  sparsity {sparsity if sparsity is not None else 'any':>4}  batch {batch:3d}  "
                  f"{name:18s} {ms:9.1f} ms")
        if dev:
            seconds = min(_run_all(fn, dev) for _ in range(max(1, config.repeats // 5)))
            examples = sum(len(b["input_ids"]) for b in dev)
            records.append({"engine": name, "sparsity": sparsity, "threads": threads, "dataset": config.dev_task,
                            "examples": examples, "seconds": round(seconds, 3),
                            "examples_per_second": round(examples / seconds, 1)})
            print(f"{threads} thr  {config.dev_task} dev  {name:18s} {examples / seconds:9.1f} examples/s")
    return records


def _run_all(fn, batches) -> float:
    start = time.perf_counter()
    for b in batches:
        fn(b)
    return time.perf_counter() - start


def add_speedups(records: list[dict]) -> None:
    """Each record's speed-up over dense PyTorch fp32 measured with the same threads and batch."""
    base = {(r["threads"], r.get("batch_size"), r.get("dataset")): r for r in records if r["engine"] == "pytorch-fp32"}
    for r in records:
        b = base.get((r["threads"], r.get("batch_size"), r.get("dataset")))
        if b and "ms" in r:
            r["speedup_vs_pytorch_fp32"] = round(b["ms"] / r["ms"], 2)
        elif b:
            r["speedup_vs_pytorch_fp32"] = round(r["examples_per_second"] / b["examples_per_second"], 2)


def speed_table(records: list[dict]) -> str:
    """Markdown: per thread count, each engine (the sparse ones per sparsity) in ms per batch and examples per
    second on the dev set, each with its speed-up over dense PyTorch fp32 measured beside it."""
    machine = records[0].get("machine") if records else None
    lines = [f"{machine['processor']} ({', '.join(machine['instruction_sets'])}); sparse kernel: "
             f"{machine['kernel']}", ""] if machine else []
    for threads in sorted({r["threads"] for r in records}):
        mine = [r for r in records if r["threads"] == threads]
        columns = [(f"batch {b} x {r['seq_length']}", "batch_size", b)
                   for b, r in {r["batch_size"]: r for r in mine if "batch_size" in r}.items()]
        columns += [(f"{d} dev (examples/s)", "dataset", d) for d in dict.fromkeys(r["dataset"] for r in mine
                                                                                  if "dataset" in r)]
        lines += [f"**{threads} thread{'s' * (threads > 1)}**", "",
                  "| engine | sparsity | " + " | ".join(c[0] for c in columns) + " |",
                  "|---|---|" + "---|" * len(columns)]
        for engine, sparsity in dict.fromkeys((r["engine"], r["sparsity"]) for r in mine):
            cells = []
            for _, key, value in columns:
                r = next((r for r in mine if (r["engine"], r["sparsity"]) == (engine, sparsity) and r.get(key) == value),
                         None)
                figure = "–" if r is None else (f"{r['ms']:.1f} ms" if "ms" in r else f"{r['examples_per_second']:.0f}")
                cells.append(figure if r is None or engine == "pytorch-fp32"
                             else f"{figure} ({r['speedup_vs_pytorch_fp32']:.2f}x)")
            lines.append(f"| {engine} | {'any' if sparsity is None else sparsity} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_latency(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in records if "batch_size" in r]
    panels = sorted({(r["threads"], r["batch_size"]) for r in timed})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    sparsities = sorted({r["sparsity"] for r in timed if r["sparsity"] is not None})
    for ax, (threads, batch) in zip(axes[0], panels):
        rows = [r for r in timed if (r["threads"], r["batch_size"]) == (threads, batch)]
        for name in dict.fromkeys(r["engine"] for r in rows):
            mine = [r for r in rows if r["engine"] == name]
            if mine[0]["sparsity"] is None:
                ax.axhline(mine[0]["ms"], ls="--", lw=1, label=name, color=f"C{DENSE_ENGINES.index(name) + 2}")
            else:
                ax.plot([r["sparsity"] for r in mine], [r["ms"] for r in mine], marker="o", label=name)
        ax.set_yscale("log")
        ax.set_xticks(sparsities)
        ax.set_xlabel("sparsity of the encoder's linear weights")
        ax.set_ylabel("ms per batch")
        ax.set_title(f"batch {batch} x {rows[0]['seq_length']}, {threads} thread{'s' * (threads > 1)}", fontsize=10)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
