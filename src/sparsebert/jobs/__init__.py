"""The jobs: one module a command, named as the command is (prune-embedder: prune_embedder)."""

import importlib


def job_module(job: str):
    return importlib.import_module(f".{job.replace('-', '_')}", __package__)
