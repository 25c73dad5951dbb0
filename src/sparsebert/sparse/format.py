"""The compressed export: pruned matrices in CSR form inside safetensors.

A pruned (out, in) matrix is stored as `<name>.row_offsets` (int32, out+1), `<name>.col_indices`
(uint16 where in <= 65536) and `<name>.values` (fp16 by default, or fp32). At 95% sparsity that is
about 0.2 bytes per original weight instead of 4. Every other tensor is stored as it is. The folder
also holds `config.json`, the tokenizer, `sparse_config.json` (how to read it) and `export_report.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForSequenceClassification

from ..errors import UserError
from ..pruning.targets import find_targets
from .kernels import dense_to_csr

SPARSE_WEIGHTS = "model.sparse.safetensors"
SPARSE_CONFIG = "sparse_config.json"
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


def export_model(model, tokenizer, out: Path, values_dtype: str = "fp16") -> dict:
    targets = {f"{name}.weight" for name in find_targets(model)}
    tensors, matrices = {}, {}
    pruned_dense = pruned_compressed = 0
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        if name not in targets:
            tensors[name] = tensor
            continue
        row_offsets, col_indices, values = dense_to_csr(tensor.float().numpy())
        stored = {f"{name}.row_offsets": torch.from_numpy(row_offsets),
                  # safetensors has no uint16 in torch: the same bits as int16
                  f"{name}.col_indices": torch.from_numpy(col_indices.view(np.int16) if col_indices.dtype == np.uint16
                                                          else col_indices),
                  f"{name}.values": torch.from_numpy(values).to(DTYPES[values_dtype])}
        tensors.update(stored)
        matrices[name] = {"shape": list(tensor.shape), "nnz": int(len(values)),
                          "index_dtype": str(col_indices.dtype)}
        pruned_dense += tensor.numel() * 4
        pruned_compressed += sum(t.numel() * t.element_size() for t in stored.values())
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / SPARSE_WEIGHTS), metadata={"format": "sparsebert-csr"})
    model.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    with open(out / SPARSE_CONFIG, "w") as f:
        json.dump({"format": "csr", "values_dtype": values_dtype, "matrices": matrices}, f, indent=2)
    folder_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    dense_params = sum(p.numel() for p in model.state_dict().values())
    return {
        "values_dtype": values_dtype,
        "pruned_matrices": len(matrices),
        "pruned_dense_bytes": pruned_dense,
        "pruned_compressed_bytes": pruned_compressed,
        "pruned_compression": round(pruned_dense / pruned_compressed, 2),
        "pruned_nonzero": sum(m["nnz"] for m in matrices.values()),
        "dense_model_bytes": dense_params * 4,
        "folder_bytes": folder_bytes,  # before export_report.json itself
    }


def is_exported(folder: Path) -> bool:
    return (Path(folder) / SPARSE_CONFIG).is_file()


def load_exported(folder: Path):
    """The dense-form model (zeros where pruned) of an exported folder."""
    folder = Path(folder)
    with open(folder / SPARSE_CONFIG) as f:
        sparse_config = json.load(f)
    tensors = load_file(str(folder / SPARSE_WEIGHTS))
    for name, info in sparse_config["matrices"].items():
        row_offsets = tensors.pop(f"{name}.row_offsets").numpy()
        cols = tensors.pop(f"{name}.col_indices").numpy()
        cols = cols.view(np.uint16) if info["index_dtype"] == "uint16" else cols
        values = tensors.pop(f"{name}.values").float()
        dense = torch.zeros(info["shape"], dtype=torch.float32)
        rows = np.repeat(np.arange(info["shape"][0]), np.diff(row_offsets))
        dense[torch.from_numpy(rows), torch.from_numpy(cols.astype(np.int64))] = values
        tensors[name] = dense
    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_config(config)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise UserError(f"{folder}: the exported weights do not match config.json "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()
