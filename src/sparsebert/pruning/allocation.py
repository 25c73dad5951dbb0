"""Where the removed weights go: how a sparsity level becomes one mask per matrix.

`uniform` (the paper): every matrix keeps its own k = round(n * (1 - s)) highest-scoring weights.
`global`: one threshold over all target matrices, so matrices whose weights score low lose more.
Weights already removed score -inf and so are never chosen again: pruning is monotone.
"""

from __future__ import annotations

import torch


def _masked_scores(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, scores.float(), torch.tensor(float("-inf"), device=scores.device))


def _keep_top(scores: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        mask[torch.topk(scores.flatten(), k, sorted=False).indices] = True
    return mask.view_as(scores)


def uniform(scores: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], sparsity: float) -> dict:
    return {name: _keep_top(_masked_scores(s, masks[name]), round(s.numel() * (1 - sparsity)))
            for name, s in scores.items()}


def global_(scores: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], sparsity: float) -> dict:
    flat = torch.cat([_masked_scores(s, masks[n]).flatten() for n, s in scores.items()])
    keep = _keep_top(flat, round(flat.numel() * (1 - sparsity)))
    out, offset = {}, 0
    for name, s in scores.items():
        out[name] = keep[offset:offset + s.numel()].view_as(s)
        offset += s.numel()
    return out


ALLOCATIONS = {"uniform": uniform, "global": global_}
