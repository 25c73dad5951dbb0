"""Pieces every training job shares: seeding, device, optimiser groups, learning-rate schedule."""

from __future__ import annotations

import random

import numpy as np
import torch

from .errors import UserError


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu")
    return torch.device(name)


def no_decay(name: str) -> bool:
    return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name


def make_optimizer(named_parameters, lr: float, weight_decay: float, head_lr: float | None = None,
                   head_prefixes: tuple[str, ...] = ("classifier.",)):
    """AdamW without weight decay on biases and LayerNorm; the new task head may get its own rate."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in named_parameters:
        if param.requires_grad:
            groups.setdefault((no_decay(name), name.startswith(head_prefixes)), []).append(param)
    return torch.optim.AdamW([
        {"params": params, "weight_decay": 0.0 if nd else weight_decay,
         "lr": head_lr if (is_head and head_lr) else lr}
        for (nd, is_head), params in sorted(groups.items())
    ])


def warmup_then(kind: str, total_steps: int, warmup_steps: int):
    """LambdaLR factor: linear warm-up, then constant or linear decay to zero."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor
