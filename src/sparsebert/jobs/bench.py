"""sparsebert bench: the sparse engine against everything a user would pick instead, in one run.

Engines: dense PyTorch fp32, PyTorch dynamic int8 (`torch.ao.quantization.quantize_dynamic`), ONNX Runtime
fp32 and dynamic int8 (where onnxruntime is installed: `pip install 'sparsebert[onnx]'`), and the sparse
engine with fp32 and int8 values. Each is timed with the same inputs and threads, at batch sizes of
`--seq-length` tokens and on a real dev set (its own lengths, examples per second), in `--rounds` rounds that
take every engine in turn (medians, with min and max). The dense engines' speed does not depend on how many
weights are zero, so they are timed once per thread count, on the first model; the sparse engine at every
sparsity. Writes JSON, a table with the speed-ups over dense PyTorch fp32 and over the fastest int8 engine, and
a plot of latency against sparsity.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..benchmarking import (DENSE_ENGINES, SPARSE_ENGINES, add_speedups, build_engine, dev_batches,
                            magnitude_pruned, onnx_files, plot_latency, speed_table, target_sparsity, time_engines)
from ..config import BENCH_ENGINES, BenchConfig, fractions, whole_numbers
from ..errors import UserError
from ..output_folders import check_output_file, write_json

ALL_ENGINES = ",".join(BENCH_ENGINES)


def parsed_settings(config):
    """The settings as lists (BenchConfig.check has checked their values); ONNX Runtime's engines dropped where
    it is not installed, unless asked for by name."""
    batch_sizes = whole_numbers(config.batch_sizes, "--batch-sizes")
    threads = whole_numbers(config.threads, "--threads")
    engines = config.engines.split(",")
    if any(e.startswith("onnxruntime") for e in engines):
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            if config.engines != ALL_ENGINES:  # asked for by name: refuse before anything is timed or written
                raise UserError("--engines names ONNX Runtime, which is not installed: "
                                "pip install 'sparsebert[onnx]'") from None
            engines = [e for e in engines if not e.startswith("onnxruntime")]
            print("onnxruntime is not installed: its engines are skipped (pip install 'sparsebert[onnx]')")
    return batch_sizes, threads, engines, None if config.model else fractions(config.sparsities, "--sparsities")


def dev_timing(config: BenchConfig, model_config) -> tuple[str | None, int]:
    """The dev set timed at its own lengths and the length it is cut at: --dev-task, else the task a --model was
    trained on; the length the model was trained with (what it recorded), 128 for the embedded model. A model
    that recorded neither is refused rather than timed on a task or at a length it never saw."""
    if config.dev_task == "none":
        return None, 0
    if model_config is None:
        return (config.dev_task or "mrpc").lower(), 128
    from ..data import model_data_settings

    saved = model_data_settings(model_config)
    task = config.dev_task or (None if "text_columns" in saved else saved.get("task"))
    if task is None:
        why = "was trained on your own files" if "text_columns" in saved else "records no task it was trained on"
        raise UserError(f"--model {config.model}: the model {why}; give --dev-task TASK (a GLUE task) or none")
    if "max_seq_length" not in saved:
        raise UserError(f"--model {config.model}: the model records no length its examples were cut to; give "
                        "--dev-task none")
    return task.lower(), int(saved["max_seq_length"])


def run(config: BenchConfig) -> list[dict]:
    import torch

    from ..loading import load_dense
    from ..models import load_tokenizer, resolve_model_path
    from ..sparse.calibration import machine

    json_path = Path(config.json)
    if config.collect:
        from ..output_folders import read_json

        if not json_path.is_file():
            raise UserError(f"--json {json_path}: no such file to collect from")
        return write_reports(read_json(json_path), json_path, config.plot)
    check_output_file(json_path, "--json")
    batch_sizes, thread_counts, engines_asked, sparsities = parsed_settings(config)
    if json_path.is_dir() or not json_path.parent.is_dir():
        raise UserError(f"--json {json_path}: give a file in an existing folder")
    if config.model:
        path = resolve_model_path(config.model)
        model = load_dense(path)
        tokenizer = load_tokenizer(path)
        models = {target_sparsity(model): {"unstructured": model}}
        if "sparsebert-int8-1x4" in engines_asked:  # the model's own pattern decides: sparsebert-int8 runs it
            engines_asked.remove("sparsebert-int8-1x4")
    else:
        tokenizer = load_tokenizer(resolve_model_path(None))
        patterns = ["unstructured"] + (["1x4"] if "sparsebert-int8-1x4" in engines_asked else [])
        models = {s: {p: magnitude_pruned(s, p) for p in patterns} for s in sparsities}
    dev_at = min(models, key=lambda s: abs(s - 0.95))
    task, length = dev_timing(config, model.config if config.model else None)
    config = config.replace(dev_task=task)
    dev = dev_batches(task, tokenizer, length) if task else None
    records = []
    caller_threads = torch.get_num_threads()  # given back: a Python caller's later work runs as before
    with tempfile.TemporaryDirectory() as tmp:
        first = next(iter(models.values()))["unstructured"]
        onnx = onnx_files(first, tokenizer, Path(tmp)) if any(e.startswith("onnx") for e in engines_asked) else {}
        spinning = config.rounds == 1  # engines taking turns need ONNX Runtime's threads asleep after a run
        try:
            for threads in thread_counts:
                torch.set_num_threads(threads)
                engines = [(name, None, build_engine(name, first, threads, onnx, spinning), first)
                           for name in engines_asked if name in DENSE_ENGINES]
                for sparsity, by_pattern in models.items():
                    for name in [e for e in engines_asked if e in SPARSE_ENGINES]:
                        model = by_pattern["1x4" if name.endswith("1x4") else "unstructured"]
                        engines.append((name, sparsity, build_engine(name, model, threads, onnx), model))
                print(f"{threads} thread{'s' * (threads > 1)}: {len(engines)} engines, {config.rounds} rounds",
                      flush=True)
                records += time_engines(engines, threads, batch_sizes, config, dev, dev_at)
                del engines
        finally:
            torch.set_num_threads(caller_threads)
    add_speedups(records)
    records = [{**r, "machine": machine()} for r in records]
    write_json(json_path, records)
    return write_reports(records, json_path, config.plot)


def write_reports(records: list[dict], json_path: Path, plot: str | None) -> list[dict]:
    json_path.with_suffix(".md").write_text(speed_table(records))
    plot_latency(records, Path(plot) if plot else json_path.with_suffix(".png"))
    print(speed_table(records))
    print(f"results: {json_path}, {json_path.with_suffix('.md')}")
    return records


