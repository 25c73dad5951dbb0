"""How weights are ranked: a criterion gives every weight a score; the highest survive.

A criterion with state (movement pruning accumulates -w·grad, for example) keeps it in
`state_dict` and updates it in `observe`, which the loop calls after every backward pass.
"""

from __future__ import annotations

import torch


class Criterion:
    def observe(self, targets: dict) -> None:
        """Called after each backward pass, before the optimiser step."""

    def scores(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Magnitude(Criterion):
    """|w|: the paper's criterion."""

    def scores(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        return weight.detach().abs()


CRITERIA = {"magnitude": Magnitude}
