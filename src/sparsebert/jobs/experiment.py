"""sparsebert experiment: a grid of finetune/prune jobs from a YAML file, resumable, with tables and plots.

Each job's model folder goes under `runs_dir`; a job whose metrics.json exists there, or whose record is in
the committed `<output>/results.json`, is not run again, and one with a checkpoint (`save_every: N`) goes on
from it (its checkpoints are deleted once its model is written), so a long grid survives interruptions and can
be spread over several sessions, each on a fresh clone (runs_dir is not committed; a teacher is retrained
there, and must come out bit for bit the one that taught the committed runs, which its records'
`teacher_sha256` names). Several processes can work through one grid side by side (each job is claimed by one
of them). After every job the records are gathered into `<output>/results.json`, a markdown table of scores,
one of each pruned model's sparsity per layer (`layers.md`), and plots.

Config:
    name: recipe
    output: results/recipe          # committed: results.json, table.md, layers.md, PNG
    label: variant                  # optional: what results.json and the tables call a job's variant
    plot_metric: accuracy           # optional: what the plots show, accuracy where the task has it or its score
    runs_dir: runs/recipe           # models and logs (not committed)
    teachers:                       # finetune settings per teacher name
      mrpc: {task: mrpc, epochs: 3}
    augmented:                      # optional: `sparsebert augment` settings per training set name
      mrpc-x4: {task: mrpc, n_aug: 4}
    jobs:                           # expanded over seeds x sparsities
      - {variant: naive, teacher: mrpc, seeds: [42], sparsities: [0.95], prune: {max_steps: 500}}
      - {variant: aug, teacher: mrpc, train: mrpc-x4}   # prune --train-file <the augmented set>
      - {variant: naive, teacher: mrpc, steps: [1000, 2000]}  # run lengths: a score-against-steps plot
"""

from __future__ import annotations

import hashlib
import itertools
import os
import statistics
import time
from pathlib import Path

from safetensors.torch import load_file

from ..errors import UserError
from ..metrics import compute_metrics
from ..plots import eval_trajectory, plot_curves, plot_trajectories
from ..pruning.report import per_layer
from ..config import AugmentConfig, ExperimentConfig, FinetuneConfig, PruneConfig, build
from ..runio import read_json, read_yaml_mapping, write_json
from ..tasks import get_task, load_split
from . import augment, common, finetune, prune


def load_config(path: str) -> dict:
    if not Path(path).is_file():
        raise UserError(f"{path}: experiment config not found")
    config = read_yaml_mapping(path, "an experiment config")
    for key in ("name", "output", "runs_dir", "teachers", "jobs"):
        if key not in config:
            raise UserError(f"{path}: missing '{key}:'")
    unknown = sorted(config.keys() - CONFIG_KEYS)
    if unknown:  # a misspelt key would otherwise leave its setting at the default, silently, for hours
        raise UserError(f"{path}: unknown key '{unknown[0]}:'; an experiment config takes "
                        f"{', '.join(sorted(CONFIG_KEYS))}")
    if config.get("plot_metric", "accuracy") not in ("accuracy", "score"):
        raise UserError(f"{path}: plot_metric: '{config['plot_metric']}'; give accuracy or score")
    check_jobs(config, path)
    return config


CONFIG_KEYS = {"name", "output", "runs_dir", "label", "plot_metric", "teachers", "augmented", "prune_defaults",
               "compare", "jobs"}
JOB_KEYS = {"variant", "teacher", "seeds", "sparsities", "steps", "prune", "train"}
# the keys a job expands over: what each value must be, and an example for the message
JOB_LISTS = {"seeds": (lambda v: isinstance(v, int) and not isinstance(v, bool), 42),
             "sparsities": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1, 0.95),
             "steps": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, 500)}


def check_jobs(config: dict, path: str) -> None:
    """Every job's settings are checked before any job runs: a typo in the last job of a grid would otherwise
    stop it hours in, and a misspelt key (`sparsity:` for `sparsities:`) would silently run the default."""
    for name, settings in mapping(config["teachers"], f"{path}: teachers:").items():
        if "task" not in mapping(settings, f"{path}: teachers: {name}"):
            raise UserError(f"{path}: teachers: {name} needs 'task:'")
        build(FinetuneConfig, {"output": "-", **settings}, path, f"teachers: {name}")
    augmented = mapping(config.get("augmented") or {}, f"{path}: augmented:")
    for name, settings in augmented.items():
        build(AugmentConfig, {"output": "-", **mapping(settings, f"{path}: augmented: {name}")},
              path, f"augmented: {name}")
    mapping(config.get("prune_defaults", {}), f"{path}: prune_defaults:")
    if not isinstance(config["jobs"], list):
        raise UserError(f"{path}: 'jobs:' is a list of jobs, one '- {{variant: ..., teacher: ...}}' each")
    for number, spec in enumerate(config["jobs"], 1):
        if not isinstance(spec, dict) or not {"variant", "teacher"} <= spec.keys():
            raise UserError(f"{path}: job {number} of 'jobs:' needs 'variant:' and 'teacher:'")
        where = f"{path}: job {number} ({spec['variant']})"
        if spec.keys() - JOB_KEYS:
            raise UserError(f"{where}: unknown key '{sorted(spec.keys() - JOB_KEYS)[0]}'; a job takes "
                            f"{', '.join(sorted(JOB_KEYS))}")
        for key, (fits, example) in JOB_LISTS.items():
            values = spec.get(key, [example])
            if not isinstance(values, list) or not values or not all(map(fits, values)):
                raise UserError(f"{where}: '{key}:' is a list like [{example}]")
        mapping(spec.get("prune", {}), f"{where}: prune:")
        if spec["teacher"] not in config["teachers"]:
            raise UserError(f"{where}: teacher '{spec['teacher']}' is not defined under 'teachers:'")
        if "train" in spec and spec["train"] not in augmented:
            raise UserError(f"{where}: trains on '{spec['train']}', which 'augmented:' does not define")
        settings = {**config.get("prune_defaults", {}), **spec.get("prune", {})}
        build(PruneConfig, {"output": "-", "teacher": None if settings.get("no_teacher") else "-", **settings},
              path, spec["variant"])


def mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        shape = "empty" if value is None else f"a {type(value).__name__}"
        raise UserError(f"{where} is a mapping ({{key: value, ...}}), not {shape}")
    return value


def expand(config: dict) -> list[dict]:
    jobs = []
    for spec in config["jobs"]:
        for (rank, seed), sparsity, steps in itertools.product(enumerate(spec.get("seeds", [42])),
                                                               spec.get("sparsities", [0.95]), spec.get("steps", [None])):
            teacher = spec["teacher"]
            length = f"-{steps}steps" if steps else ""  # `steps:` lists run lengths, each its own job
            jobs.append({**spec, "seed": seed, "seed_rank": rank, "sparsity": sparsity, "steps": steps,
                         "task": config["teachers"][teacher]["task"],
                         "dir": f"{spec['variant']}-{teacher}-s{sparsity:g}-seed{seed}{length}"})
    # a grid spread over sessions completes every job's first seed before any job's second: a table for
    # one seed comes first, the spread over seeds later
    return sorted(jobs, key=lambda j: j["seed_rank"])


def record(task_name: str, variant: str, sparsity: float, seed: int, result: dict) -> dict:
    """A job's line in results.json: `score` is the model the job ends with (what it hands over); the best of
    its dev evaluations is beside it, labelled."""
    task = get_task(task_name)
    final, best = result["final"], result.get("best")
    return {"task": task.name.lower(), "variant": variant, "sparsity": sparsity, "seed": seed,
            "steps": result["steps"], "metric": task.main_metric, "score": final[task.main_metric],
            "accuracy": final.get("accuracy"), "f1": final.get("f1"), **final,
            "best_score": best[task.main_metric] if best else None, "seconds": result["train_seconds"]}


def run(args: ExperimentConfig) -> list[dict]:
    config = load_config(args.config)
    runs = Path(config["runs_dir"])
    out = Path(config["output"])
    if args.collect:
        return write_results(config, out)
    jobs = expand(config)
    if args.only:
        order = args.only.split(",")
        position = lambda j: order.index(j["dir"] if j["dir"] in order else j["variant"])
        jobs = sorted((j for j in jobs if j["variant"] in order or j["dir"] in order), key=position)
    if args.tasks:
        order = args.tasks.split(",")
        jobs = sorted((j for j in jobs if j["teacher"] in order), key=lambda j: order.index(j["teacher"]))
    if args.dry_run:  # lists, writes nothing
        for job in jobs:
            print(f"{'done' if is_done(config, job['dir']) else 'todo'}  {job['dir']}")
        return []
    for job in jobs:
        folder = runs / job["dir"]
        if not is_done(config, job["dir"]) and claim(folder):
            try:
                if not is_done(config, job["dir"]):  # another process may have finished it since the check
                    print(f"{job['dir']}: running", flush=True)
                    run_job(config, job, folder, args)
                    write_results(config, out)
            finally:
                release(folder)
    return write_results(config, out)


def run_job(config: dict, job: dict, folder: Path, args) -> None:
    teacher = None if job.get("prune", {}).get("no_teacher") else ensure_teacher(config, job["teacher"], args)
    settings = {**config.get("prune_defaults", {}), **job.get("prune", {}), "task": job["task"],
                "seed": job["seed"], "sparsity": job["sparsity"], "output": str(folder), "overwrite": True,
                "teacher": teacher}
    if job["steps"]:
        settings["max_steps"] = job["steps"]
    if "train" in job:
        settings["train_file"] = ensure_augmented(config, job["train"], args)
    # a job cut off in an earlier session goes on from its checkpoint (a `save_every:` job)
    common.run_to_the_end(prune, build(PruneConfig, settings, args.config, job["variant"]), resume=True)


def is_done(config: dict, name: str) -> bool:
    """A job (or teacher) is done when its folder under runs_dir holds its metrics, or when the committed
    results.json has its record: runs_dir is not committed, so a grid continued from a fresh clone in a
    later session knows its earlier jobs only from there."""
    return ((Path(config["runs_dir"]) / name / "metrics.json").is_file()
            or any(r["job"] == name for r in committed_records(config)))


def committed_records(config: dict) -> list[dict]:
    """The records in <output>/results.json, with the jobs' field named `variant` again, whatever `label:` says."""
    path = Path(config["output"]) / "results.json"
    label = config.get("label", "variant")
    records = [{"variant" if k == label else k: v for k, v in r.items()} for r in read_json(path)] if path.is_file() else []
    return [by_final_model(r) for r in records]


def by_final_model(record: dict) -> dict:
    """Records written before `score` meant the final model held the best evaluation there and the final one in
    `final_score`; they are read as the final model's, with accuracy and F1 unknown (they were the best's)."""
    if "final_score" not in record:
        return record
    old = dict(record)
    final = old.pop("final_score")
    return {**old, "score": final, "best_score": old["score"], "accuracy": None, "f1": None}


def fingerprint(model_folder: Path) -> str:
    """Names a trained model by its weights, so results of a grid continued in another session can show
    that their teacher is the same one, retrained bit for bit."""
    digest = hashlib.sha256()
    for weights in sorted(model_folder.glob("*.safetensors")):
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def claim(folder: Path) -> bool:
    """Several processes can work through one grid side by side: each job goes to the one that creates
    its claim file first (atomically, naming its process id). A claim whose process is gone is taken over."""
    lock = folder.with_name(folder.name + ".claim")
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            owner = lock.read_text()
            if not owner:
                return False  # its process created it an instant ago and is writing its id
            os.kill(int(owner), 0)
            return False  # its process is running the job
        except (ProcessLookupError, ValueError, FileNotFoundError):
            try:  # of several processes finding it stale, one renames it away and retries
                os.rename(lock, f"{lock}.stale-{os.getpid()}")
                os.unlink(f"{lock}.stale-{os.getpid()}")
            except FileNotFoundError:
                pass
            return claim(folder)
        except PermissionError:  # a live process of another user
            return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def release(folder: Path) -> None:
    folder.with_name(folder.name + ".claim").unlink(missing_ok=True)


def made_once(target: Path, done: Path, make) -> None:
    """Calls make() unless `done` exists; while another process of the grid makes `target`, waits for it."""
    while not done.is_file():
        if claim(target):
            try:
                if not done.is_file():
                    make()
            finally:
                release(target)
        else:
            time.sleep(5)


def ensure_teacher(config: dict, name: str, args) -> str:
    """The teacher's model folder, fine-tuned first if this session has none. Committed results were scored
    with a teacher of an earlier session: one retrained differently would make the grid compare runs taught
    by two models, so it stops instead."""
    folder = Path(config["runs_dir"]) / f"teacher-{name}"
    made_once(folder, folder / "metrics.json", lambda: common.run_to_the_end(finetune, build(
        FinetuneConfig, {**config["teachers"][name], "output": str(folder), "overwrite": True},
        args.config, f"teachers: {name}"), resume=True))
    earlier = [r.get("teacher_sha256") for r in committed_records(config) if r["job"] == folder.name]
    retrained = fingerprint(folder) if earlier else None
    if earlier and earlier[0] != retrained:
        raise UserError(f"{folder}: this teacher's weights (sha256 {retrained}) differ from those of the teacher that "
                        f"taught the runs in {Path(config['output']) / 'results.json'} ({earlier[0] or 'not recorded'}); "
                        f"retrain it with the same settings and threads (OMP_NUM_THREADS), or move that results.json "
                        f"away to start the grid over")
    return str(folder)


def ensure_augmented(config: dict, name: str, args) -> str:
    sets = config["augmented"]  # the name is checked by check_jobs
    path = Path(config["runs_dir"]) / f"augmented-{name}.tsv"
    made_once(path, path, lambda: augment.run(build(AugmentConfig, {**sets[name], "output": str(path)},
                                                          args.config, f"augmented: {name}")))
    return str(path)


def write_results(config: dict, out: Path) -> list[dict]:
    """Gathers every finished job of the grid (whoever ran it, in this session or, through the committed
    results.json, in an earlier one) into results.json, the tables and the plots."""
    runs = Path(config["runs_dir"])
    out.mkdir(parents=True, exist_ok=True)
    by_score = config.get("plot_metric", "accuracy") == "score"
    shown = lambda task: plotted_metric(task, by_score)
    fresh, teacher_sha256 = {}, {}
    for name, settings in config["teachers"].items():
        folder = runs / f"teacher-{name}"
        if (folder / "metrics.json").is_file():
            result = read_json(folder / "metrics.json")
            teacher_sha256[name] = fingerprint(folder)
            fresh[folder.name] = {**record(settings["task"], "teacher", 0.0, settings.get("seed", 42), result),
                                  "job": folder.name, "teacher_sha256": teacher_sha256[name]}
    for job in expand(config):
        folder = runs / job["dir"]
        if (folder / "metrics.json").is_file():
            result = read_json(folder / "metrics.json")
            fresh[job["dir"]] = {
                **record(job["task"], job["variant"], job["sparsity"], job["seed"], result),
                "job": job["dir"], "layer_sparsity": layer_sparsity(folder / "masks.safetensors"),
                "teacher_sha256": None if job.get("prune", {}).get("no_teacher") else teacher_sha256.get(job["teacher"]),
                "evaluations": eval_trajectory(folder / "log.jsonl", shown(get_task(job["task"]))),
                "evaluations_metric": shown(get_task(job["task"])),
                "mean_at_target": mean_at_target(folder / "log.jsonl", get_task(job["task"]).main_metric, job["sparsity"])}
    earlier = {r["job"]: r for r in committed_records(config)}
    names = [f"teacher-{name}" for name in config["teachers"]] + [job["dir"] for job in expand(config)]
    records = [fresh.get(name) or earlier[name] for name in names if name in fresh or name in earlier]
    # the grid's jobs are named by `label:` in the files (the paper grid's records say `method`)
    label = config.get("label", "variant")
    write_json(out / "results.json", [{label if k == "variant" else k: v for k, v in r.items()} for r in records])
    write_table(out / "table.md", records, label)
    write_layer_table(out / "layers.md", records, label)
    if "compare" in config:
        tasks = [get_task(t["task"]).name.lower() for t in config["teachers"].values()]
        write_comparison(out / "comparison.md", records, tasks, config["compare"], label)
    # jobs of one `steps:` list differ only in their length, which their names end with
    trajectories = {f"{r['task']} {r['variant']} {r['sparsity']:g} seed {r['seed']}"
                    + (f" {r['steps']} steps" if r["job"].endswith("steps") else ""):
                    (r["evaluations"], r.get("evaluations_metric") or plotted_metric(get_task(r["task"]), False))
                    for r in records if r.get("evaluations")}  # records from before `plot_metric` lack the field
    if trajectories:
        teachers = {r["task"]: r[shown(get_task(r["task"]))] for r in records if r["variant"] == "teacher"}
        majority = {}
        for settings in config["teachers"].values():
            task = get_task(settings["task"])
            if not task.is_regression:
                labels = [e.label for e in load_split(task, settings.get("data_dir"), "dev")]
                always = [max(set(labels), key=labels.count)] * len(labels)
                majority[task.name.lower()] = compute_metrics(task, labels, always)[shown(task)]
        plot_trajectories(trajectories, teachers, majority, out / "trajectories.png")
        metrics = {r["task"]: shown(get_task(r["task"])) for r in records}
        pruned = [{**r, "shown": r[metrics[r["task"]]]} for r in records if r["variant"] != "teacher"]
        plot_curves(pruned, "steps", metrics, teachers, majority, out / "steps.png")
        plot_curves(pruned, "sparsity", metrics, teachers, majority, out / "sparsity.png")
    return records


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


def write_layer_table(path: Path, records: list[dict], label: str) -> None:
    """Sparsity of each encoder layer's target matrices, per job: uniform allocation gives every layer the
    target, a global one shows where the budget went."""
    pruned = [r for r in records if r.get("layer_sparsity")]
    layers = sorted({k for r in pruned for k in r["layer_sparsity"]}, key=lambda k: int(k) if k.isdigit() else 1 << 30)
    lines = [f"| task | {label} | sparsity | steps | seed | " + " | ".join(f"layer {k}" for k in layers) + " |",
             "|---|---|---|---|---|" + "---|" * len(layers)]
    for r in pruned:
        lines.append(f"| {r['task']} | {r['variant']} | {r['sparsity']:g} | {r['steps']} | {r['seed']} | "
                     + " | ".join(f"{r['layer_sparsity'].get(k, float('nan')):.3f}" for k in layers) + " |")
    path.write_text("\n".join(lines) + "\n")


def write_comparison(path: Path, records: list[dict], tasks: list[str], compare: dict, label: str) -> None:
    """Methods against tasks, each at its own sparsity, every score also as a share of the task's teacher,
    and the two claims that table decides: what share `method` keeps on average over the tasks, and on how
    many tasks it beats every one of `baselines`. Tasks without all of their runs are named, not guessed."""
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
    complete = [t for t in tasks if all((v, t) in mean for v in [method, *baselines])]
    wins = [t for t in complete if all(mean[method, t] > mean[b, t] for b in baselines)]
    lines.append(f"- {method} beats all of {', '.join(baselines)} on {len(wins)} of the {len(complete)} tasks where "
                 f"all of them ran ({', '.join(wins) or 'none'}); not yet complete: "
                 f"{', '.join(t for t in tasks if t not in complete) or 'none'}.")
    path.write_text("\n".join(lines) + "\n")


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
