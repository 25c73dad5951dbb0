"""How a pruned matrix's non-zeros are rounded to their int8 grid (one scale per row: max |value| / 127).

`kernels.quantize_rows` rounds each value to its nearest step. `compensated` rounds a row's values one at a time
and lets the values not rounded yet absorb each rounding error, weighted by how the matrix's inputs vary together
on calibration data (the update of GPTQ, Frantar et al. 2022, restricted to each row's non-zeros, so pruned
weights stay zero): the row's product with real activations moves less than with rounding to nearest. The grid,
the stored format and the kernels are the same either way; only which grid point each value lands on differs.
Each row costs the cube of its non-zeros (the factors of their Gram matrix).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from numba import njit

from .kernels import quantize_rows

# (values of the non-zeros, row offsets, each value's input column) -> (int8 values, one scale per row)
Rounding = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
LEVELS = 127
DAMPING = 0.01  # of the mean input energy, added to the Gram matrix's diagonal: inputs never seen stay solvable


def compensated(gram: np.ndarray) -> Rounding:
    """Rounding with error compensation, for a matrix whose inputs have this Gram matrix (sum of x x^T over
    calibration tokens, inputs x inputs)."""
    damped = np.asarray(gram, np.float64)
    damped = damped + DAMPING * max(float(np.mean(np.diag(damped))), 1e-12) * np.eye(len(damped))

    def round_rows(values, row_offsets, columns):
        # the grid is nearest's, so a row's largest value is on it exactly (rounded first, it absorbs nothing)
        _, scales = quantize_rows(values, row_offsets)
        q = _round_rows(values.astype(np.float64), row_offsets.astype(np.int64), columns.astype(np.int64),
                        scales.astype(np.float64), damped)
        return q, scales
    return round_rows


@njit(cache=True)
def _round_rows(values, row_offsets, columns, scales, gram):
    q = np.zeros(len(values), np.int8)
    for row in range(len(row_offsets) - 1):
        start, end = row_offsets[row], row_offsets[row + 1]
        if end == start:
            continue
        x = values[start:end].copy()
        order = np.arange(end - start)
        top = np.argmax(np.abs(x))
        order[0], order[top] = top, 0
        x = x[order]
        cols = columns[start:end][order]
        # the inverse Hessian's upper Cholesky factor (row i's tail says how the later values absorb value i's
        # error) is the reversed inverse of the lower factor of the Hessian with its order reversed
        n = len(cols)
        h = np.empty((n, n))
        for i in range(n):
            for j in range(n):
                h[i, j] = gram[cols[n - 1 - i], cols[n - 1 - j]]
        upper = _lower_inverse(np.linalg.cholesky(h))[::-1, ::-1]
        s = scales[row]
        for i in range(len(x)):
            step = min(max(np.rint(x[i] / s), -LEVELS), LEVELS)
            q[start + order[i]] = np.int8(step)
            error = (x[i] - step * s) / upper[i, i]
            x[i + 1:] -= error * upper[i, i + 1:]
    return q


@njit(cache=True)
def _lower_inverse(lower):
    """The inverse of a lower-triangular matrix, by forward substitution a row at a time (the inner loop runs
    along rows, in memory order). With the Cholesky before it, a row of 154 non-zeros takes 0.2 ms, where a
    general inverse and a second Cholesky took 0.5."""
    n = len(lower)
    inverse = np.zeros((n, n))
    for i in range(n):
        inverse[i, i] = 1.0 / lower[i, i]
        for k in range(i):
            c = lower[i, k] * inverse[i, i]
            for j in range(k + 1):
                inverse[i, j] -= c * inverse[k, j]
    return inverse


def input_grams(model, batches, names: list[str]) -> dict[str, np.ndarray]:
    """Each named linear's Gram matrix of its inputs over the real tokens (padding left out) of `batches`."""
    modules = dict(model.named_modules())
    grams = {name: torch.zeros(modules[name].in_features, modules[name].in_features, dtype=torch.float64)
             for name in names}
    real = {}
    last = {"input": None, "product": None}  # query, key and value read one tensor: its product is made once

    def hook(name):
        def add(module, inputs):
            if inputs[0] is not last["input"]:
                # a batch's product in float32 (float64 takes twice as long), the batches summed in float64
                x = inputs[0][real["mask"]].float()
                last["input"], last["product"] = inputs[0], (x.T @ x).double()
            grams[name] += last["product"]
        return add

    handles = [modules[name].register_forward_pre_hook(hook(name)) for name in names]
    try:
        with torch.inference_mode():
            for batch in batches:
                real["mask"] = batch["attention_mask"].bool()
                model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    finally:
        last.clear()
        for h in handles:
            h.remove()
    return {name: g.numpy() for name, g in grams.items()}
