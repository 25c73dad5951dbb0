from .pruner import Pruner, build_pruner, check_pattern, pruner_for_run
from .report import sparsity_report
from .targets import find_targets

__all__ = ["Pruner", "build_pruner", "check_pattern", "find_targets", "pruner_for_run", "sparsity_report"]
