"""sparsebert run: the main job. Fine-tune a teacher, prune at distilling, report both.

Settings come from a preset (presets/*.yaml: `quick`, a 2-epoch teacher and 250 pruning steps, sized for
a 2-core CPU; `long`, 4,000 steps, what reached 95% of the teacher on MRPC; `paper`, METHOD.md's recipe);
every other setting is the default of `finetune` and `prune`. A run cut off (a crash, a killed process)
goes on with `sparsebert run --resume --output FOLDER`.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

from .. import checkpoint
from ..config import FinetuneConfig, PruneConfig, RunConfig, build
from ..errors import UserError
from ..loading import load_config
from ..models import resolve_model_path
from ..output_folders import (prepare_output_dir, read_yaml_mapping, refuse_settings_given_anew, saved_config,
                             write_config, write_json)
from ..tasks import get_task
from . import finetune, prune


def load_preset(name: str) -> dict:
    path = Path(name)
    if not path.is_file():
        path = Path(str(resources.files("sparsebert") / "presets" / f"{name}.yaml"))
        if not path.is_file():
            raise UserError(f"--preset {name}: neither a YAML file nor one of quick, long, paper")
    preset = read_yaml_mapping(path, "a preset")
    preset = {section: settings or {} for section, settings in preset.items()}
    if set(preset) - {"teacher", "prune"} or not all(isinstance(v, dict) for v in preset.values()):
        raise UserError(f"{path}: a preset has two sections, teacher: and prune:, of job settings")
    return preset


def new_jobs(config: RunConfig):
    task = get_task(config.task)
    preset = load_preset(config.preset)
    sparsity = config.sparsity if config.sparsity is not None else preset.get("prune", {}).get("sparsity", 0.95)
    out = Path(config.output or f"runs/{task.key}-{sparsity:g}-{time.strftime('%Y%m%d-%H%M%S')}")
    shared = dict(task=config.task, data_dir=config.data_dir, seed=config.seed, device=config.device,
                  overwrite=config.overwrite)
    teacher = build(FinetuneConfig, {**preset.get("teacher", {}), **shared, "model": config.model,
                                     "output": str(out / "teacher")}, config.preset, "teacher")
    student = build(PruneConfig, {**preset.get("prune", {}), **shared, "student": config.model,
                                  "teacher": str(out / "teacher"), "sparsity": sparsity,
                                  "output": str(out / "student")}, config.preset, "prune")
    load_config(resolve_model_path(config.model))  # a mistyped or unusable --model: refused before the folder exists
    out = prepare_output_dir(out, config.overwrite)
    write_config(out, {"job": "run", **config.replace(sparsity=sparsity).to_dict(settings_only=True),
                       "teacher": teacher.to_dict(settings_only=True),
                       "prune": student.to_dict(settings_only=True)})
    return out, teacher, student


def resumed_jobs(config: RunConfig):
    """The run's own settings from its config.yaml, whatever else the command line says."""
    if not config.output:
        raise UserError("--resume needs --output, the folder of the run to continue")
    out = Path(config.output)
    saved = saved_config(out)
    if saved.get("job") != "run":
        raise UserError(f"{out / 'config.yaml'}: not the config of a `sparsebert run`; resume a single job with "
                        "its own command (finetune or prune --resume)")
    keys = ("task", "preset", "seed", "sparsity")
    refuse_settings_given_anew(config, keys, saved, out / "config.yaml")
    for key in keys:
        setattr(config, key, saved[key])
    # the folder is where the run is now, even if it was moved since
    where = out / "config.yaml"
    teacher = build(FinetuneConfig, {**saved["teacher"], "output": str(out / "teacher")}, where, "teacher")
    student = build(PruneConfig, {**saved["prune"], "teacher": str(out / "teacher"),
                                  "output": str(out / "student")}, where, "prune")
    return out, teacher, student


def run_to_the_end(job, settings, resume: bool, say_fresh_start: bool = False) -> dict:
    """Runs one job of `run` or `experiment` in settings.output; with `resume`, from the latest checkpoint an
    earlier, interrupted process left there (a user who asked for it hears when there was none: `say_fresh_start`). Its
    checkpoints are deleted once its model is written: they serve only to resume, and these commands hand
    over finished models, not optimiser states."""
    folder = Path(settings.output)
    latest = checkpoint.latest(folder) if resume else None
    settings.resume = latest is not None
    if latest is not None:
        print(f"{folder}: resuming from {latest.name}", flush=True)
    elif resume and say_fresh_start:
        print(f"{folder}: no checkpoint, running it from the start", flush=True)
    result = job.run(settings)
    checkpoint.remove_all(folder)
    return result


def run_or_resume(job, settings, resume: bool) -> dict:
    """On --resume a finished job's metrics are read back, one with a checkpoint goes on from it, and one cut
    off before its first checkpoint starts over."""
    folder = Path(settings.output)
    if resume and (folder / "metrics.json").is_file():
        print(f"{folder}: finished before, kept", flush=True)
        return json.loads((folder / "metrics.json").read_text())
    settings.overwrite = settings.overwrite or resume
    return run_to_the_end(job, settings, resume, say_fresh_start=True)


def run(config: RunConfig) -> dict:
    out, teacher_config, prune_config = resumed_jobs(config) if config.resume else new_jobs(config)
    task = get_task(config.task)

    started = time.time()
    teacher_result = run_or_resume(finetune, teacher_config, config.resume)
    prune_result = run_or_resume(prune, prune_config, config.resume)
    wall = time.time() - started

    metric = task.main_metric
    sparse_scores = prune_result["final"]  # the model the run hands over; the best evaluation is beside it
    teacher_score, sparse_score = teacher_result[metric], sparse_scores[metric]
    report = {
        "task": task.name, "metric": metric, "teacher_score": teacher_score, "sparse_score": sparse_score,
        "retention": sparse_score / teacher_score if teacher_score else None,
        "sparsity": prune_result["sparsity"], "encoder_nonzero": prune_result["encoder_nonzero"],
        "teacher_metrics": {k: v for k, v in teacher_result.items() if k in task.metrics},
        "sparse_metrics": sparse_scores, "sparse_best_metrics": prune_result["best"],
        "sparse_best_step": prune_result["best_step"],
        "wall_seconds": round(wall, 1), "teacher_seconds": teacher_result["train_seconds"],
        "prune_seconds": prune_result["train_seconds"],
        "seconds_per_step": {"finetune": teacher_result["seconds_per_step"],
                             "prune": prune_result["seconds_per_step"]},
        "resumed": config.resume,  # then wall_seconds counts only the run since it resumed
        "preset": config.preset, "teacher_dir": str(out / "teacher"), "student_dir": str(out / "student"),
    }
    write_json(out / "report.json", report)
    print(f"\n{task.name} ({metric}), preset {config.preset}, seed {config.seed}")
    for name, metrics in (("teacher", report["teacher_metrics"]), ("sparse", sparse_scores)):
        print(f"  {name:8} " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    retention = "n/a (teacher score 0)" if report["retention"] is None else f"{report['retention']:.3f}"
    print(f"  retention {retention}  sparsity {report['sparsity']:.3f}  "
          f"non-zero encoder weights {report['encoder_nonzero']:,}  wall {wall / 60:.1f} min")
    print(f"  model: {out / 'student'}   report: {out / 'report.json'}")
    return report
