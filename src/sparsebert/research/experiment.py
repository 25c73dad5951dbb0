"""sparsebert experiment: a grid of finetune/prune jobs from a YAML file, resumable, with tables and plots.

Each job's model folder goes under `runs_dir`; a job whose metrics.json exists there, or whose record is in
the committed `<output>/results.json`, is not run again, and one with a checkpoint (`save_every: N`) goes on
from it (its checkpoints are deleted once its model is written), so a long grid survives interruptions and can
be spread over several runs, each on a fresh clone (runs_dir is not committed: a teacher is retrained there,
and every record names the teacher that taught it by its weights' `teacher_sha256`; where the retrained teacher
comes out different, on another kind of CPU, the grid goes on with it, and a paired comparison matches only
runs taught by one teacher). Several processes can work through one grid side by side (each job is claimed by one
of them). After every job the records are gathered into `<output>/results.json`, a markdown table of scores,
one of each pruned model's sparsity per layer (`layers.md`), and plots.
With `--until HH:MM` (the end of a lane's stretch of work) a job is started only when the committed records of
like jobs (same variant, task and steps) say it ends by then, so that a lane stops between jobs (a job in bf16 on
a CPU that emulates bf16, only by records made on that machine).

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

import statistics
import time
from datetime import datetime, timedelta
from pathlib import Path

from ..config import AugmentConfig, ExperimentConfig, FinetuneConfig, PruneConfig, build
from ..distributed import native_bf16, pick_device
from ..errors import UserError
from ..jobs import augment, finetune, prune
from ..jobs.run import run_to_the_end
from ..tasks import get_task
from ..training import machine_of
from .grid import claim, expand, fingerprint, load_grid, made_once, release
from .pairs import partners_to_run_again
from .reports import committed_records, write_results


def run(config: ExperimentConfig) -> list[dict]:
    deadline = deadline_of(config.until) if config.until else None
    grid = load_grid(config.config)
    runs = Path(grid["runs_dir"])
    out = Path(grid["output"])
    if config.collect:
        return write_results(grid, out)
    jobs = expand(grid)
    order = config.only.split(",") if config.only else None
    tasks = config.tasks.split(",") if config.tasks else None
    variants = {j["variant"] for j in jobs}
    refuse_unknown("--only", order, variants | {j["dir"] for j in jobs}, f"not a variant of {config.config} ("
                   f"{', '.join(sorted(variants))}) nor one of its jobs (--dry-run lists them)")
    refuse_unknown("--tasks", tasks, {j["teacher"] for j in jobs}, f"not a teacher of {config.config} ("
                   f"{', '.join(sorted({j['teacher'] for j in jobs}))})")
    if order:
        jobs = [j for j in jobs if j["variant"] in order or j["dir"] in order]
    if tasks:
        jobs = [j for j in jobs if j["teacher"] in tasks]
    if order:  # seed by seed (each seed's teachers in the order given), so that paired variants complete their pairs
        position = lambda j: order.index(j["dir"] if j["dir"] in order else j["variant"])
        jobs.sort(key=lambda j: (j["seed_rank"], tasks.index(j["teacher"]) if tasks else 0, position(j)))
    elif tasks:  # teacher by teacher
        jobs.sort(key=lambda j: tasks.index(j["teacher"]))
    if config.dry_run:  # lists, writes nothing
        for job in jobs:
            print(f"{'done' if is_done(grid, job['dir']) else 'todo'}  {job['dir']}")
        return []
    every_job, teachers_of = expand(grid), taught_by(grid)
    for job in jobs:
        folder = runs / job["dir"]
        if not is_done(grid, job["dir"]) and ends_in_time(grid, job, deadline, config.until) and claim(folder):
            try:
                if not is_done(grid, job["dir"]):  # another process may have finished it since the check
                    print(f"{job['dir']}: running", flush=True)
                    run_job(grid, job, folder, config.config)
                    write_results(grid, out)
            finally:
                release(folder)
        for partner in partners_to_run_again(grid, every_job, job, teachers_of):
            again = runs / partner["dir"]
            if ends_in_time(grid, partner, deadline, config.until) and claim(again):
                try:
                    if not (again / "metrics.json").is_file():
                        print(f"{partner['dir']}: running again, to pair with {job['dir']} under this teacher",
                              flush=True)
                        run_job(grid, partner, again, config.config)
                        write_results(grid, out)
                finally:
                    release(again)
    return write_results(grid, out)


def refuse_unknown(option: str, names: list[str] | None, known: set[str], why: str) -> None:
    """A name the grid does not have would select no job, and the run would end at once having done nothing."""
    unknown = [n for n in names or () if n not in known]
    if unknown:
        raise UserError(f"{option} {','.join(unknown)}: {why}")


def deadline_of(until: str) -> float:
    """--until HH:MM: the next time the clock reads it (today, or tomorrow when that has passed)."""
    try:
        clock = datetime.strptime(until, "%H:%M").time()
    except ValueError:
        raise UserError(f"--until {until}: give the time of day after which no job may still run as HH:MM "
                        f"(24-hour clock, this machine's local time)") from None
    now = datetime.now()
    end = datetime.combine(now.date(), clock)
    return (end if end > now else end + timedelta(days=1)).timestamp()


def ends_in_time(grid: dict, job: dict, deadline: float | None, until: str | None) -> bool:
    """With --until: whether the job is expected to end by then, from the committed records of like jobs (the
    same variant, task and steps: the median of their wall times, of those made on this machine where there are
    any), plus its teacher's where that is still to train here. A job no record sizes is started: nothing says
    it will not fit, except where it trains in bf16 on a CPU that emulates it (no AVX512_BF16 or AMX), about ten
    times fp32's time: records made elsewhere would size it far too short, so only this machine's count."""
    if deadline is None:
        return True
    task = get_task(job["task"]).name.lower()
    records = committed_records(grid)
    like = [r for r in records if r.get("variant") == job["variant"] and r["task"] == task
            and (not job["steps"] or r["steps"] == job["steps"])]
    teacher = Path(grid["runs_dir"]) / f"teacher-{job['teacher']}"
    teacher_to_train = not job.get("prune", {}).get("no_teacher") and not (teacher / "metrics.json").is_file()
    teachers = [r for r in records if r["job"] == teacher.name]
    unsized = [what for what, settings, timed in (  # bf16 runs that only this machine's records can size
        ("it", {**grid.get("prune_defaults", {}), **job.get("prune", {})}, like),
        ("its teacher", grid["teachers"][job["teacher"]] if teacher_to_train else {}, teachers))
        if settings.get("precision") == "bf16" and not made_here(timed) and emulates_bf16(settings.get("device"))]
    if unsized:
        print(f"{job['dir']}: not started: {unsized[0]} trains in bf16, which this CPU emulates (no AVX512_BF16 or "
              "AMX) at about ten times fp32's time, and no record made here sizes it (run it without --until to time "
              "it here, or on a CPU with bfloat16 instructions)", flush=True)
        return False
    expected = median_seconds(like)
    if expected and teacher_to_train:
        expected += median_seconds(teachers) or 0.0
    left = deadline - time.time()
    if expected is None or expected <= left:
        return True
    print(f"{job['dir']}: not started: like jobs took {expected / 60:.0f} minutes, {max(left, 0) / 60:.0f} are left "
          f"before {until}", flush=True)
    return False


def emulates_bf16(device: str | None) -> bool:
    """Whether bf16 autocast runs emulated on the job's device here: a CPU without bfloat16 instructions (a GPU has
    its own)."""
    return pick_device(device).type == "cpu" and not native_bf16()


def made_here(records: list[dict]) -> list[dict]:
    """The records made on this machine (the same processor, threads and processes)."""
    here = machine_of(pick_device(None))
    return [r for r in records if r.get("machine") == here]


def median_seconds(records: list[dict]) -> float | None:
    """The median wall time of these records, of those made on this machine where there are any (a job's time
    varies several-fold between a GPU, a CPU with bf16 and one without)."""
    timed = [r for r in records if r.get("seconds")]
    seconds = [r["seconds"] for r in made_here(timed) or timed]
    return statistics.median(seconds) if seconds else None


def run_job(grid: dict, job: dict, folder: Path, grid_file: str) -> None:
    teacher = None if job.get("prune", {}).get("no_teacher") else ensure_teacher(grid, job["teacher"], grid_file)
    settings = {**grid.get("prune_defaults", {}), **job.get("prune", {}), "task": job["task"],
                "seed": job["seed"], "sparsity": job["sparsity"], "output": str(folder), "overwrite": True,
                "teacher": teacher}
    if job["steps"]:
        settings["max_steps"] = job["steps"]
    if "train" in job:
        settings["train_file"] = ensure_augmented(grid, job["train"], grid_file)
    # a job cut off in an earlier run goes on from its checkpoint (a `save_every:` job)
    run_to_the_end(prune, build(PruneConfig, settings, grid_file, job["variant"]), resume=True)


def is_done(grid: dict, name: str) -> bool:
    """A job (or teacher) is done when its folder under runs_dir holds its metrics, or when the committed
    results.json has its record: runs_dir is not committed, so a grid continued from a fresh clone
    knows its earlier jobs only from there."""
    return ((Path(grid["runs_dir"]) / name / "metrics.json").is_file()
            or any(r["job"] == name for r in committed_records(grid)))


def taught_by(grid: dict):
    """teachers_of(job): the fingerprints of the teachers of a job's runs, committed or here (None for a run
    taught by none); a job not run yet has none."""
    runs, fingerprints = Path(grid["runs_dir"]), {}

    def teacher_here(name: str) -> str:
        if name not in fingerprints:  # a teacher's weights do not change once its metrics are written
            fingerprints[name] = fingerprint(runs / f"teacher-{name}")
        return fingerprints[name]

    def teachers_of(job: dict) -> set:
        taught = {r.get("teacher_sha256") for r in committed_records(grid) if r["job"] == job["dir"]}
        if (runs / job["dir"] / "metrics.json").is_file():
            taught.add(None if job.get("prune", {}).get("no_teacher") else teacher_here(job["teacher"]))
        return taught
    return teachers_of


def ensure_teacher(grid: dict, name: str, grid_file: str) -> str:
    """The teacher's model folder, fine-tuned first if runs_dir has none. A teacher retrained on another kind of
    CPU rarely comes out bit for bit the one that taught the committed runs: the grid goes on with it, its
    records name it, and the two arms of a pair are compared only when one teacher taught both."""
    folder = Path(grid["runs_dir"]) / f"teacher-{name}"
    made_once(folder, folder / "metrics.json", lambda: run_to_the_end(finetune, build(
        FinetuneConfig, {**grid["teachers"][name], "output": str(folder), "overwrite": True},
        grid_file, f"teachers: {name}"), resume=True))
    earlier = {r.get("teacher_sha256") for r in committed_records(grid) if r["job"] == folder.name}
    retrained = fingerprint(folder) if earlier else None
    if earlier and retrained not in earlier:
        print(f"{folder}: this teacher's weights (sha256 {retrained}) differ from those of the teacher(s) of the "
              f"committed runs ({', '.join(sorted(map(str, earlier)))}); its runs are recorded under its own "
              f"fingerprint and paired only with runs it taught", flush=True)
    return str(folder)


def ensure_augmented(grid: dict, name: str, grid_file: str) -> str:
    sets = grid["augmented"]  # the name is checked by check_jobs
    path = Path(grid["runs_dir"]) / f"augmented-{name}.tsv"
    made_once(path, path, lambda: augment.run(build(AugmentConfig, {**sets[name], "output": str(path)},
                                                          grid_file, f"augmented: {name}")))
    return str(path)
