"""Masks over the target weights, updated by a criterion, a schedule and an allocation.

In the manner of torch.ao.pruning: what (targets), how (criterion, allocation) and when (schedule)
are separate pieces; the pruner only keeps the masks and applies them. Its state (masks, schedule,
criterion) saves and restores, so a run can continue with the masks it had.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import UserError
from .allocation import ALLOCATIONS
from .criterion import CRITERIA, Criterion
from .pattern import PATTERNS
from .schedule import CubicSchedule


class Pruner:
    def __init__(self, targets: dict[str, torch.nn.Linear], criterion: Criterion, schedule: CubicSchedule,
                 allocation: str = "uniform", pattern: str = "unstructured"):
        self.targets, self.criterion, self.schedule, self.allocation = targets, criterion, schedule, allocation
        self.pattern = pattern
        self.masks = {name: torch.ones_like(m.weight, dtype=torch.bool) for name, m in targets.items()}
        self.level = 0.0  # sparsity of the last mask update

    @torch.no_grad()
    def apply(self) -> None:
        """Zeroes every removed weight; called after every optimiser step."""
        for name, module in self.targets.items():
            module.weight.mul_(self.masks[name])

    def observe(self) -> None:
        """Lets the criterion see this step's gradients; called after backward, before the optimiser step."""
        self.criterion.observe(self.targets)

    @torch.no_grad()
    def prune_to(self, sparsity: float) -> None:
        pattern = PATTERNS[self.pattern]
        scores = {name: pattern.group(self.criterion.scores(name, m.weight)) for name, m in self.targets.items()}
        grouped = {name: pattern.group(mask) for name, mask in self.masks.items()}
        kept = ALLOCATIONS[self.allocation](scores, grouped, sparsity)
        self.masks = {name: pattern.expand(mask, self.masks[name].shape) for name, mask in kept.items()}
        self.level = sparsity
        self.apply()

    def step(self, step: int) -> bool:
        """Updates the masks if `step` is a pruning event of the schedule; says whether it was."""
        if not self.schedule.is_event(step):
            return False
        self.prune_to(self.schedule.sparsity_at(step))
        return True

    def state_dict(self) -> dict:
        return {"masks": {k: v.clone() for k, v in self.masks.items()}, "level": self.level,
                "schedule": self.schedule.state_dict(), "criterion": self.criterion.state_dict(),
                "allocation": self.allocation, "pattern": self.pattern}

    def load_state_dict(self, state: dict) -> None:
        self.masks = {k: state["masks"][k].to(torch.bool) for k in self.targets}
        self.level = state["level"]
        self.schedule = CubicSchedule.from_state_dict(state["schedule"])
        self.criterion.load_state_dict(state["criterion"])
        self.allocation = state["allocation"]
        self.pattern = state["pattern"]
        self.apply()

    def save_masks(self, path: Path) -> None:
        """Masks as uint8 tensors named after their weights, in safetensors."""
        save_file({f"{k}.weight": v.to(torch.uint8).contiguous().cpu() for k, v in self.masks.items()}, str(path),
                  metadata={"level": str(self.level), "allocation": self.allocation})


def check_pattern(targets: dict, pattern: str) -> None:
    """Refuses, before anything is trained or written, a pattern that some target matrix cannot be cut into."""
    try:
        for linear in targets.values():
            PATTERNS[pattern].group(linear.weight)
    except ValueError as e:
        raise UserError(f"--pattern {pattern}: {e}; use --pattern unstructured") from None


def build_pruner(targets, sparsity: float, start: int, end: int, events: int,
                 criterion: str = "magnitude", allocation: str = "uniform", pattern: str = "unstructured",
                 criterion_options: dict | None = None) -> Pruner:
    return Pruner(targets, CRITERIA[criterion](**(criterion_options or {})), CubicSchedule(sparsity, start, end, events),
                  allocation, pattern)


def pruner_for_run(targets, settings, steps: int) -> Pruner:
    """The pruner a training run's pruning settings (config.PruningSettings) describe, its schedule's start and
    end given as fractions of the run's `steps`."""
    return build_pruner(targets, settings.sparsity, round(settings.prune_start * steps),
                        round(settings.prune_end * steps), settings.prune_events, settings.criterion,
                        settings.allocation, settings.pattern,
                        {"decay": settings.taylor_decay} if settings.criterion == "taylor" else None)
