"""sparsebert: compress a BERT-family encoder for one task by pruning while distilling.

Python API (imported on first use, so `import sparsebert` stays cheap):
    model = sparsebert.load_sparse("exported-or-pruned-folder")   # the sparse CPU engine
"""

__version__ = "0.1.0"

_LAZY = {"load_sparse": "sparsebert.sparse.engine"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sparsebert' has no attribute '{name}'")
