"""sparsebert: compress a BERT-family encoder for one task by pruning while distilling.

The Python API (`sparsebert.api`: each job as a function of the command line's options; imported on first
use, so `import sparsebert` stays cheap):
    sparsebert.finetune(...), sparsebert.prune(...), sparsebert.evaluate(...), sparsebert.export(...),
    sparsebert.run(...), sparsebert.bench(...), sparsebert.embed(...), sparsebert.prune_embedder(...)
    model = sparsebert.load_sparse("exported-or-pruned-folder")   # the sparse CPU engine
Each job's settings are a dataclass (`sparsebert.PruneConfig`, ...; config/), which the functions also take.
"""

from .errors import UserError

__version__ = "0.1.0"
__all__ = ["UserError", "bench", "embed", "evaluate", "export", "finetune", "load_sparse", "prune", "prune_embedder",
           "run",
           "FinetuneConfig", "PruneConfig", "RunConfig", "EvaluateConfig", "ExportConfig", "EmbedderConfig"]

_LAZY = {"load_sparse": "sparsebert.loading",
         **{job: "sparsebert.api" for job in ("run", "finetune", "prune", "evaluate", "export", "bench", "embed",
                                               "prune_embedder")},
         **{name: "sparsebert.config" for name in ("FinetuneConfig", "PruneConfig", "RunConfig", "EvaluateConfig",
                                                   "ExportConfig", "EmbedderConfig")}}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sparsebert' has no attribute '{name}'")
