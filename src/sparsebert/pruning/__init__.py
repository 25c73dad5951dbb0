from .pruner import Pruner, build_pruner
from .report import sparsity_report
from .targets import find_targets

__all__ = ["Pruner", "build_pruner", "find_targets", "sparsity_report"]
