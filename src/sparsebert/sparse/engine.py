"""The sparse inference engine: a Hugging Face model whose pruned linear layers run a CSR kernel.

Everything else (embeddings, attention products, LayerNorm, GELU) stays PyTorch. Only matrices that
are sparse enough for the kernel to pay off are converted.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import nn

from ..pruning.targets import find_targets
from .kernels import csr_linear, dense_to_csr

MIN_SPARSITY = 0.5  # below this the dense BLAS product is faster than the CSR kernel here


class SparseLinear(nn.Module):
    """y = x @ W.T + b with W in CSR form (fp32 values); inference only."""

    def __init__(self, row_offsets: np.ndarray, col_indices: np.ndarray, values: np.ndarray, bias: np.ndarray,
                 in_features: int):
        super().__init__()
        self.row_offsets, self.col_indices = row_offsets, col_indices
        self.values, self.bias = values.astype(np.float32), bias.astype(np.float32)
        self.in_features, self.out_features = in_features, len(row_offsets) - 1

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "SparseLinear":
        weight = linear.weight.detach().cpu().float().numpy()
        bias = (linear.bias.detach().cpu().float().numpy() if linear.bias is not None
                else np.zeros(weight.shape[0], np.float32))
        return cls(*dense_to_csr(weight), bias, weight.shape[1])

    @property
    def nnz(self) -> int:
        return len(self.values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, self.in_features).float().contiguous().numpy()
        out = csr_linear(flat, self.row_offsets, self.col_indices, self.values, self.bias)
        return torch.from_numpy(out).view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.nnz}"


def match_threads() -> int:
    """The kernel uses as many threads as PyTorch, so dense and sparse timings are comparable."""
    threads = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(threads)
    return threads


def sparsify(model: nn.Module, min_sparsity: float = MIN_SPARSITY) -> int:
    """Replaces the sparse enough target linears of `model` in place; returns how many it replaced."""
    match_threads()
    replaced = 0
    for name, linear in find_targets(model).items():
        if (linear.weight == 0).float().mean().item() < min_sparsity:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, SparseLinear.from_linear(linear))
        replaced += 1
    model.eval()
    return replaced
