"""The timing harness behind `sparsebert bench` and the benchmarks: each engine a user could pick (dense PyTorch
fp32, PyTorch dynamic int8, ONNX Runtime fp32 and dynamic int8, the sparse engine with fp32 or int8 values) as one
function of the inputs, timed alike on synthetic batches or a real dev set in rounds, every engine once a round
(so that the machine's drift, 15-40% over minutes on the shared 2-core machines, falls on all of them alike),
each figure the median of the rounds with their min and max; its speed-ups over dense PyTorch fp32 and over the
fastest int8 engine measured beside it; a table and a plot of the records.
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
INT8_ENGINES = ("pytorch-int8", "onnxruntime-int8", "onnxruntime-int8-fused")  # a user's one-line alternatives


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


def interleaved_rounds(runs: list[tuple[object, dict]], rounds: int) -> dict:
    """runs: (key, {measurement name: a function returning one figure}). Each measurement `rounds` times, every
    run's in turn within a round: {key: {name: [figure per round]}}."""
    figures = {key: {name: [] for name in measures} for key, measures in runs}
    for _ in range(rounds):
        for key, measures in runs:
            for name, measure in measures.items():
                figures[key][name].append(measure())
    return figures


def time_engines(engines: list[tuple[str, float | None, object, object]], threads: int, batch_sizes: list[int],
                 config, dev: list[dict] | None, dev_sparsity: float | None) -> list[dict]:
    """engines: (name, sparsity, function of the inputs, the model its logits are compared with); dev: batches
    of config.dev_task's dev set, timed for the engines whose sparsity is None or dev_sparsity. One record per
    engine and batch size (ms: the median of config.rounds rounds, each the median of config.repeats calls after
    config.warmup) and per dev set (one pass a round)."""
    import torch

    shapes = {b: synthetic_inputs(engines[0][3].config.vocab_size, b, config.seq_length) for b in batch_sizes}
    runs = []
    for name, sparsity, fn, _ in engines:
        measures = {b: (lambda fn=fn, inputs=inputs: median_ms(lambda: fn(inputs), config.repeats, config.warmup))
                    for b, inputs in shapes.items()}
        if dev and sparsity in (None, dev_sparsity):
            measures["dev"] = lambda fn=fn: seconds_for(fn, dev)
        runs.append(((name, sparsity), measures))
    with torch.inference_mode():
        figures = interleaved_rounds(runs, config.rounds)
    records = []
    for name, sparsity, fn, reference in engines:
        mine = figures[(name, sparsity)]
        with torch.inference_mode():
            for b, inputs in shapes.items():
                ms = mine[b]
                diff = float((fn(inputs) - reference(**inputs).logits).abs().max())
                records.append({"engine": name, "sparsity": sparsity, "threads": threads, "batch_size": b,
                                "seq_length": config.seq_length, "ms": round(statistics.median(ms), 2),
                                "ms_min": round(min(ms), 2), "ms_max": round(max(ms), 2), "rounds": len(ms),
                                "max_logit_diff": diff})
        if "dev" in mine:
            examples = sum(len(b["input_ids"]) for b in dev)
            rates = [examples / seconds for seconds in mine["dev"]]
            records.append({"engine": name, "sparsity": sparsity, "threads": threads, "dataset": config.dev_task,
                            "examples": examples, "examples_per_second": round(statistics.median(rates), 1),
                            "examples_per_second_min": round(min(rates), 1),
                            "examples_per_second_max": round(max(rates), 1), "rounds": len(rates)})
    return records


def seconds_for(fn, batches) -> float:
    """Seconds to run fn on every batch, one after another."""
    start = time.perf_counter()
    for b in batches:
        fn(b)
    return time.perf_counter() - start


def add_speedups(records: list[dict]) -> None:
    """Each record's speed-up over dense PyTorch fp32 and over the fastest int8 engine of the dense model (a
    user's one-line alternative), measured with the same threads and batch."""
    def where(r):
        return r["threads"], r.get("batch_size"), r.get("dataset")

    def speed(r):
        return 1 / r["ms"] if "ms" in r else r["examples_per_second"]

    dense = {where(r): r for r in records if r["engine"] == "pytorch-fp32"}
    fastest_int8 = {}
    for r in records:
        best = fastest_int8.get(where(r))
        if r["engine"] in INT8_ENGINES and (best is None or speed(r) > speed(best)):
            fastest_int8[where(r)] = r
    for r in records:
        if where(r) in dense:
            r["speedup_vs_pytorch_fp32"] = round(speed(r) / speed(dense[where(r)]), 2)
        if where(r) in fastest_int8:
            r["speedup_vs_fastest_int8"] = round(speed(r) / speed(fastest_int8[where(r)]), 2)
            r["fastest_int8"] = fastest_int8[where(r)]["engine"]


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
                if r is not None and engine != "pytorch-fp32":
                    versus_int8 = (f"; {r['speedup_vs_fastest_int8']:.2f}x int8"
                                   if engine in SPARSE_ENGINES and "speedup_vs_fastest_int8" in r else "")
                    figure += f" ({r['speedup_vs_pytorch_fp32']:.2f}x{versus_int8})"
                cells.append(figure)
            lines.append(f"| {engine} | {'any' if sparsity is None else sparsity} | " + " | ".join(cells) + " |")
        lines.append("")
    rounds = max((r.get("rounds", 1) for r in records), default=1)
    lines += [f"Medians of {rounds} round{'s' * (rounds > 1)}" + (", every engine once a round" if rounds > 1 else "")
              + " (min and max in the JSON). In brackets: the speed-up over dense PyTorch fp32 and, for the sparse "
              "engines, over the fastest int8 engine of the dense model at the same batch (x int8).", ""]
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
