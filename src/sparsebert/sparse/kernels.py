"""Sparse x dense products for the CPU: y = act(x @ W.T + b) with W (out, in) in CSR form.

Two implementations of one operation:
- `_spmm.c`, a C kernel with OpenMP built by the install (see its header for the layout), in two widths
  chosen at run time: AVX-512 with VNNI where the processor has them, else AVX2 with FMA;
- a numba kernel (`numba_kernel.py`), the fall-back everywhere else (about 3x slower).
`KERNEL` names the one in use ("avx512", "avx2" or "numba"); `$SPARSEBERT_KERNEL` may ask for a narrower one
(never a wider one than the processor has). Values are fp32, or int8 with one scale per row; column indices
uint16.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import threading
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch  # first: the C kernel then shares torch's OpenMP runtime (see _spmm.c)

from .numba_kernel import csr_linear


@dataclass
class CsrMatrix:
    """One pruned (out, in) matrix and its bias, in the form the kernels read.

    block 1: CSR of single weights; values fp32, or int8 with `scales` (one per row).
    block 4: CSR of 1x4 blocks (4 consecutive inputs of a row); `col_indices` are block columns (input / 4)
    and `values` 4 int8 per block in [-127, 127], with `scales`.
    """

    row_offsets: np.ndarray  # int32, out + 1
    col_indices: np.ndarray  # uint16
    values: np.ndarray  # float32, or int8 with `scales`
    scales: np.ndarray | None  # float32 per row, for int8 values
    bias: np.ndarray | None  # float32
    in_features: int
    block: int = 1
    _single_fp32: "CsrMatrix | None" = field(default=None, init=False, repr=False, compare=False)
    _c_matrix: "CMatrix | None" = field(default=None, init=False, repr=False, compare=False)

    def __setattr__(self, name, value):
        # The caches are of the arrays as they were (the C view holds their addresses): a new array, such as
        # the bias the engine sets after calibration has run the matrix, drops them.
        object.__setattr__(self, name, value)
        if not name.startswith("_"):
            object.__setattr__(self, "_c_matrix", None)
            object.__setattr__(self, "_single_fp32", None)

    def __post_init__(self):
        # sum of each row's int8 weights: the correction for the activations' zero point (see _spmm.c)
        self.row_sums = None
        if self.block == 4:
            running = np.concatenate([[0], np.cumsum(self.values, dtype=np.int64)])
            self.row_sums = np.diff(running[self.row_offsets * 4]).astype(np.int32)

    @property
    def out_features(self) -> int:
        return len(self.row_offsets) - 1

    @property
    def nnz(self) -> int:
        """Stored weights (a block's zeros included)."""
        return len(self.values)

    @classmethod
    def from_dense(cls, weight: np.ndarray, bias: np.ndarray | None = None, values: str = "fp32",
                   block: int = 1, rounding=None) -> "CsrMatrix":
        """`rounding`: how int8 values land on their grid (`rounding.compensated`), by default each to its
        nearest step (`quantize_rows`)."""
        def to_int8(nonzero, row_offsets, columns):
            return rounding(nonzero, row_offsets, columns) if rounding else quantize_rows(nonzero, row_offsets)

        if weight.shape[1] > 65536:
            raise ValueError(f"a matrix with {weight.shape[1]} inputs: column indices are uint16 (at most 65536)")
        bias = np.zeros(weight.shape[0], np.float32) if bias is None else bias.astype(np.float32)
        weight = weight.astype(np.float32)
        if block == 4:
            if values != "int8" or weight.shape[1] % 4:
                raise ValueError("1x4 blocks take int8 values and inputs in multiples of 4")
            groups = weight.reshape(weight.shape[0], -1, 4)
            row_offsets, col_indices, _ = dense_to_csr(np.abs(groups).sum(-1))
            rows = np.repeat(np.arange(weight.shape[0]), np.diff(row_offsets))
            blocks = groups[rows, col_indices.astype(np.int64)].reshape(-1)
            columns = (col_indices.astype(np.int64)[:, None] * 4 + np.arange(4)).reshape(-1)
            q, scales = to_int8(blocks, row_offsets * 4, columns)
            return cls(row_offsets, col_indices, q, scales, bias, weight.shape[1], block=4)
        row_offsets, col_indices, nonzero = dense_to_csr(weight)
        if values == "int8":
            nonzero, scales = to_int8(nonzero, row_offsets, col_indices)
            return cls(row_offsets, col_indices, nonzero, scales, bias, weight.shape[1])
        return cls(row_offsets, col_indices, nonzero.astype(np.float32), None, bias, weight.shape[1])

    @property
    def c_matrix(self) -> "CMatrix":
        """The C kernel's view of this matrix, built once (its pointers stay valid: the arrays are this object's)."""
        if self._c_matrix is None:
            int8 = self.scales is not None
            self._c_matrix = CMatrix(self.in_features, self.out_features, self.block, _ptr(self.row_offsets),
                                     _ptr(self.col_indices), None if int8 else _ptr(self.values),
                                     _ptr(self.values) if int8 else None, _ptr(self.scales), _ptr(self.row_sums),
                                     _ptr(self.bias))
        return self._c_matrix

    def single_fp32(self) -> "CsrMatrix":
        """The same matrix as fp32 CSR of single weights, the numba fall-back's form; converted once."""
        if self.block == 1 and self.scales is None:
            return self
        if self._single_fp32 is None:
            self._single_fp32 = CsrMatrix.from_dense(self.dense_weight().numpy(), self.bias)
        return self._single_fp32

    def dense_weight(self) -> torch.Tensor:
        """The (out, in) fp32 matrix these values stand for (int8 values times their row's scale)."""
        values = self.values.astype(np.float32)
        per_row = np.diff(self.row_offsets) * self.block
        rows = np.repeat(np.arange(self.out_features), per_row)
        if self.scales is not None:
            values *= self.scales[rows]
        cols = self.col_indices.astype(np.int64)
        if self.block > 1:
            cols = (cols[:, None] * self.block + np.arange(self.block)).reshape(-1)
        dense = np.zeros((self.out_features, self.in_features), np.float32)
        dense[rows, cols] = values
        return torch.from_numpy(dense)


BLOCKED = 0.9  # share of non-zeros in the 1x4 blocks holding any, above which a matrix is stored in blocks


def to_matrices(weights: dict[str, torch.Tensor], values: str, roundings: dict | None = None) -> dict[str, CsrMatrix]:
    """Pruned weights in the engine's form: int8 1x4 blocks where every matrix was pruned in such blocks (and
    int8 is asked for), else CSR of single weights (fp32 or int8 values). `roundings`: each matrix's int8
    rounding by name, where not to nearest."""
    weights = {name: w.detach().float().numpy() for name, w in weights.items()}
    block = 4 if in_blocks(weights, values) else 1
    return {name: CsrMatrix.from_dense(w, None, values, block, (roundings or {}).get(name))
            for name, w in weights.items()}


def in_blocks(weights: dict[str, np.ndarray], values: str) -> bool:
    """Whether these pruned weights run as int8 1x4 blocks: every matrix pruned in such blocks, int8 asked for."""
    return values == "int8" and all(blocked_share(np.asarray(w)) >= BLOCKED for w in weights.values())


def blocked_share(weight: np.ndarray, block: int = 4) -> float:
    """Non-zeros over the weights of the 1 x `block` blocks that hold any: 1.0 for a matrix pruned in such
    blocks, about 1 / block for single weights pruned at high sparsity."""
    if weight.shape[1] % block:
        return 0.0
    groups = (weight != 0).reshape(weight.shape[0], -1, block)
    held = int(groups.any(-1).sum())
    return int(groups.sum()) / (block * held) if held else 0.0


def dense_to_csr(weight: np.ndarray):
    """(row_offsets int32, col_indices uint16 or int32, values) of a dense (out, in) matrix's non-zeros."""
    rows, cols = np.nonzero(weight)
    row_offsets = np.zeros(weight.shape[0] + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=weight.shape[0]), out=row_offsets[1:])
    index_type = np.uint16 if weight.shape[1] <= 65536 else np.int32
    return row_offsets, cols.astype(index_type), weight[rows, cols]


def quantize_rows(values: np.ndarray, row_offsets: np.ndarray, levels: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per row: value ~ scale[row] * q, q in [-levels, levels] (int8 up to 127 levels, else int16),
    scale = max |value| / levels."""
    rows = np.repeat(np.arange(len(row_offsets) - 1), np.diff(row_offsets))
    peak = np.zeros(len(row_offsets) - 1, np.float32)
    np.maximum.at(peak, rows, np.abs(values).astype(np.float32))
    scales = np.where(peak > 0, peak / levels, 1).astype(np.float32)
    q = np.clip(np.rint(values / scales[rows]), -levels, levels).astype(np.int8 if levels <= 127 else np.int16)
    return q, scales


class CMatrix(ctypes.Structure):
    """A matrix as the C kernel's `Matrix` reads it (pointers into the CsrMatrix's arrays)."""
    _fields_ = [("in_f", ctypes.c_int), ("out_f", ctypes.c_int), ("block", ctypes.c_int)] + [
        (name, ctypes.c_void_p) for name in ("offsets", "cols", "f32", "i8", "scales", "row_sums", "bias")]


class CLayer(ctypes.Structure):
    """An encoder layer as the C kernel's `Layer` reads it: its four matrices (copies of their CMatrix views) and
    its two LayerNorms."""
    _fields_ = [(name, CMatrix) for name in ("qkv", "attention_out", "up", "down")] + [
        (name, ctypes.c_void_p) for name in ("attention_norm_weight", "attention_norm_bias", "output_norm_weight",
                                             "output_norm_bias")]


def _load_c_kernel():
    try:
        from . import _spmm
    except ImportError:
        return None
    lib = ctypes.CDLL(_spmm.__file__)
    if not lib.sb_cpu_isa() or os.environ.get("SPARSEBERT_KERNEL") == "numba":
        return None
    return declare(lib)


def declare(lib):
    """The kernel library's functions given their C signatures (undeclared, ctypes would cut pointers to ints):
    the installed build's, or another build of _spmm.c that a benchmark compares it with."""
    p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    lib.sb_use_isa.argtypes = [i]
    matrix = ctypes.POINTER(CMatrix)
    lib.sb_product.argtypes = [i, p, i, matrix, i, matrix, p, i, p]
    lib.sb_product.restype = i
    lib.sb_product_work.argtypes = [i, matrix, matrix]
    lib.sb_product_work.restype = s
    lib.sb_gelu.argtypes = [p, s]
    lib.sb_gelu.restype = None
    lib.sb_add_layernorm.argtypes = [i, i, p, p, p, p, ctypes.c_float, p]
    lib.sb_add_layernorm.restype = None
    lib.sb_attention.argtypes = [i, p, i, i, p, i, ctypes.c_float, i, p, i, p]
    lib.sb_attention.restype = None
    lib.sb_attention_work.argtypes = [i, i]
    lib.sb_attention_work.restype = s
    lib.sb_bf16_dot.argtypes = []
    lib.sb_bf16_dot.restype = i
    layer = ctypes.POINTER(CLayer)
    lib.sb_layer_work.argtypes = [i, layer, i, i]
    lib.sb_layer_work.restype = s
    lib.sb_layer.argtypes = [i, p, layer, i, p, i, ctypes.c_float, i, ctypes.c_float, p, p]
    lib.sb_layer.restype = None
    return lib


ISAS = {"avx2": 1, "avx512": 2}  # the C kernel's widths, as _spmm.c numbers them
_C = _load_c_kernel()
KERNEL = "numba"


def use_kernel(name: str) -> str:
    """Runs the C kernel in the width `name` ("avx512" or "avx2"), or the narrower one the processor has;
    returns the one now in use. Every width computes the same sums in the same order (bit for bit the same
    answers), so this changes speed only; attention in bfloat16 alone sums its products in pairs where AVX-512
    BF16 runs it (`bf16_products`), the same answers to rounding (see `bf16_attention`)."""
    global KERNEL
    if name not in ISAS:
        raise ValueError(f"kernel {name!r}: the C kernel runs {' or '.join(ISAS)}")
    if _C is not None:
        in_use = _C.sb_use_isa(ISAS[name])
        KERNEL = next(k for k, level in ISAS.items() if level == in_use)
    return KERNEL


if _C is not None:
    wanted = os.environ.get("SPARSEBERT_KERNEL") or "avx512"
    if wanted not in ISAS:
        raise ImportError(f"SPARSEBERT_KERNEL={wanted!r}: use avx512, avx2 or numba")
    use_kernel(wanted)


@cache
def kernel_build() -> str:
    """Names the kernel's build (a digest of the compiled library): a rebuilt kernel is timed anew."""
    if _C is None:
        return "numba"
    return hashlib.sha256(Path(_C._name).read_bytes()).hexdigest()[:12]


_workspace = threading.local()  # each calling thread its own scratch: strips of x and of y


def _work(floats: int) -> torch.Tensor:
    buffer = getattr(_workspace, "buffer", None)
    if buffer is None or buffer.numel() < floats:
        buffer = _workspace.buffer = torch.empty(max(floats, 1 << 16), dtype=torch.float32)  # 64-byte aligned
    return buffer


def _ptr(array) -> int | None:
    if array is None:
        return None
    return array.data_ptr() if isinstance(array, torch.Tensor) else array.ctypes.data


def quantize_activations(x: torch.Tensor, levels: int = 127) -> torch.Tensor:
    """x (tokens, in) as the int8 1x4 kernel sees it: per token, 7 bits ([0, 127]) with a zero point (zero kept
    exact), back in fp32. A 1x4 int8 matrix is defined by that arithmetic, so it gives the same answer (within fp32
    rounding) run through the kernel, through the numba fall-back or as a dense product of these activations.
    `levels`: another grid, to compare (255: eight bits)."""
    lo, hi = x.amin(1, keepdim=True).clamp(max=0), x.amax(1, keepdim=True).clamp(min=0)
    scale = (hi - lo) / levels
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    inverse = 1 / scale
    zero = torch.round(-lo * inverse)
    q = torch.round(torch.addcmul(zero, x, inverse)).clamp_(0, levels)
    return (q - zero) * scale


def spmm(x: torch.Tensor, m: CsrMatrix, gelu: bool = False, out: torch.Tensor | None = None) -> torch.Tensor:
    """act(x @ W.T + b) for x (tokens, in) fp32 with unit stride along features; returns (tokens, out)."""
    tokens = x.shape[0]
    if x.stride(-1) != 1:
        x = x.contiguous()
    if out is None:
        out = torch.empty(tokens, m.out_features, dtype=torch.float32)
    if _C is None:
        if m.block == 4:
            x = quantize_activations(x)
        m = m.single_fp32()
        out.copy_(torch.from_numpy(csr_linear(x.contiguous().numpy(), m.row_offsets, m.col_indices, m.values,
                                              np.zeros(m.out_features, np.float32) if m.bias is None else m.bias)))
        return torch.nn.functional.gelu(out, out=out) if gelu else out
    _C.sb_product(tokens, x.data_ptr(), x.stride(0), m.c_matrix, int(gelu), None, out.data_ptr(), out.stride(0),
                  _work(_C.sb_product_work(tokens, m.c_matrix, None)).data_ptr())
    return out


def fused_ffn(x: torch.Tensor, up: CsrMatrix, down: CsrMatrix, out: torch.Tensor) -> torch.Tensor | None:
    """GELU(x @ up.T + b) @ down.T + b, strip by strip (see sb_product); None where the C kernel is not in use or
    the batch has too few tokens to give every thread whole strips (then run the two products apart)."""
    if _C is None:
        return None
    x = x if x.stride(-1) == 1 else x.contiguous()
    work = _work(_C.sb_product_work(x.shape[0], up.c_matrix, down.c_matrix))
    done = _C.sb_product(x.shape[0], x.data_ptr(), x.stride(0), up.c_matrix, 1, down.c_matrix, out.data_ptr(),
                         out.stride(0), work.data_ptr())
    return out if done else None


def add_layernorm(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                  out: torch.Tensor) -> torch.Tensor:
    """LayerNorm(a + b) over the last dimension, in one pass where the C kernel is in use."""
    hidden = a.shape[-1]
    if _C is None or hidden % 8 or not (a.is_contiguous() and b.is_contiguous() and out.is_contiguous()):
        return out.copy_(torch.nn.functional.layer_norm(a + b, (hidden,), weight, bias, eps))
    _C.sb_add_layernorm(a.shape[0], hidden, a.data_ptr(), b.data_ptr(), weight.data_ptr(), bias.data_ptr(), eps,
                        out.data_ptr())
    return out


def packed_attention(qkv: torch.Tensor, starts: torch.Tensor, heads: int, out: torch.Tensor,
                     max_length: int | None = None, bf16: bool = False) -> torch.Tensor | None:
    """Softmax attention of packed sequences (sequence b: rows starts[b]..starts[b+1] of qkv, whose columns
    are Q, K and V, each heads x head_dim); writes (tokens, heads x head_dim) into out. None where the C kernel
    is not in use or head_dim is not a multiple of 8. `max_length`, the longest sequence, where the caller
    knows it (the encoder, once for all its layers): the kernel's scratch is sized by it, so never less.
    `bf16`: attention in bfloat16 as `bf16_attention` defines it."""
    hidden = qkv.shape[1] // 3
    head_dim = hidden // heads
    if _C is None or head_dim % 8 or qkv.stride(1) != 1 or out.stride(1) != 1:
        return None
    if starts.dtype != torch.int32 or not starts.is_contiguous():  # the encoder passes them ready, once per call
        starts = starts.to(torch.int32).contiguous()
    if max_length is None:
        max_length = int((starts[1:] - starts[:-1]).max())
    work = _work(_C.sb_attention_work(max_length, head_dim))
    _C.sb_attention(len(starts) - 1, starts.data_ptr(), heads, head_dim, qkv.data_ptr(), qkv.stride(0),
                    head_dim ** -0.5, int(bf16), out.data_ptr(), out.stride(0), work.data_ptr())
    return out


def c_layer(qkv: CsrMatrix, attention_out: CsrMatrix, up: CsrMatrix, down: CsrMatrix,
            attention_norm: tuple[torch.Tensor, torch.Tensor],
            output_norm: tuple[torch.Tensor, torch.Tensor]) -> CLayer | None:
    """An encoder layer for `encoder_layer`, its matrices with their biases set; None where the C kernel is not in
    use. It points into these arrays and tensors (fp32, contiguous): they must outlive it, unchanged."""
    if _C is None:
        return None
    matrices, norms = (qkv, attention_out, up, down), (*attention_norm, *output_norm)
    layer = CLayer(*(m.c_matrix for m in matrices), *(t.data_ptr() for t in norms))
    # the arrays it points into, held as long as it is (a matrix given a new array later keeps the old one alive)
    layer.arrays = [(m.row_offsets, m.col_indices, m.values, m.scales, m.row_sums, m.bias) for m in matrices], norms
    return layer


def encoder_layer(h: torch.Tensor, layer: CLayer, starts: torch.Tensor, max_length: int, heads: int, bf16: bool,
                  eps: float, out: torch.Tensor) -> torch.Tensor | None:
    """One encoder layer in one C call (erf GELU; packed, right-padded sequences as `packed_attention` takes them,
    `starts` int32): the same kernels in the same order as the engine's calls one by one, so the same answers.
    None where the C kernel is not in use."""
    if _C is None:
        return None
    hidden = h.shape[1]
    work = _work(_C.sb_layer_work(h.shape[0], layer, max_length, heads))
    _C.sb_layer(h.shape[0], h.data_ptr(), layer, len(starts) - 1, starts.data_ptr(), heads,
                (hidden // heads) ** -0.5, int(bf16), eps, out.data_ptr(), work.data_ptr())
    return out


def bf16_products(head_dim: int) -> str:
    """What attention in bfloat16 multiplies on here, for heads of head_dim: "vdpbf16ps" (the C kernel on a
    processor with AVX-512 BF16, head sizes a multiple of 32) or "fp32 products" (of the same rounded values)."""
    return "vdpbf16ps" if _C is not None and _C.sb_bf16_dot() and head_dim % 32 == 0 else "fp32 products"


def bf16_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None):
    """Attention in bfloat16 as the C kernel defines it: Q * scale, K, V and the softmax's exponentials rounded
    to bfloat16 (to nearest, ties to even), their products summed in fp32, the softmax's sum taken before
    rounding. (batch, heads, length, head_dim) tensors, the mask True where a key is attended. Every path gives
    the same to fp32 rounding, except that a score's last bits may move an exponential across a bfloat16
    rounding boundary (that weight then differs by 2^-8 of itself); a query with no key gives 0."""
    def rounded(x):
        return x.to(torch.bfloat16).float()

    scores = rounded(q * q.shape[-1] ** -0.5) @ rounded(k).transpose(-1, -2)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, -torch.inf)
    peak = scores.amax(-1, keepdim=True).clamp_min(torch.finfo(scores.dtype).min)  # a row with no key: all zero
    e = torch.exp(scores - peak)
    return (rounded(e) @ rounded(v)) / e.sum(-1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)


def gelu_(x: torch.Tensor) -> torch.Tensor:
    """BERT's erf GELU in place, the same approximation as the sparse kernel's (so a layer gives the same
    result whichever way it runs)."""
    if _C is None or not x.is_contiguous():
        return x.copy_(torch.nn.functional.gelu(x))
    _C.sb_gelu(x.data_ptr(), x.numel())
    return x
