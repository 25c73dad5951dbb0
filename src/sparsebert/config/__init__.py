"""Each job's settings as one dataclass, with its defaults, help and checks in one place.

The command line is generated from these classes, the Python API takes their fields as keyword arguments,
presets and experiment grids are mappings of their fields, and the `config.yaml` a run writes is one of them
as YAML, which `--config` reads back. Building the command line imports nothing heavy, so `sparsebert JOB --help` answers
at once (`--config` reads its file through output_folders, which imports torch).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import UserError
from .inference import BenchConfig, EmbedConfig, EvaluateConfig, ExportConfig, PredictConfig, TasksConfig
from .names import BENCH_ENGINES
from .settings import add_arguments, build, fractions, from_namespace, whole_numbers
from .training import (TEACHER_EPOCHS, AugmentConfig, EmbedderConfig, ExperimentConfig, FinetuneConfig, PruneConfig,
                       RunConfig)

__all__ = ["CONFIGS", "CONFIGURABLE", "read_config_file", "add_arguments", "build", "from_namespace", "fractions",
           "whole_numbers", "BENCH_ENGINES", "TEACHER_EPOCHS", *(cls.__name__ for cls in (
               RunConfig, FinetuneConfig, PruneConfig, EvaluateConfig, AugmentConfig, ExportConfig, BenchConfig,
               PredictConfig, EmbedConfig, EmbedderConfig, ExperimentConfig, TasksConfig))]

CONFIGS = {cls.job: cls for cls in (RunConfig, FinetuneConfig, PruneConfig, EvaluateConfig, AugmentConfig,
                                    ExportConfig, BenchConfig, PredictConfig, EmbedConfig, EmbedderConfig,
                                    ExperimentConfig, TasksConfig)}
CONFIGURABLE = ("finetune", "prune", "prune-embedder", "evaluate", "export", "bench", "predict", "embed", "augment")  # by --config FILE

RECORDS = ("model_path", "student_path")  # what a run's config.yaml records about it, not settings


def read_config_file(path, job: str) -> dict:
    """A YAML file of a job's settings (the config.yaml a run writes); what the run recorded beside its settings
    (the paths it resolved) is dropped."""
    from ..output_folders import read_yaml_mapping

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path}: file not found")
    values = read_yaml_mapping(path, "a job's config")
    written_by = values.pop("job", job)
    if written_by != job:
        raise UserError(f"{path}: the config of a `sparsebert {written_by}`; run it with that job")
    for key in RECORDS:
        values.pop(key, None)
    names = {f.name for f in dataclasses.fields(CONFIGS[job])}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"{path}: unknown setting '{unknown[0]}' for sparsebert {job}; "
                        f"`sparsebert {job} --help` lists them (with - for _)")
    return values
