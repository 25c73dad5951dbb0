"""The shape of what is removed: single weights, or blocks of weights removed and kept together.

`unstructured`: any weight on its own (the paper).
`1x4`: blocks of 4 consecutive inputs of one output row. A block scores the sum of its weights' scores and
is kept or removed whole, so the sparse engine can run the matrix with int8 blocks (4 multiply-adds per
instruction pair, see sparse/_spmm.c). The allocation ranks blocks instead of weights; everything else is
unchanged.
"""

from __future__ import annotations

import torch


class Unstructured:
    name = "unstructured"

    def group(self, tensor: torch.Tensor) -> torch.Tensor:
        """Scores (or masks) per unit of removal."""
        return tensor

    def expand(self, mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """A mask per unit back to one per weight."""
        return mask


class Blocks:
    def __init__(self, width: int):
        self.width, self.name = width, f"1x{width}"

    def group(self, tensor: torch.Tensor) -> torch.Tensor:
        rows, cols = tensor.shape
        if cols % self.width:
            raise ValueError(f"a matrix with {cols} inputs cannot be cut into blocks of {self.width}")
        grouped = tensor.reshape(rows, cols // self.width, self.width)
        return grouped.sum(-1) if tensor.dtype != torch.bool else grouped.any(-1)

    def expand(self, mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        return mask.repeat_interleave(self.width, dim=1).reshape(shape)


PATTERNS = {"unstructured": Unstructured(), "1x4": Blocks(4)}
