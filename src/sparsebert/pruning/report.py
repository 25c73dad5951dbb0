"""How sparse a model is: per target matrix, over all targets, over the encoder and the whole model."""

from __future__ import annotations

import re

import torch

from .targets import find_targets


def _zeros(t: torch.Tensor) -> int:
    return int((t == 0).sum())


def sparsity_report(model) -> dict:
    targets = find_targets(model)
    per_matrix = {f"{n}.weight": round(_zeros(m.weight) / m.weight.numel(), 6) for n, m in targets.items()}
    t_total = sum(m.weight.numel() for m in targets.values())
    t_zero = sum(_zeros(m.weight) for m in targets.values())
    enc = list(model.base_model.encoder.parameters())  # a classifier's encoder, or an encoder alone
    e_total, e_zero = sum(p.numel() for p in enc), sum(_zeros(p) for p in enc)
    all_params = list(model.parameters())
    m_total, m_zero = sum(p.numel() for p in all_params), sum(_zeros(p) for p in all_params)
    section = lambda total, zero: {"total": total, "nonzero": total - zero, "sparsity": round(zero / total, 6)}
    return {"targets": section(t_total, t_zero), "encoder": section(e_total, e_zero),
            "model": section(m_total, m_zero), "per_matrix": per_matrix,
            "per_layer": per_layer({n: m.weight for n, m in targets.items()})}


def per_layer(tensors: dict[str, torch.Tensor]) -> dict[str, float]:
    """Share of zeros in each encoder layer's tensors, {matrix name: weights or masks}, matrices weighted by
    size: where a global allocation spent the budget."""
    layers: dict[str, list[int]] = {}
    for name, tensor in tensors.items():
        counts = layers.setdefault(layer_of(name), [0, 0])
        counts[0] += _zeros(tensor)
        counts[1] += tensor.numel()
    return {layer: round(zeros / size, 6) for layer, (zeros, size) in layers.items()}


def relative_change(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, float]:
    """How far each encoder layer's matrices moved, ||after - before|| / ||before|| (Frobenius norms over the
    layer's matrices together), {matrix name: weights} of the same names: how far fine-tuning took a teacher
    from the pre-trained weights a student starts from."""
    layers: dict[str, list[float]] = {}
    for name, old in before.items():
        sums = layers.setdefault(layer_of(name), [0.0, 0.0])
        sums[0] += float((after[name].float() - old.float()).pow(2).sum())
        sums[1] += float(old.float().pow(2).sum())
    return {layer: round((moved / size) ** 0.5, 6) for layer, (moved, size) in layers.items()}


def layer_of(name: str) -> str:
    """The encoder layer a matrix name belongs to ("3" for ...encoder.layer.3.output.dense), else "other"."""
    found = re.search(r"\.layer\.(\d+)\.", name)
    return found.group(1) if found else "other"
