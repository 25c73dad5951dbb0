"""The Python API: each job as a function that takes the command line's options as keyword arguments
(`--max-steps 500` is `max_steps=500`, `--no-cache-teacher` is `cache_teacher=False`, a comma-separated
list may be a Python list; `config="run/config.yaml"` starts from a file's settings, and `config=` may also be
the job's config object, `sparsebert.PruneConfig(...)`) and returns what the job reports: the metrics dict.

    import sparsebert
    teacher = sparsebert.finetune(task="mrpc", output="runs/teacher", epochs=3)
    student = sparsebert.prune(task="mrpc", teacher="runs/teacher", output="runs/student", sparsity=0.9)

Bad input raises `sparsebert.UserError` with the same one-line message the command line prints.
"""

from __future__ import annotations

import dataclasses
import os

from .config import CONFIGS, read_config_file


def _run(job: str, positional: list, options: dict):
    from . import models
    from .jobs import job_module
    from .output_folders import release_output_locks

    cls = CONFIGS[job]
    config = options.pop("config", None)
    trust_pickle = options.pop("trust_pickle", False)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise TypeError(f"sparsebert.{job}() got an unexpected keyword argument '{unknown[0]}'")
    given = dict(zip([f.name for f in dataclasses.fields(cls) if f.metadata["positional"]], positional))
    if isinstance(config, cls):
        settings = config.replace(**given, **options)
    elif config is not None and not isinstance(config, (str, os.PathLike)):
        raise TypeError(f"sparsebert.{job}(config=...) takes a {cls.__name__} or a YAML file's path, not a "
                        f"{type(config).__name__}")
    else:
        settings = cls(**{**(read_config_file(config, job) if config is not None else {}), **given, **options})
    previous, models.trust_pickle = models.trust_pickle, trust_pickle
    try:
        return job_module(job).run(settings)
    finally:
        models.trust_pickle = previous
        release_output_locks()


def run(**options) -> dict:
    """The main job: fine-tune a teacher, prune at distilling, report (`sparsebert run`)."""
    return _run("run", [], options)


def finetune(**options) -> dict:
    """Ordinary fine-tuning (`sparsebert finetune`): makes teachers. Returns the dev metrics."""
    return _run("finetune", [], options)


def prune(**options) -> dict:
    """Pruning at distilling (`sparsebert prune`). Returns the dev metrics and sparsity."""
    return _run("prune", [], options)


def evaluate(model, **options) -> dict:
    """Dev metrics of a model folder (`sparsebert evaluate`); engine="sparse" for the sparse engine."""
    return _run("evaluate", [model], options)


def embed(model=None, **options) -> dict:
    """Sentence embeddings of a file's texts into a .npy or .jsonl file (`sparsebert embed`); for texts in hand,
    `sparsebert.load_sparse(folder).encode(sentences)`."""
    return _run("embed", [model], options)


def prune_embedder(**options) -> dict:
    """A sentence embedder pruned while it distils from its dense self (`sparsebert prune-embedder`). Returns its
    STS-B dev Spearman (and the teacher's) and sparsity."""
    return _run("prune-embedder", [], options)


def export(model, output, **options) -> dict:
    """The compressed sparse folder (`sparsebert export`). Returns the export report."""
    return _run("export", [model, output], options)


def bench(**options) -> list[dict]:
    """Every engine side by side (`sparsebert bench`). Returns the timing records."""
    return _run("bench", [], options)
