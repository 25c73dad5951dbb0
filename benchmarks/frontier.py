"""Accuracy per millisecond: a grid's models (src/sparsebert/research/experiments/frontier.yaml) beside every alternative
a user would pick, per task. Each point is one model on one engine: its dev metric measured on that engine
(the model each run ends with), its latency at batch 1 and 32 of `--seq-length` tokens, and the task's dev set
in examples per second (its own lengths, batches of 32). Points:
  - the dense teacher in PyTorch fp32, PyTorch dynamic int8 and ONNX Runtime dynamic int8 (where installed);
  - each pruned model exported (`sparsebert export`) with int8 and with fp32 values, on the sparse engine;
  - each small dense student in PyTorch fp32 and int8.
Engines are timed round by round (each round times every point once; ONNX Runtime's threads do not spin after a
run, so they do not steal the cores from the next engine): the median over rounds, with min and max. The first
table has one row per variant (method, sparsity, pattern, engine): the mean score of its seeds' models, the
median of their times; it marks the Pareto front (no other variant at least as accurate and faster) at batch 1
and at batch 32, the goals are read off it and the plot draws it. The second table has every model. Run it
with nothing else on the machine (the lanes of a grid paused with SIGSTOP).
    python benchmarks/frontier.py src/sparsebert/research/experiments/frontier.yaml [--tasks mrpc] [--threads 2]
    python benchmarks/frontier.py --teacher T --students S1,S2 --out DIR                # any finetune / prune folders
    python benchmarks/frontier.py --collect results/frontier/frontier.json      # tables and plots again
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from sparsebert.benchmarking import (build_engine, interleaved_rounds, median_ms, onnx_files, seconds_for,
                                     synthetic_inputs)
from sparsebert.data import encode, eval_batches
from sparsebert.loading import load_sparse
from sparsebert.metrics import compute_metrics
from sparsebert.models import load_classifier, load_tokenizer
from sparsebert.research.grid import expand, load_grid
from sparsebert.research.reports import job_settings
from sparsebert.output_folders import read_json, write_json
from sparsebert.sparse.calibration import machine
from sparsebert.sparse.format import export_model
from sparsebert.tasks import get_task, load_split

BATCHES = (1, 32)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def points_of(config: dict, task_filter: list[str] | None) -> list[dict]:
    """The grid's finished models, one entry per model (engines come later): teachers and jobs."""
    runs = Path(config["runs_dir"])
    models = []
    for name, settings in config["teachers"].items():
        folder = runs / f"teacher-{name}"
        if (folder / "metrics.json").is_file() and (not task_filter or name in task_filter):
            models.append({"task": get_task(settings["task"]).name.lower(), "model": folder.name, "method": "teacher",
                           "sparsity": 0.0, "pattern": "dense", "seed": settings.get("seed", 42), "folder": folder})
    for job in expand(config):
        folder = runs / job["dir"]
        if (folder / "metrics.json").is_file() and (not task_filter or job["teacher"] in task_filter):
            models.append({"task": get_task(job["task"]).name.lower(), "model": job["dir"], "method": job["variant"],
                           "sparsity": job["sparsity"], "seed": job["seed"], "folder": folder,
                           "pattern": job_settings(config, job).get("pattern", "unstructured") if job["sparsity"]
                           else "dense"})
    return models


def points_of_folders(teacher: str, students: list[str]) -> list[dict]:
    """A teacher's and its students' folders (finetune and prune outputs), each described by its config.yaml."""
    import yaml

    from sparsebert.data import model_data_settings
    from sparsebert.loading import load_config

    recorded = model_data_settings(load_config(teacher)).get("task")
    if not recorded:  # scored on a task it never saw, its points would say nothing
        sys.exit(f"--teacher {teacher}: the model records no task it was fine-tuned on (sparsebert finetune records it)")
    task = get_task(recorded).name.lower()
    models = [{"task": task, "model": Path(teacher).name, "method": "teacher", "sparsity": 0.0, "pattern": "dense",
               "seed": 0, "folder": Path(teacher)}]
    for folder in map(Path, students):
        settings = yaml.safe_load((folder / "config.yaml").read_text())
        method = ("small-dense" if settings.get("student_layers") or settings.get("student_hidden") else
                  "prune-teacher" if settings.get("init") == "teacher" else "no-teacher" if settings.get("no_teacher")
                  else "kap")
        sparsity = read_json(folder / "sparsity.json")["targets"]["sparsity"] if settings.get("sparsity") else 0.0
        models.append({"task": task, "model": folder.name, "variant": folder.name, "method": method,
                       "sparsity": round(sparsity, 3),
                       "pattern": settings.get("pattern", "unstructured") if sparsity else "dense",
                       "seed": settings.get("seed"), "folder": folder})
    return models


def engines_of(entry: dict, tmp: Path, threads: int) -> dict:
    """{engine name: function of the inputs returning logits} for one model."""
    folder = entry["folder"]
    model, tokenizer = load_classifier(str(folder)).eval(), load_tokenizer(str(folder))
    if entry["method"] == "teacher" or not entry["sparsity"]:
        names = ["pytorch-fp32", "pytorch-int8"]
        onnx = {}
        if entry["method"] == "teacher" and onnx_installed():
            (tmp / entry["model"]).mkdir()
            onnx = onnx_files(model, tokenizer, tmp / entry["model"])
            names += ["onnxruntime-int8", "onnxruntime-int8-fused"]
        return {name: build_engine(name, model, threads, onnx, spinning=False) for name in names}
    engines = {}
    for values in ("int8", "fp32"):
        out = tmp / f"{entry['model']}-{values}"
        export_model(model, tokenizer, out, values, "int8" if values == "int8" else "fp32")
        engine = load_sparse(out)
        engines[f"sparsebert-{values}"] = lambda inputs, engine=engine: engine(**inputs).logits
    return engines


def onnx_installed() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def dev_metrics(fn, task, dev) -> dict:
    logits = torch.empty(len(dev), task.num_labels)
    with torch.inference_mode():
        for batch in eval_batches(dev, 32):
            logits[batch["index"]] = fn({k: batch[k] for k in INPUTS}).float()
    predictions = logits[:, 0].numpy() if task.is_regression else logits.argmax(-1).numpy()
    return compute_metrics(task, dev.labels.numpy(), predictions)


def measure(entries: list[dict], threads: int, rounds: int, seq_length: int) -> list[dict]:
    torch.set_num_threads(threads)
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        for task_name in dict.fromkeys(e["task"] for e in entries):
            task = get_task(task_name)
            mine = [e for e in entries if e["task"] == task_name]
            tokenizer = load_tokenizer(str(mine[0]["folder"]))
            dev = encode(load_split(task, None, "dev"), tokenizer, 128, task.is_regression)
            dev_batches = [{k: b[k] for k in INPUTS} for b in eval_batches(dev, 32)]
            runs = []
            for entry in mine:
                for engine, fn in engines_of(entry, Path(tmp), threads).items():
                    print(f"{task_name} {entry['model']} {engine}: dev", flush=True)
                    metrics = dev_metrics(fn, task, dev)
                    runs.append(({**{k: v for k, v in entry.items() if k != "folder"}, "engine": engine,
                                  "metric": task.main_metric, "score": metrics[task.main_metric], **metrics}, fn))
            shapes = {b: synthetic_inputs(tokenizer.vocab_size, b, seq_length) for b in BATCHES}
            measures = [(id(fn), {**{b: (lambda fn=fn, inputs=inputs: median_ms(lambda: fn(inputs), 10 if b == 1 else 3, 1))
                                     for b, inputs in shapes.items()},
                                  "dev": lambda fn=fn: len(dev) / seconds_for(fn, dev_batches)})
                        for _, fn in runs]
            print(f"{task_name}: timing {rounds} rounds", flush=True)
            with torch.inference_mode():
                times = interleaved_rounds(measures, rounds)
            for point, fn in runs:
                for b in BATCHES:
                    ms = times[id(fn)][b]
                    point.update({f"ms_b{b}": round(statistics.median(ms), 2), f"ms_b{b}_min": round(min(ms), 2),
                                  f"ms_b{b}_max": round(max(ms), 2)})
                point["dev_examples_per_second"] = round(statistics.median(times[id(fn)]["dev"]), 1)
                points.append(point)
    run = {**machine(), "threads": threads, "seq_length": seq_length, "rounds": rounds}
    return [{**p, "machine": run} for p in points]


def on_front(points: list[dict], key: str) -> set[int]:
    """Indices of the points that no other point dominates (at least as good a score and at most the latency,
    one of them strictly)."""
    front = set()
    for i, p in enumerate(points):
        if not any(q["score"] >= p["score"] and q[key] <= p[key] and (q["score"] > p["score"] or q[key] < p[key])
                   for q in points):
            front.add(i)
    return front


def best_onnxruntime_int8(teacher: dict) -> dict | None:
    """ONNX Runtime int8 of the teacher at its best: of its configurations (as exported, fused), the better
    score and, at each batch size, the faster time."""
    configs = [p for e, p in teacher.items() if e.startswith("onnxruntime-int8")]
    if not configs:
        return None
    best = max(configs, key=lambda p: p["score"])
    return {**best, **{f"ms_b{b}": min(p[f"ms_b{b}"] for p in configs) for b in BATCHES}}


def goals(points: list[dict]) -> list[str]:
    """The frontier's goals for pruning at distilling (kap*): at ONNX Runtime int8's score or better, at least 2x
    its speed at batch 32 and 1.5x at batch 1; within 1 point of the dense teacher, faster than any int8 of it."""
    lines = []
    teacher = {p["engine"]: p for p in points if p["method"] == "teacher"}
    kap = [p for p in points if p["method"].startswith("kap")]
    ort = best_onnxruntime_int8(teacher)
    if ort and kap:
        good = [p for p in kap if p["score"] >= ort["score"]]
        if good:
            best = min(good, key=lambda p: p["ms_b32"])
            lines.append(f"- at ONNX Runtime int8's {ort['metric']} ({ort['score']:.3f}) or better: {best['model']} on "
                         f"{best['engine']} ({best['score']:.3f}), {ort['ms_b32'] / best['ms_b32']:.2f}x its speed at "
                         f"batch 32 (goal 2x), {ort['ms_b1'] / best['ms_b1']:.2f}x at batch 1 (goal 1.5x)")
        else:
            closest = max(kap, key=lambda p: p["score"])
            lines.append(f"- no kap model reaches ONNX Runtime int8's {ort['metric']} ({ort['score']:.3f}); the "
                         f"closest, {closest['model']} on {closest['engine']}, scores {closest['score']:.3f} "
                         f"({100 * (ort['score'] - closest['score']):.1f} points below) at "
                         f"{ort['ms_b32'] / closest['ms_b32']:.2f}x its speed at batch 32 and "
                         f"{ort['ms_b1'] / closest['ms_b1']:.2f}x at batch 1")
    dense = teacher.get("pytorch-fp32")
    if dense and kap:
        near = [p for p in kap if p["score"] >= dense["score"] - 0.01]
        int8 = [p for e, p in teacher.items() if "int8" in e]
        if near:
            best = min(near, key=lambda p: p["ms_b32"])
            fastest = min(int8, key=lambda p: p["ms_b32"]) if int8 else None
            lines.append(f"- within 1 point of the dense teacher ({dense['score']:.3f}): {best['model']} on "
                         f"{best['engine']} ({best['score']:.3f}), {best['ms_b32']:.1f} ms at batch 32"
                         + (f" against the fastest int8 of the teacher, {fastest['engine']}, {fastest['ms_b32']:.1f} ms"
                            if fastest else ""))
        else:
            closest = max(kap, key=lambda p: p["score"])
            lines.append(f"- no kap model is within 1 point of the dense teacher ({dense['score']:.3f}); the closest, "
                         f"{closest['model']} on {closest['engine']}, is "
                         f"{100 * (dense['score'] - closest['score']):.1f} points below")
    return lines


TIMES = tuple(f"ms_b{b}{end}" for b in BATCHES for end in ("", "_min", "_max")) + ("dev_examples_per_second",)


def by_variant(points: list[dict]) -> list[dict]:
    """One point per task, variant (a grid's job variant; a folder given by --students is its own), sparsity,
    pattern and engine: the mean of its seeds' scores (each model as its run ends), the median of their
    latencies and the widest range. Goals are read off these: a front read off single models would favour
    whichever seed was lucky."""
    groups = {}
    for p in points:
        key = (p["task"], p.get("variant", p["method"]), p["sparsity"], p["pattern"], p["engine"])
        groups.setdefault(key, []).append(p)
    variants = []
    for (_, name, sparsity, _, _), models in groups.items():
        models = sorted(models, key=lambda p: (p.get("seed") is None, p.get("seed") or 0))
        variant = {k: v for k, v in models[0].items() if k != "seed" and k not in TIMES}
        variant.update({"model": name if name != models[0]["method"] else
                        f"{name} {sparsity:g}" if sparsity else name,
                        "seeds": [p.get("seed") for p in models], "scores": [p["score"] for p in models]})
        for k, v in models[0].items():  # the metrics (score, f1, accuracy, ...): their means
            if isinstance(v, float) and k not in TIMES and k != "sparsity":
                variant[k] = statistics.mean(p[k] for p in models)
        for b in BATCHES:
            variant.update({f"ms_b{b}": statistics.median(p[f"ms_b{b}"] for p in models),
                            f"ms_b{b}_min": min(p[f"ms_b{b}_min"] for p in models),
                            f"ms_b{b}_max": max(p[f"ms_b{b}_max"] for p in models)})
        variant["dev_examples_per_second"] = statistics.median(p["dev_examples_per_second"] for p in models)
        variants.append(variant)
    return variants


def table(points: list[dict], seeds: bool) -> list[str]:
    """Rows fastest first at batch 32; `seeds`: the rows are variants, with each seed's score."""
    fronts = {b: on_front(points, f"ms_b{b}") for b in BATCHES}
    metric = points[0]["metric"]
    extra = "accuracy" if "accuracy" in points[0] and metric != "accuracy" else None
    lines = [f"| model | engine | sparsity | pattern | {metric} |" + (" each seed's (seed) |" if seeds else "")
             + (f" {extra} |" if extra else "") + " batch 1 ms | batch 32 ms | dev examples/s | front |",
             "|---|---|---|---|---|" + ("---|" if seeds else "") + ("---|" if extra else "") + "---|---|---|---|"]
    for i, p in sorted(enumerate(points), key=lambda ip: ip[1]["ms_b32"]):
        front = ", ".join(f"b{b}" for b in BATCHES if i in fronts[b]) or ""
        each = ", ".join(f"{score:.3f} ({seed})" for seed, score in zip(p["seeds"], p["scores"])) if seeds else ""
        lines.append(f"| {p['model']} | {p['engine']} | {p['sparsity']:g} | {p['pattern']} | {p['score']:.3f} |"
                     + (f" {each} |" if seeds else "")
                     + (f" {p[extra]:.3f} |" if extra else "")
                     + f" {p['ms_b1']:.1f} ({p['ms_b1_min']:.1f}–{p['ms_b1_max']:.1f}) | {p['ms_b32']:.0f} "
                       f"({p['ms_b32_min']:.0f}–{p['ms_b32_max']:.0f}) | {p['dev_examples_per_second']:.0f} | {front} |")
    return lines


def write_reports(points: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    machine = points[0]["machine"] if points else {}
    lines = [f"{machine.get('processor')} ({', '.join(machine.get('instruction_sets', []))}); sparse kernel "
             f"{machine.get('kernel')}; {machine.get('threads')} threads; sequence {machine.get('seq_length')}; "
             f"median of {machine.get('rounds')} interleaved rounds (min–max)", ""]
    for task in dict.fromkeys(p["task"] for p in points):
        mine = [p for p in points if p["task"] == task]
        variants = by_variant(mine)
        lines += [f"## {task}", "", "### Each variant: the mean of its seeds' scores, the median of their times", "",
                  *table(variants, seeds=True), "", *goals(variants), "", "### Each model", "",
                  *table(mine, seeds=False), ""]
        plot(variants, {b: on_front(variants, f"ms_b{b}") for b in BATCHES}, out / f"frontier_{task}.png")
    (out / "frontier.md").write_text("\n".join(lines))


def plot(points: list[dict], fronts: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(BATCHES), figsize=(6 * len(BATCHES), 4.5), squeeze=False)
    families = list(dict.fromkeys(p["method"] for p in points))
    for ax, b in zip(axes[0], BATCHES):
        labelled = set()
        for i, p in enumerate(points):
            colour = f"C{families.index(p['method']) % 10}"
            marker = {"pytorch-fp32": "s", "pytorch-int8": "D", "onnxruntime-int8": "P", "onnxruntime-int8-fused": "X",
                      "sparsebert-int8": "o", "sparsebert-fp32": "^"}.get(p["engine"], "x")
            ax.scatter(p[f"ms_b{b}"], p["score"], c=colour, marker=marker, s=30,
                       label=p["method"] if p["method"] not in labelled else None)
            labelled.add(p["method"])
            if i in fronts[b] or p["method"] == "teacher":  # the rest by colour: less clutter
                ax.annotate(f"{p['method']} {p['sparsity']:g} {p['engine']}" if p["sparsity"]
                            else f"{p['method']} {p['engine']}",
                            (p[f"ms_b{b}"], p["score"]), fontsize=6, xytext=(3, 2), textcoords="offset points")
        front = sorted((points[i] for i in fronts[b]), key=lambda p: p[f"ms_b{b}"])
        ax.step([p[f"ms_b{b}"] for p in front], [p["score"] for p in front], where="post", color="grey", lw=1,
                label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(f"ms per batch of {b} x {points[0]['machine']['seq_length']} tokens")
        ax.set_ylabel(f"dev {points[0]['metric']}")
        ax.set_title(f"{points[0]['task']}, batch {b}, {points[0]['machine']['threads']} threads", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", help="experiment YAML whose finished models are measured")
    parser.add_argument("--teacher", help="instead of a grid: a teacher's folder (from finetune) ...")
    parser.add_argument("--students", help="... and its students' folders (from prune), comma-separated")
    parser.add_argument("--tasks", help="only these teachers' tasks (comma-separated)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--out", default=None, help="folder of frontier.json, frontier.md and the plots "
                                                    "(default: the grid's output)")
    parser.add_argument("--collect", help="write the tables and plots again from this frontier.json")
    args = parser.parse_args(argv)
    if args.collect:
        write_reports(read_json(Path(args.collect)), Path(args.collect).parent)
        return
    if args.teacher:
        if not args.out:
            parser.error("--teacher needs --out")
        entries = points_of_folders(args.teacher, args.students.split(",") if args.students else [])
    elif args.config:
        entries = points_of(load_grid(args.config), args.tasks.split(",") if args.tasks else None)
    else:
        parser.error("give an experiment config, --teacher DIR [--students DIRS], or --collect FILE")
    out = Path(args.out or load_grid(args.config)["output"])
    points = measure(entries, args.threads, args.rounds, args.seq_length)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "frontier.json", points)
    write_reports(points, out)
    print(f"results: {out / 'frontier.md'}")


if __name__ == "__main__":
    sys.exit(main())
