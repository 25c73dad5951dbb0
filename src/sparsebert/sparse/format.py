"""The compressed export: pruned matrices in CSR form and compressed embeddings, inside safetensors.

A pruned (out, in) matrix is stored as `<name>.row_offsets` (int32, out+1), `<name>.col_indices` (uint16
where in <= 65536, stored as int16 bits) and `<name>.values`: int8 with `<name>.scales` (fp32, one per
row), fp16 or fp32. At 95% sparsity with int8 values that is about 0.15 bytes per original weight instead
of 4. A model pruned in 1x4 blocks is stored in blocks (`"block": 4` in sparse_config.json): the indices
are block columns (input / 4) and each block holds 4 int8 values.

The embedding tables (the word embeddings are half of MiniLM's weights) are stored in int8 with one scale per
row (`<name>.scales`) or in fp16; the other matrices (pooler, classifier) in fp16 unless the values are fp32;
every other tensor (biases, LayerNorms) as it is. The folder also holds `config.json`, the tokenizer,
`sparse_config.json` (how to read it) and `export_report.json`.

`sparsebert.load_sparse(folder)` runs such a folder; `read_export` gives its tensors back.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import UserError
from ..pruning.targets import find_targets
from .kernels import CsrMatrix, quantize_rows, to_matrices

SPARSE_WEIGHTS = "model.sparse.safetensors"
SPARSE_CONFIG = "sparse_config.json"
FLOAT_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
EMBEDDINGS = ("word_embeddings", "position_embeddings", "token_type_embeddings")


def is_embedding_table(name: str) -> bool:
    return name.endswith(".weight") and name.rsplit(".", 2)[-2] in EMBEDDINGS


def _quantized(values: np.ndarray, row_offsets: np.ndarray, dtype: str) -> dict[str, torch.Tensor]:
    if dtype == "int8":
        q, scales = quantize_rows(values, row_offsets)
        return {"values": torch.from_numpy(q), "scales": torch.from_numpy(scales)}
    return {"values": torch.from_numpy(values.astype(np.float32)).to(FLOAT_DTYPES[dtype])}


def _stored_matrix(m: CsrMatrix, dtype: str) -> dict[str, torch.Tensor]:
    """A matrix as safetensors holds it: int8 ones as the engine runs them, fp32 ones in `dtype`."""
    stored = {"row_offsets": torch.from_numpy(m.row_offsets),
              # safetensors has no uint16 in torch: the same bits as int16
              "col_indices": torch.from_numpy(m.col_indices.view(np.int16) if m.col_indices.dtype == np.uint16
                                              else m.col_indices)}
    if m.scales is not None:
        return {**stored, "values": torch.from_numpy(m.values), "scales": torch.from_numpy(m.scales)}
    return {**stored, "values": torch.from_numpy(m.values).to(FLOAT_DTYPES[dtype])}


def named_state(model) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(tensors, names of the pruned weights), named as in a classifier (`bert.encoder...`) also for an encoder
    alone (a BertModel, whose names have no prefix), so that the engine reads both alike."""
    prefix = state_prefix(model)
    state = {prefix + name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    return state, [f"{prefix}{name}.weight" for name in find_targets(model)]


def state_prefix(model) -> str:
    """What an export puts before the model's own tensor names: the classifier's prefix for an encoder alone."""
    return f"{model.base_model_prefix}." if model.base_model is model else ""


def export_model(model, tokenizer, out: Path, values_dtype: str = "int8", embeddings_dtype: str = "int8",
                 roundings: dict | None = None) -> dict:
    """Writes the folder; int8 values go in 1x4 blocks where the model was pruned in them (`prune --pattern 1x4`),
    each matrix rounded by its `roundings` entry where it has one (`sparse.rounding`), else to nearest."""
    state, targets = named_state(model)
    pruned = to_matrices({name: state[name] for name in targets}, "int8" if values_dtype == "int8" else "fp32",
                         roundings)
    tensors, matrices, embeddings = {}, {}, {}
    for name, tensor in state.items():
        if name in pruned:
            m = pruned[name]
            stored = _stored_matrix(m, values_dtype)
            tensors.update({f"{name}.{part}": t for part, t in stored.items()})
            matrices[name] = {"shape": list(tensor.shape), "nnz": m.nnz, "block": m.block,
                              "index_dtype": str(m.col_indices.dtype),
                              "bytes": sum(t.numel() * t.element_size() for t in stored.values())}
        elif is_embedding_table(name) and embeddings_dtype != "fp32":
            rows = tensor.float().numpy()
            offsets = np.arange(0, rows.size + 1, rows.shape[1], dtype=np.int64)
            stored = _quantized(rows.reshape(-1), offsets, embeddings_dtype)
            tensors[name] = stored["values"].reshape(tensor.shape)
            if "scales" in stored:
                tensors[f"{name}.scales"] = stored["scales"]
            embeddings[name] = embeddings_dtype
        elif tensor.dim() == 2 and tensor.is_floating_point() and values_dtype != "fp32":
            tensors[name] = tensor.half()  # the head's matrices (pooler, classifier): half the bytes, no loss seen
        else:
            tensors[name] = tensor
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / SPARSE_WEIGHTS), metadata={"format": "sparsebert-csr"})
    model.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    with open(out / SPARSE_CONFIG, "w") as f:
        json.dump({"format": "csr", "values_dtype": values_dtype, "embeddings_dtype": embeddings_dtype,
                   "matrices": matrices, "embeddings": embeddings}, f, indent=2)
    pruned_dense = sum(state[name].numel() * 4 for name in targets)
    pruned_compressed = sum(m["bytes"] for m in matrices.values())
    return {
        "values_dtype": values_dtype,
        "embeddings_dtype": embeddings_dtype,
        "pattern": "1x4" if any(m.block == 4 for m in pruned.values()) else "unstructured",
        "pruned_matrices": len(matrices),
        "pruned_dense_bytes": pruned_dense,
        "pruned_compressed_bytes": pruned_compressed,
        "pruned_compression": round(pruned_dense / pruned_compressed, 2),
        "pruned_nonzero": sum(int((state[name] != 0).sum()) for name in targets),
        "folder_bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),  # before export_report.json
    }


def is_exported(folder) -> bool:
    return (Path(folder) / SPARSE_CONFIG).is_file()


def read_export(folder) -> tuple[dict[str, torch.Tensor], dict[str, CsrMatrix]]:
    """(dense tensors in fp32, pruned matrices by weight name) of an exported folder. A matrix's bias stays
    among the dense tensors."""
    folder = Path(folder)
    try:
        sparse_config = json.loads((folder / SPARSE_CONFIG).read_text())
        tensors = load_file(str(folder / SPARSE_WEIGHTS))
    except (OSError, json.JSONDecodeError, SafetensorError) as e:
        raise UserError(f"{folder}: cannot read the export ({type(e).__name__}: {str(e).splitlines()[0]}); "
                        "export the model again (sparsebert export)") from None
    matrices = {}
    if not (isinstance(sparse_config, dict) and isinstance(sparse_config.get("matrices"), dict)
            and isinstance(sparse_config.get("embeddings", {}), dict)
            and all(isinstance(info, dict) and isinstance(info.get("shape"), list) and len(info["shape"]) == 2
                    and all(isinstance(n, int) for n in info["shape"]) for info in sparse_config["matrices"].values())):
        raise UserError(f"{folder}: {SPARSE_CONFIG} is not as sparsebert export writes it; export the model again "
                        "(sparsebert export)")
    try:
        for name, info in sparse_config["matrices"].items():
            parts = {part: tensors.pop(f"{name}.{part}", None) for part in ("row_offsets", "col_indices", "values",
                                                                             "scales")}
            problem = stored_problem(parts, info, sparse_config.get("values_dtype"))
            if not problem:  # the arrays as the matrix will hold them, checked before it is built from them
                arrays = {**as_read(parts, info), "in_features": info["shape"][1], "block": info.get("block", 1)}
                problem = matrix_problem(SimpleNamespace(**arrays), tuple(info["shape"]))
            if problem:
                raise UserError(f"{folder}: the stored matrix {name} {problem}: the kernels would read out of "
                                "bounds or saturate; export the model again (sparsebert export)")
            matrices[name] = CsrMatrix(**arrays, bias=None)
        for name in sparse_config.get("embeddings", {}):
            table = tensors[name].float()
            scales = tensors.pop(f"{name}.scales", None)
            if scales is not None and (scales.dtype != torch.float32 or tuple(scales.shape) != table.shape[:1]):
                raise UserError(f"{folder}: the scales of {name} are not one fp32 number per row; export the model "
                                "again (sparsebert export)")
            tensors[name] = table if scales is None else table * scales.view(-1, 1)
    except (KeyError, TypeError, IndexError) as e:
        raise UserError(f"{folder}: {SPARSE_WEIGHTS} does not hold what {SPARSE_CONFIG} names ({type(e).__name__}: "
                        f"{e}); export the model again (sparsebert export)") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, matrices


def stored_problem(parts: dict, info: dict, values_dtype: str | None) -> str | None:
    """What makes a stored matrix's arrays other than export_model writes them (the kernels read their bytes as
    int32 offsets, uint16 indices, int8 values with fp32 scales, or fp32 values), or None."""
    missing = [part for part in ("row_offsets", "col_indices", "values") if parts[part] is None]
    if missing:
        return f"lacks its {missing[0]}"
    index = {"uint16": torch.int16, "int32": torch.int32}.get(info.get("index_dtype"))
    if parts["row_offsets"].dtype != torch.int32 or parts["col_indices"].dtype != index:
        return "has row offsets or column indices of another type than int32 and the index_dtype it names"
    int8 = parts["scales"] is not None
    if int8 != (values_dtype == "int8" or info.get("block", 1) == 4):
        return "has int8 values without their scales" if values_dtype == "int8" else "has scales its values lack"
    if int8 and (parts["values"].dtype != torch.int8 or parts["scales"].dtype != torch.float32):
        return "has int8 values or scales of another type (int8 values, fp32 scales)"
    if not int8 and parts["values"].dtype not in (torch.float16, torch.float32):
        return f"has values of type {parts['values'].dtype}, not fp16 or fp32"
    return None


def as_read(parts: dict, info: dict) -> dict:
    """A stored matrix's arrays as CsrMatrix holds them: uint16 indices from their int16 bits, float values in
    fp32."""
    cols = parts["col_indices"].numpy()
    return {"row_offsets": parts["row_offsets"].numpy(),
            "col_indices": cols.view(np.uint16) if info["index_dtype"] == "uint16" else cols,
            "values": parts["values"].numpy() if parts["scales"] is not None else parts["values"].float().numpy(),
            "scales": None if parts["scales"] is None else parts["scales"].numpy()}


def matrix_problem(m: CsrMatrix, shape: tuple[int, int]) -> str | None:
    """What makes a stored matrix unsafe for the kernels, or None: the offsets, indices, values and scales
    must describe a (out, in) matrix the way export_model writes one."""
    out, columns = shape
    offsets, stored = m.row_offsets.astype(np.int64), len(m.col_indices)
    if m.in_features != columns or len(offsets) != out + 1:
        return f"has {len(offsets) - 1} rows and {m.in_features} columns, not the {out} x {columns} it names"
    if offsets[0] != 0 or (np.diff(offsets) < 0).any() or offsets[-1] != stored:
        return "has row offsets that do not run from 0 up to its number of entries"
    if m.block not in (1, 4) or (m.block == 4 and columns % 4):
        return f"has blocks of {m.block} over {columns} columns"
    if stored and int(m.col_indices.max()) >= columns // m.block:
        return f"has a column index {int(m.col_indices.max())} past its {columns // m.block} columns"
    if len(m.values) != stored * m.block:
        return f"has {len(m.values)} values for {stored} entries"
    if m.scales is not None and (len(m.scales) != out or not np.isfinite(m.scales).all()):
        return "has row scales of another length, or not finite"
    if m.block == 4 and stored and int(np.abs(m.values.astype(np.int16)).max()) > 127:
        return "has 1x4 int8 values beyond +-127 (the block kernel's range)"
    if m.scales is None and not np.isfinite(m.values).all():
        return "has values that are not finite"
    return None


def load_exported(folder):
    """The dense-form Hugging Face model (zeros where pruned) of an exported folder."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    tensors, matrices = read_export(folder)
    tensors.update({name: m.dense_weight() for name, m in matrices.items()})
    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_config(config)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise UserError(f"{folder}: the exported weights do not match config.json "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()
