"""The numba fall-back of the sparse product (kernels.py uses it where the C kernel is not built): about 3x
slower than the C kernel, the same answers."""

from __future__ import annotations

import math

import numba
import numpy as np
import torch


# The numba fall-back: tokens in tiles of `tile` rows; a tile of x is transposed into a small buffer that
# stays in cache, and every non-zero does one contiguous multiply-add over the tile. Tiles run in parallel.
def _csr_linear(x, row_offsets, col_indices, values, bias, out, tile):
    tokens, in_features = x.shape
    out_features = row_offsets.shape[0] - 1
    n_tiles = (tokens + tile - 1) // tile
    for t in numba.prange(n_tiles):
        start = t * tile
        width = min(tile, tokens - start)
        xt = np.empty((in_features, width), dtype=np.float32)
        for i in range(width):
            for k in range(in_features):
                xt[k, i] = x[start + i, k]
        yt = np.empty((out_features, width), dtype=np.float32)
        acc = np.empty(width, dtype=np.float32)
        for o in range(out_features):
            for i in range(width):
                acc[i] = bias[o]
            for j in range(row_offsets[o], row_offsets[o + 1]):
                v = values[j]
                row = xt[col_indices[j]]
                for i in range(width):
                    acc[i] += v * row[i]
            for i in range(width):
                yt[o, i] = acc[i]
        for i in range(width):
            for o in range(out_features):
                out[start + i, o] = yt[o, i]


_parallel = numba.njit(parallel=True, fastmath=True, cache=True)(_csr_linear)
# Below this many multiply-adds, waking the other threads costs more than it saves.
_serial = numba.njit(fastmath=True, cache=True)(_csr_linear)
PARALLEL_MIN_WORK = 1_000_000


def csr_linear(x: np.ndarray, row_offsets: np.ndarray, col_indices: np.ndarray, values: np.ndarray,
               bias: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The numba kernel. x: (tokens, in) float32 C-contiguous; returns (tokens, out) float32."""
    tokens = x.shape[0]
    if out is None:
        out = np.empty((tokens, row_offsets.shape[0] - 1), dtype=np.float32)
    numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    # Enough tiles to keep every thread busy, at most 64 tokens each so a tile of x stays in cache.
    tile = max(1, min(64, math.ceil(tokens / numba.get_num_threads())))
    kernel = _parallel if tokens * len(values) >= PARALLEL_MIN_WORK else _serial
    kernel(x, row_offsets, col_indices, values, bias, out, tile)
    return out
