"""What a training run leaves in its folder when it ends: the model in Hugging Face's layout, metrics.json and a
model card that says how to make it again; for a pruned model also its masks and sparsity.json."""

from __future__ import annotations

from pathlib import Path

from .modelcard import write_model_card
from .models import save_model
from .pruning import sparsity_report
from .output_folders import write_json


def save_trained(model, tokenizer, out: Path, task, max_seq_length: int | None, result: dict, *, job: str,
                 summary: str, evaluations: list, sparsity: float | None = None) -> dict:
    """The model, its model card and `result` as metrics.json: `summary` says what was done, `job` (the command
    that ran, with the run's config.yaml) how to do it again; returns `result`. metrics.json comes after the
    model and its card, so a folder that has it holds a finished run."""
    save_model(model, tokenizer, out, task, max_seq_length)
    write_model_card(out, summary=summary, made_by=f"sparsebert {job} --config {out / 'config.yaml'} --output NEW-FOLDER",
                     metrics=evaluations, sparsity=sparsity)
    write_json(out / "metrics.json", result)
    return result


def save_pruned(student, tokenizer, out: Path, pruner, task, report: dict, teacher_metrics: dict, main_metric: str,
                job: str, summary: str, evaluations: list, max_seq_length: int | None = None, **recorded) -> dict:
    """The pruned model (zeros stored as zeros), its masks, sparsity.json, and metrics.json: the run's report, the
    teacher's scores, `recorded`, the sparsity reached; returns the metrics."""
    student.set_attn_implementation("sdpa")
    sparsity = sparsity_report(student)
    pruner.save_masks(out / "masks.safetensors")
    write_json(out / "sparsity.json", sparsity)
    result = {**report, "teacher": teacher_metrics, "main_metric": main_metric, **recorded,
              "sparsity": sparsity["targets"]["sparsity"], "encoder_nonzero": sparsity["encoder"]["nonzero"]}
    # metrics.json after the masks: a folder with it is a finished run (a grid's jobs count as done by it)
    return save_trained(student, tokenizer, out, task, max_seq_length, result, job=job,
                        summary=f"{summary}, by sparsebert. Zeros are stored as zeros here; `sparsebert export` makes "
                                "the compressed folder that the sparse engine runs fast.",
                        evaluations=evaluations, sparsity=result["sparsity"])
