"""sparsebert run: the main job. Fine-tune a teacher, prune at distilling, report both.

Settings come from a preset (presets/*.yaml: `quick`, the teacher and 500 pruning steps, sized for a
2-core CPU; `long`, 4,000 steps, what reached 95% of the teacher on MRPC; `paper`, METHOD.md's recipe);
every other setting is the default of `finetune` and `prune`. A run cut off (a crash, a killed session)
goes on with `sparsebert run --resume --output FOLDER`.
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path

from ..errors import UserError
from ..runio import prepare_output_dir, read_yaml_mapping, write_config, write_json
from ..tasks import get_task
from . import common, finetune, prune


def add_arguments(p) -> None:
    p.add_argument("--task", default="mrpc")
    p.add_argument("--data-dir", default=None, help="task folder (default: the bundled copy)")
    p.add_argument("--sparsity", type=float, default=0.95)
    p.add_argument("--preset", default="quick", help="quick, long, paper, or a YAML file of the same form")
    p.add_argument("--model", default=None, help="pre-trained encoder (default: embedded MiniLM)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--output", default=None, help="run folder (default: runs/<task>-<sparsity>-<time>)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output with its config.yaml: a finished teacher is kept, a job "
                        "cut off goes on from its latest checkpoint")


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


def job_args(job, overrides: dict, section: str, preset_path: str) -> argparse.Namespace:
    """The job's own defaults, then the preset, then the run's flags."""
    parser = argparse.ArgumentParser()
    job.add_arguments(parser)
    args = parser.parse_args(["--output", "unused"])
    for key, value in overrides.items():
        if not hasattr(args, key):
            raise UserError(f"{preset_path}: unknown setting '{key}' in {section}:")
        setattr(args, key, value)
    return args


def new_jobs(args):
    task = get_task(args.task)
    preset = load_preset(args.preset)
    if not 0 <= args.sparsity < 1:
        raise UserError(f"--sparsity {args.sparsity}: give a fraction in [0, 1)")
    out = Path(args.output or f"runs/{task.key}-{args.sparsity:g}-{time.strftime('%Y%m%d-%H%M%S')}")
    out = prepare_output_dir(out, args.overwrite)
    shared = dict(task=args.task, data_dir=args.data_dir, seed=args.seed, device=args.device,
                  overwrite=args.overwrite)
    teacher_args = job_args(finetune, {**preset.get("teacher", {}), **shared, "model": args.model,
                                       "output": str(out / "teacher")}, "teacher", args.preset)
    prune_args = job_args(prune, {**preset.get("prune", {}), **shared, "student": args.model,
                                  "teacher": str(out / "teacher"), "sparsity": args.sparsity,
                                  "output": str(out / "student")}, "prune", args.preset)
    prune.check_args(prune_args)
    write_config(out, {"job": "run", **vars(args), "teacher": vars(teacher_args), "prune": vars(prune_args)})
    return out, teacher_args, prune_args


def resumed_jobs(args):
    """The run's own settings from its config.yaml, whatever else the command line says."""
    if not args.output:
        raise UserError("--resume needs --output, the folder of the run to continue")
    out = Path(args.output)
    saved = common.saved_config(out)
    if saved.get("job") != "run":
        raise UserError(f"{out / 'config.yaml'}: not the config of a `sparsebert run`; resume a single job with "
                        "its own command (finetune or prune --resume)")
    for key in ("task", "preset", "seed", "sparsity"):
        setattr(args, key, saved[key])
    # the folder is where the run is now, even if it was moved since
    teacher_args = argparse.Namespace(**{**saved["teacher"], "output": str(out / "teacher")})
    prune_args = argparse.Namespace(**{**saved["prune"], "teacher": str(out / "teacher"),
                                       "output": str(out / "student")})
    return out, teacher_args, prune_args


def run_or_resume(job, settings: argparse.Namespace, resume: bool) -> dict:
    """On --resume a finished job's metrics are read back, one with a checkpoint goes on from it, and one cut
    off before its first checkpoint starts over."""
    folder = Path(settings.output)
    if resume and (folder / "metrics.json").is_file():
        print(f"{folder}: finished before, kept", flush=True)
        return json.loads((folder / "metrics.json").read_text())
    settings.overwrite = settings.overwrite or resume
    return common.run_to_the_end(job, settings, resume, say_fresh_start=True)


def run(args) -> dict:
    out, teacher_args, prune_args = resumed_jobs(args) if args.resume else new_jobs(args)
    task = get_task(args.task)

    started = time.time()
    teacher_result = run_or_resume(finetune, teacher_args, args.resume)
    prune_result = run_or_resume(prune, prune_args, args.resume)
    wall = time.time() - started

    metric = task.main_metric
    sparse_scores = prune_result["best"] or prune_result["final"]
    teacher_score, sparse_score = teacher_result[metric], sparse_scores[metric]
    report = {
        "task": task.name, "metric": metric, "teacher_score": teacher_score, "sparse_score": sparse_score,
        "retention": sparse_score / teacher_score if teacher_score else None,
        "sparsity": prune_result["sparsity"], "encoder_nonzero": prune_result["encoder_nonzero"],
        "teacher_metrics": {k: v for k, v in teacher_result.items() if k in task.metrics},
        "sparse_metrics": sparse_scores, "sparse_final_metrics": prune_result["final"],
        "wall_seconds": round(wall, 1), "teacher_seconds": teacher_result["train_seconds"],
        "prune_seconds": prune_result["train_seconds"],
        "seconds_per_step": {"finetune": teacher_result["seconds_per_step"],
                             "prune": prune_result["seconds_per_step"]},
        "resumed": args.resume,  # then wall_seconds is this session's only
        "preset": args.preset, "teacher_dir": str(out / "teacher"), "student_dir": str(out / "student"),
    }
    write_json(out / "report.json", report)
    print(f"\n{task.name} ({metric}), preset {args.preset}, seed {args.seed}")
    for name, metrics in (("teacher", report["teacher_metrics"]), ("sparse", sparse_scores)):
        print(f"  {name:8} " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    retention = "n/a (teacher score 0)" if report["retention"] is None else f"{report['retention']:.3f}"
    print(f"  retention {retention}  sparsity {report['sparsity']:.3f}  "
          f"non-zero encoder weights {report['encoder_nonzero']:,}  wall {wall / 60:.1f} min")
    print(f"  model: {out / 'student'}   report: {out / 'report.json'}")
    return report
