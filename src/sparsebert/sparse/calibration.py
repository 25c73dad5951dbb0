"""Whether a matrix runs faster through the sparse kernel than through the dense product, on this machine.

Measured, not assumed: the crossover depends on the processor, the thread count, the shape and the
density (on the 2-core machines of results/bench the kernel loses below about 60% sparsity). Each (processor, threads,
kernel, shape, density to the percent, value type) is timed once, on 256 tokens, and the answer is cached in
memory and in a JSON file: `$SPARSEBERT_CALIBRATION`, by default ~/.cache/sparsebert/calibration.json
(an empty SPARSEBERT_CALIBRATION keeps it in memory only).
"""

from __future__ import annotations

import json
import os
import time
from functools import cache
from pathlib import Path

import torch

from . import kernels
from .kernels import CsrMatrix, kernel_build, spmm

CALIBRATION_TOKENS = 256
CPUINFO = Path("/proc/cpuinfo")
SPARSE_MARGIN = 0.9  # sparse only when clearly faster: a tie within timing noise goes to the dense product
_answers: dict[str, bool] = {}


@cache
def processor() -> str:
    """The model name, with the family, model and stepping where /proc/cpuinfo gives them: a name can be generic
    ("AMD EPYC" names Zen 4 and Zen 5 alike, two processors with different vector units and timings)."""
    try:
        fields: dict[str, str] = {}
        for line in CPUINFO.read_text().splitlines():
            name, _, value = line.partition(":")
            if not line.strip():
                break  # the first processor is enough
            fields.setdefault(name.strip(), value.strip())
        if "model name" in fields:
            ids = [f"{k} {fields[k]}" for k in ("cpu family", "model", "stepping") if k in fields]
            return f"{fields['model name']} ({', '.join(ids)})" if ids else fields["model name"]
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


@cache
def instruction_sets() -> list[str]:
    """The vector extensions that decide which kernels the dense libraries run (MKL, oneDNN, ONNX Runtime
    use AVX-512 and VNNI where present, as do sparsebert's kernels, else AVX2 and FMA)."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in CPUINFO.read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return []
    return [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16")
            if f in flags]


def machine() -> dict:
    """What a timing record says about where it ran."""
    return {"processor": processor(), "instruction_sets": instruction_sets(), "kernel": kernels.KERNEL}


def cache_file() -> Path | None:
    path = os.environ.get("SPARSEBERT_CALIBRATION", str(Path.home() / ".cache" / "sparsebert" / "calibration.json"))
    return Path(path) if path else None


def _read_cache() -> dict[str, bool]:
    path = cache_file()
    try:
        answers = json.loads(path.read_text()) if path and path.is_file() else {}
    except (OSError, ValueError):
        answers = None
    if not isinstance(answers, dict) or not all(isinstance(v, bool) for v in answers.values()):
        return {}  # a damaged cache is measured again
    return answers


def _write_cache(answers: dict[str, bool]) -> None:
    path = cache_file()
    if not path:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**_read_cache(), **answers}, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: the answers stay in memory


def key(m: CsrMatrix) -> str:
    density = round(m.nnz / (m.out_features * m.in_features), 2)
    values = "fp32" if m.scales is None else ("int8 1x4" if m.block == 4 else "int8")
    return (f"{processor()}|{'+'.join(instruction_sets())}|{torch.get_num_threads()} threads|{kernels.KERNEL} "
            f"{kernel_build()}|{m.out_features}x{m.in_features}|{density}|{values}")


def measure(m: CsrMatrix, repeats: int = 7) -> bool:
    """True where the kernel beats the dense product on this matrix: the best of `repeats` calls each,
    taken in turns, so that a burst of load elsewhere slows both alike."""
    x = torch.randn(CALIBRATION_TOKENS, m.in_features, generator=torch.Generator().manual_seed(0))
    out = torch.empty(CALIBRATION_TOKENS, m.out_features)
    weight_t = m.dense_weight().T.contiguous()
    bias = torch.zeros(m.out_features)
    runs = {"dense": lambda: torch.addmm(bias, x, weight_t, out=out), "sparse": lambda: spmm(x, m, out=out)}
    best = dict.fromkeys(runs, float("inf"))
    with torch.inference_mode():
        for fn in runs.values():
            fn()
        for _ in range(repeats):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
    return best["sparse"] < SPARSE_MARGIN * best["dense"]


def runs_faster_sparse(m: CsrMatrix) -> bool:
    if m.nnz == m.out_features * m.in_features and m.block == 1:
        return False  # nothing pruned: the same products as the dense one, plus indices
    k = key(m)
    if k not in _answers:
        _answers.update(_read_cache())
    if k not in _answers:
        _answers[k] = measure(m)
        _write_cache({k: _answers[k]})
    return _answers[k]
