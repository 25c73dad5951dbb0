"""The jobs: one module a command, named as the command is (prune-embedder: prune_embedder); `experiment` is a
research tool's command, in sparsebert.research."""

import importlib

RESEARCH_JOBS = ("experiment",)


def job_module(job: str):
    package = "sparsebert.research" if job in RESEARCH_JOBS else __package__
    return importlib.import_module(f"{package}.{job.replace('-', '_')}")
