"""The Python API: each job as a function that takes the command line's options as keyword arguments
(`--max-steps 500` is `max_steps=500`, `--no-cache-teacher` is `cache_teacher=False`, a comma-separated
list may be a Python list; `config="run/config.yaml"` starts from a file's settings) and returns what the job
reports: the metrics dict.

    import sparsebert
    teacher = sparsebert.finetune(task="mrpc", output="runs/teacher", epochs=3)
    student = sparsebert.prune(task="mrpc", teacher="runs/teacher", output="runs/student", sparsity=0.9)

Bad input raises `sparsebert.UserError` with the same one-line message the command line prints.
"""

from __future__ import annotations

import argparse
import importlib


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a Python caller gets an exception, not a SystemExit
        raise TypeError(f"{self.prog}: {message}")


def _argv(parser: argparse.ArgumentParser, options: dict) -> list[str]:
    actions = {a.dest: a for a in parser._actions}
    argv = []
    for key, value in options.items():
        action = actions.get(key)
        if action is None or not action.option_strings:
            raise TypeError(f"{parser.prog}() got an unexpected keyword argument '{key}'")
        flag = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(action, argparse._StoreTrueAction):
            argv += [flag] if value else []
        elif value is not None:
            argv += [flag, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    return argv


def _run(job: str, positional: list, options: dict):
    from . import models
    from .runio import release_output_locks

    from .cli import apply_config

    module = importlib.import_module(f".jobs.{job}", __package__)
    parser = _Parser(prog=f"sparsebert.{job}")
    module.add_arguments(parser)
    config = options.pop("config", None)
    if config is not None:
        apply_config(parser, job, str(config))
    trust_pickle = options.pop("trust_pickle", False)
    args = parser.parse_args([str(p) for p in positional] + _argv(parser, options))
    previous, models.trust_pickle = models.trust_pickle, trust_pickle
    try:
        return module.run(args)
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


def export(model, output, **options) -> dict:
    """The compressed sparse folder (`sparsebert export`). Returns the export report."""
    return _run("export", [model, output], options)


def bench(**options) -> list[dict]:
    """Every engine side by side (`sparsebert bench`). Returns the timing records."""
    return _run("bench", [], options)
