"""CSR sparse x dense kernels for the CPU, compiled with numba.

y = x @ W.T + b with W (out, in) stored as CSR: for each output row, the column index and value of
its non-zeros. Tokens are processed in tiles of `tile` rows: a tile of x is transposed into a small
buffer that stays in cache, and every non-zero then does one contiguous, vectorisable multiply-add
over the tile. Tiles run in parallel on all numba threads.
"""

from __future__ import annotations

import math

import numba
import numpy as np


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
    """x: (tokens, in) float32 C-contiguous; returns (tokens, out) float32."""
    tokens = x.shape[0]
    if out is None:
        out = np.empty((tokens, row_offsets.shape[0] - 1), dtype=np.float32)
    # Enough tiles to keep every thread busy, at most 64 tokens each so a tile of x stays in cache.
    tile = max(1, min(64, math.ceil(tokens / numba.get_num_threads())))
    kernel = _parallel if tokens * len(values) >= PARALLEL_MIN_WORK else _serial
    kernel(x, row_offsets, col_indices, values, bias, out, tile)
    return out


def dense_to_csr(weight: np.ndarray):
    """(row_offsets int32, col_indices uint16 or int32, values) of a dense (out, in) matrix's non-zeros."""
    rows, cols = np.nonzero(weight)
    row_offsets = np.zeros(weight.shape[0] + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=weight.shape[0]), out=row_offsets[1:])
    index_type = np.uint16 if weight.shape[1] <= 65536 else np.int32
    return row_offsets, cols.astype(index_type), weight[rows, cols]
