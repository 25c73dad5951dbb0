"""A grid's records and tables: one record per finished job (by the model it ends with, the best evaluation
beside it), results.json, the markdown tables and the plots."""

from __future__ import annotations

import statistics
from pathlib import Path

from safetensors.torch import load_file

from ..metrics import compute_metrics
from ..pruning.report import per_layer, relative_change
from ..pruning.targets import find_targets
from ..output_folders import read_json, write_json
from ..tasks import get_task, load_split
from .grid import expand, fingerprint
from .plots import eval_trajectory, plot_curves, plot_trajectories
from .pairs import format_p, pair_of, write_paired
from .stats import paired_comparison


def record(task_name: str, variant: str, sparsity: float, seed: int, result: dict) -> dict:
    """A job's line in results.json: `score` is the model the job ends with (what it hands over); the best of
    its dev evaluations is beside it, labelled."""
    task = get_task(task_name)
    final, best = result["final"], result.get("best")
    return {"task": task.name.lower(), "variant": variant, "sparsity": sparsity, "seed": seed,
            "steps": result["steps"], "metric": task.main_metric, "score": final[task.main_metric],
            "accuracy": final.get("accuracy"), "f1": final.get("f1"), **final,
            "best_score": best[task.main_metric] if best else None, "seconds": result["train_seconds"],
            **({"machine": result["machine"]} if "machine" in result else {})}


def committed_records(config: dict) -> list[dict]:
    """The records in <output>/results.json, with the jobs' field named `variant` again, whatever `label:` says."""
    path = Path(config["output"]) / "results.json"
    label = config.get("label", "variant")
    records = [{"variant" if k == label else k: v for k, v in r.items()} for r in read_json(path)] if path.is_file() else []
    return [by_final_model(r) for r in records]


def by_final_model(record: dict) -> dict:
    """Records written before `score` meant the final model held the best evaluation there and the final one in
    `final_score`; they are read as the final model's: its main metric is known, accuracy and F1 otherwise
    not (the best's are kept as best_accuracy and best_f1)."""
    if "final_score" not in record:
        return record
    old = dict(record)
    final = old.pop("final_score")
    return {**old, "score": final, "best_score": old["score"], "accuracy": None, "f1": None, old["metric"]: final,
            "best_accuracy": old.get("accuracy"), "best_f1": old.get("f1")}


def write_results(config: dict, out: Path) -> list[dict]:
    """Gathers every finished job of the grid (whoever ran it, here or, through the committed
    results.json, in an earlier one) into results.json, the tables and the plots."""
    runs = Path(config["runs_dir"])
    out.mkdir(parents=True, exist_ok=True)
    by_score = config.get("plot_metric", "accuracy") == "score"
    shown = lambda task: plotted_metric(task, by_score)
    fresh, teacher_sha256 = {}, {}
    committed = committed_records(config)
    for name, settings in config["teachers"].items():
        folder = runs / f"teacher-{name}"
        if (folder / "metrics.json").is_file():
            result = read_json(folder / "metrics.json")
            teacher_sha256[name] = fingerprint(folder)
            known = [r["weight_change"] for r in committed if r["job"] == folder.name and r.get("weight_change")
                     and r.get("teacher_sha256") == teacher_sha256[name]]
            change = known[0] if known else teacher_weight_change(folder, settings)
            fresh[folder.name] = {**record(settings["task"], "teacher", 0.0, settings.get("seed", 42), result),
                                  "job": folder.name, "teacher_sha256": teacher_sha256[name], "weight_change": change}
    for job in expand(config):
        folder = runs / job["dir"]
        if (folder / "metrics.json").is_file():
            result = read_json(folder / "metrics.json")
            fresh[job["dir"]] = {
                **record(job["task"], job["variant"], job["sparsity"], job["seed"], result),
                "job": job["dir"], "pattern": job_settings(config, job).get("pattern", "unstructured"), "layer_sparsity": layer_sparsity(folder / "masks.safetensors"),
                "teacher_sha256": None if job.get("prune", {}).get("no_teacher") else teacher_sha256.get(job["teacher"]),
                "evaluations": eval_trajectory(folder / "log.jsonl", shown(get_task(job["task"]))),
                "evaluations_metric": shown(get_task(job["task"])),
                "mean_at_target": mean_at_target(folder / "log.jsonl", get_task(job["task"]).main_metric, job["sparsity"])}
    # a teacher retrained on another kind of CPU may differ from the one of the committed runs, and an arm may be
    # run again to pair with a run that teacher taught: a run here replaces only the record of its own teacher
    kept = lambda name: [r for r in committed if r["job"] == name and (
        name not in fresh or r.get("teacher_sha256") != fresh[name]["teacher_sha256"])] + ([fresh[name]] if name in fresh else [])
    teachers = [r for name in config["teachers"] for r in kept(f"teacher-{name}")]
    records = teachers + [r for job in expand(config) for r in kept(job["dir"])]
    # the grid's jobs are named by `label:` in the files (the paper grid's records say `method`)
    label = config.get("label", "variant")
    write_json(out / "results.json", [{label if k == "variant" else k: v for k, v in r.items()} for r in records])
    write_table(out / "table.md", records, label)
    write_layer_table(out / "layers.md", records, label)
    tasks = [get_task(t["task"]).name.lower() for t in config["teachers"].values()]
    teacher_scores = {task: statistics.mean(r["score"] for r in records if r["task"] == task and r["variant"] == "teacher")
                      for task in tasks if any(r["task"] == task and r["variant"] == "teacher" for r in records)}
    # each task's dev set read once: the best constant answer's scores, for retention and for the plots
    constant_answer = {get_task(s["task"]).name.lower(): constant_scores(get_task(s["task"]), s.get("data_dir"))
                       for s in config["teachers"].values()}
    constant = {task: constant_answer[task][get_task(task).main_metric] for task in constant_answer}
    if "compare" in config:
        write_comparison(out / "comparison.md", records, tasks, config["compare"], label)
    if "paired" in config:
        by_fingerprint = {r["teacher_sha256"]: r["score"] for r in teachers if r.get("teacher_sha256")}
        write_paired(out / "paired.md", records, tasks, config["paired"], label, teacher_scores, constant,
                     by_fingerprint)
    if any(r.get("weight_change") for r in records):
        write_weight_change(out / "teacher_change.md", records)
    # jobs of one `steps:` list differ only in their length, which their names end with
    trajectories = {(r["task"], f"{r['task']} {r['variant']} {r['sparsity']:g} seed {r['seed']}"
                     + (f" {r['steps']} steps" if r["job"].endswith("steps") else "")):
                    (r["evaluations"], r.get("evaluations_metric") or plotted_metric(get_task(r["task"]), False))
                    for r in records if r.get("evaluations")}  # records from before `plot_metric` lack the field
    if trajectories:
        teachers = {r["task"]: r[shown(get_task(r["task"]))] for r in records
                    if r["variant"] == "teacher" and r.get(shown(get_task(r["task"]))) is not None}
        majority = {task: scores[shown(get_task(task))] for task, scores in constant_answer.items()
                    if not get_task(task).is_regression}
        plot_trajectories(trajectories, teachers, majority, out / "trajectories.png")
        metrics = {r["task"]: shown(get_task(r["task"])) for r in records}
        # records from before `score` meant the final model know only its main metric
        pruned = [{**r, "shown": r[metrics[r["task"]]]} for r in records
                  if r["variant"] != "teacher" and r.get(metrics[r["task"]]) is not None]
        plot_curves(pruned, "steps", metrics, teachers, majority, out / "steps.png")
        plot_curves(pruned, "sparsity", metrics, teachers, majority, out / "sparsity.png")
    return records


def job_settings(config: dict, job: dict) -> dict:
    """The prune settings a grid job runs with, beyond prune's defaults."""
    return {**config.get("prune_defaults", {}), **job.get("prune", {})}


def constant_scores(task, data_dir) -> dict[str, float]:
    """The dev scores (each of the task's metrics) of the best constant answer: the majority class; for
    regression 0, the correlation of a constant with anything."""
    if task.is_regression:
        return {metric: 0.0 for metric in task.metrics}
    labels = [e.label for e in load_split(task, data_dir, "dev")]
    always = [max(set(labels), key=labels.count)] * len(labels)
    return compute_metrics(task, labels, always)


def plotted_metric(task, by_score: bool) -> str:
    """What the plots show: accuracy where the task has it (on MRPC a collapsed model still shows F1 0.81),
    unless the grid asks for its score (`plot_metric: score`); either way beside the majority class's value."""
    return "accuracy" if "accuracy" in task.metrics and not by_score else task.main_metric


def mean_at_target(log: Path, metric: str, sparsity: float) -> float | None:
    """The mean of a run's evaluations at its target sparsity. Fairer between run lengths than the best
    evaluation, which is a maximum over more evaluations the longer a run stays at the target."""
    scores = [score for _, reached, score in eval_trajectory(log, metric) if reached >= sparsity - 1e-3]
    return statistics.mean(scores) if scores else None


def layer_sparsity(masks_path: Path) -> dict[str, float] | None:
    """Per-layer sparsity of a pruned model, from the masks it saved (0 = removed)."""
    return per_layer(load_file(str(masks_path))) if masks_path.is_file() else None


def layer_order(per_layer_values) -> list[str]:
    """The layer names of several {layer: value} mappings, in model order ("other" last): a table's columns."""
    return sorted({k for values in per_layer_values for k in values}, key=lambda k: int(k) if k.isdigit() else 1 << 30)


def write_layer_table(path: Path, records: list[dict], label: str) -> None:
    """Sparsity of each encoder layer's target matrices, per job: uniform allocation gives every layer the
    target, a global one shows where the budget went."""
    pruned = [r for r in records if r.get("layer_sparsity")]
    layers = layer_order(r["layer_sparsity"] for r in pruned)
    lines = [f"| task | {label} | sparsity | steps | seed | " + " | ".join(f"layer {k}" for k in layers) + " |",
             "|---|---|---|---|---|" + "---|" * len(layers)]
    for r in pruned:
        lines.append(f"| {r['task']} | {r['variant']} | {r['sparsity']:g} | {r['steps']} | {r['seed']} | "
                     + " | ".join(f"{r['layer_sparsity'].get(k, float('nan')):.3f}" for k in layers) + " |")
    path.write_text("\n".join(lines) + "\n")


def write_comparison(path: Path, records: list[dict], tasks: list[str], compare: dict, label: str) -> None:
    """Methods against tasks, each at its own sparsity, every score also as a share of the task's teacher,
    and the two claims that table decides: what share `method` keeps on average over the tasks, and which
    baseline it beats by the paired test of stats.py (seed against seed; a mean ahead with seeds of either sign is
    no win). Tasks without all of their runs are named, not guessed."""
    rows, method, baselines = compare["rows"], compare["method"], compare["baselines"]
    scores = {}
    for r in records:
        if rows.get(r["variant"]) == r["sparsity"]:
            scores.setdefault((r["variant"], r["task"]), []).append(r["score"])
    mean = {key: statistics.mean(values) for key, values in scores.items()}
    # a share of a teacher that scores 0 (a collapsed CoLA teacher's Matthews correlation) means nothing
    teacher = {task: mean[("teacher", task)] for task in tasks if mean.get(("teacher", task), 0) > 0}

    def cell(variant, task):
        values = scores.get((variant, task), [])
        share = f" ({mean[variant, task] / teacher[task]:.1%})" if values and task in teacher and variant != "teacher" else ""
        return mean_and_spread(values) + share + ("" if len(values) < 2 else f" n={len(values)}")

    lines = [f"| {label} | sparsity | " + " | ".join(f"{t} ({get_task(t).main_metric})" for t in tasks) + " |",
             "|---|---|" + "---|" * len(tasks)]
    lines += [f"| {v} | {sp:g} | " + " | ".join(cell(v, t) for t in tasks) + " |" for v, sp in rows.items()]
    kept = {t: mean[method, t] / teacher[t] for t in tasks if (method, t) in mean and t in teacher}
    lines.append("")
    if kept:
        lines.append(f"- {method} at {rows[method]:g} keeps {statistics.mean(kept.values()):.1%} of the teacher's score "
                     f"on average over {', '.join(kept)} (goal {compare['keep']:.0%}); "
                     f"missing: {', '.join(t for t in tasks if t not in kept) or 'none'}.")
    # a method beats a baseline on a task only where the paired test (stats.py) says so, seed against seed
    for baseline in baselines:
        verdicts = []
        for t in tasks:
            ours, theirs = (runs_by_seed(records, t, v, rows[v]) for v in (method, baseline))
            # one seed's two arms pair only when one teacher taught both (pairs.py)
            matched = [m for m in (pair_of(ours[s], theirs[s]) for s in sorted(ours.keys() & theirs.keys())) if m]
            if matched:
                c = paired_comparison([m["score"] for m, _ in matched], [b["score"] for _, b in matched])
                verdicts.append(f"{t} {c['verdict']} ({c['mean']:+.3f}, p {format_p(c['p'])})")
        lines.append(f"- {method} against {baseline}, seed against seed: {'; '.join(verdicts) or 'no pairs yet'}.")
    path.write_text("\n".join(lines) + "\n")


def runs_by_seed(records: list[dict], task: str, variant: str, sparsity: float) -> dict[int, list[dict]]:
    """A variant's runs of a task at a sparsity, by seed, in record order (a seed may have runs of several teachers)."""
    runs: dict[int, list[dict]] = {}
    for r in records:
        if r["task"] == task and r["variant"] == variant and r["sparsity"] == sparsity:
            runs.setdefault(r["seed"], []).append(r)
    return runs


def mean_and_spread(values: list) -> str:
    """A table cell: the value of one run, or the mean ± standard deviation over seeds; – when none ran."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def write_table(path: Path, records: list[dict], label: str) -> None:
    """Means ± standard deviations over seeds. `score`, `accuracy` and `f1` are of the model each job ends with;
    `best evaluation` is the best of its dev evaluations (for prune jobs, at the target sparsity), a separate
    figure, and `mean at target` the mean of the evaluations at the target sparsity."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["task"], r["variant"], r["sparsity"], r["steps"]), []).append(r)
    lines = [f"| task | {label} | sparsity | steps | seeds | score (main metric) | accuracy | f1 | best evaluation "
             "| mean at target | minutes |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    for (task, variant, sparsity, steps), rows in groups.items():
        cell = lambda key: mean_and_spread([r.get(key) for r in rows])
        lines.append(f"| {task} | {variant} | {sparsity:g} | {steps} | {len(rows)} | {cell('score')} "
                     f"({rows[0]['metric']}) | {cell('accuracy')} | {cell('f1')} "
                     f"| {cell('best_score')} | {cell('mean_at_target')} "
                     f"| {statistics.mean(r['seconds'] for r in rows) / 60:.1f} |")
    path.write_text("\n".join(lines) + "\n")


def teacher_weight_change(folder: Path, settings: dict) -> dict[str, float]:
    """Per encoder layer, how far the teacher's matrices moved from the pre-trained model it was fine-tuned
    from (`model:` of its settings, or the embedded one): the premise of pruning the pre-trained encoder
    rather than the teacher is that fine-tuning moves it little."""
    from ..loading import load_model
    from ..models import load_classifier, resolve_model_path

    teacher = load_classifier(resolve_model_path(str(folder)))
    pretrained, _, _ = load_model(settings.get("model"), get_task(settings["task"]), new_head=True)
    weights = lambda model: {name: linear.weight.detach() for name, linear in find_targets(model).items()}
    return relative_change(weights(pretrained), weights(teacher))


def write_weight_change(path: Path, records: list[dict]) -> None:
    teachers = [r for r in records if r.get("weight_change")]
    layers = layer_order(r["weight_change"] for r in teachers)
    lines = ["| teacher | " + " | ".join(f"layer {k}" for k in layers) + " |", "|---|" + "---|" * len(layers)]
    lines += [f"| {r['task']} | " + " | ".join(f"{r['weight_change'].get(k, float('nan')):.3f}" for k in layers) + " |"
              for r in teachers]
    path.write_text("Relative change of each encoder layer's weight matrices from the pre-trained model, "
                    "||teacher - pre-trained|| / ||pre-trained||:\n\n" + "\n".join(lines) + "\n")
