"""Dense-form ONNX export, checked with onnxruntime against PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import UserError


class _MainOutput(torch.nn.Module):
    """A classifier's logits, or an encoder's last hidden states (which a sentence embedder pools)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.logits if hasattr(out, "logits") else out.last_hidden_state


def output_name(model) -> str:
    return "last_hidden_state" if model.base_model is model else "logits"


def export_onnx(model, tokenizer, path: Path) -> dict:
    try:
        import onnxruntime
    except ImportError:
        raise UserError("--onnx needs onnx and onnxruntime: pip install 'sparsebert[onnx]'") from None
    model = model.eval()
    original = model.config._attn_implementation
    model.set_attn_implementation("eager")  # the TorchScript exporter traces eager attention
    sample = tokenizer(["a short sentence", "a second, somewhat longer sentence to pad against"],
                       padding=True, return_tensors="pt")
    inputs = (sample["input_ids"], sample["attention_mask"], sample["token_type_ids"])
    names, output = ["input_ids", "attention_mask", "token_type_ids"], output_name(model)
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {output: {0: "batch", 1: "sequence"}
                                                              if output == "last_hidden_state" else {0: "batch"}}
    torch.onnx.export(_MainOutput(model).eval(), inputs, str(path), input_names=names, output_names=[output],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    model.set_attn_implementation(original)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    check = tokenizer(["the cat sat on the mat", "dogs bark"], ["a cat was sitting", "loudly, at night"],
                      padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = _MainOutput(model)(check["input_ids"], check["attention_mask"], check["token_type_ids"]).numpy()
    got = session.run([output], {n: check[n].numpy() for n in names})[0]
    return {"file": path.name, "max_abs_diff_vs_pytorch": float(np.abs(got - expected).max()),
            "bytes": path.stat().st_size}
