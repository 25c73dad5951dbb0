import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from sparsebert.pruning import build_pruner, find_targets
from sparsebert.sparse.engine import SparseLinear, sparsify
from sparsebert.sparse.format import export_model, load_exported
from sparsebert.sparse.kernels import csr_linear, dense_to_csr
from sparsebert.models import load_tokenizer

from conftest import run_cli


@pytest.mark.parametrize("tokens,in_f,out_f", [(1, 16, 8), (37, 64, 96), (200, 96, 40), (130, 384, 1536)])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.95, 0.99, 1.0])
def test_kernel_matches_dense_product(tokens, in_f, out_f, sparsity):
    rng = np.random.default_rng(tokens + out_f)
    weight = rng.standard_normal((out_f, in_f)).astype(np.float32)
    weight[rng.random(weight.shape) < sparsity] = 0
    weight[: out_f // 4] = 0  # empty rows
    x = rng.standard_normal((tokens, in_f)).astype(np.float32)
    bias = rng.standard_normal(out_f).astype(np.float32)
    y = csr_linear(x, *dense_to_csr(weight), bias)
    np.testing.assert_allclose(y, x @ weight.T + bias, atol=1e-4, rtol=1e-4)


def pruned_tiny(tiny_model, sparsity=0.9):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    with torch.no_grad():  # a random tiny model has near-zero logits; make them matter
        for m in find_targets(model).values():
            m.weight.mul_(20)
    build_pruner(find_targets(model), sparsity, 0, 0, 1).step(0)
    return model


def test_engine_logits_match_dense(tiny_model):
    dense = pruned_tiny(tiny_model)
    sparse = pruned_tiny(tiny_model)
    assert sparsify(sparse) == 12
    assert all(isinstance(m, SparseLinear) for m in find_targets_modules(sparse))
    ids = torch.randint(1000, 30522, (3, 17), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    with torch.no_grad():
        a, b = dense(input_ids=ids, attention_mask=mask).logits, sparse(input_ids=ids, attention_mask=mask).logits
    assert a.abs().max() > 1e-3
    assert torch.allclose(a, b, atol=1e-4)


def find_targets_modules(model):
    return [m for n, m in model.named_modules() if n.endswith(("query", "key", "value", "dense"))
            and "encoder.layer" in n]


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_export_round_trip(tiny_model, tmp_path, dtype):
    model = pruned_tiny(tiny_model)
    report = export_model(model, load_tokenizer(str(tiny_model)), tmp_path / dtype, dtype)
    restored = load_exported(tmp_path / dtype)
    for name, tensor in model.state_dict().items():
        if dtype == "fp32":
            assert torch.equal(restored.state_dict()[name], tensor), name
        else:
            assert torch.allclose(restored.state_dict()[name], tensor, rtol=1e-3, atol=1e-4), name
            assert ((restored.state_dict()[name] == 0) == (tensor == 0)).all() or name.endswith("bias")
    assert report["pruned_compressed_bytes"] * 4 < report["pruned_dense_bytes"]
    assert report["pruned_dense_bytes"] == sum(m.weight.numel() * 4 for m in find_targets(model).values())
    # 90% sparse: 10% of weights kept at 2 B index + 2 or 4 B value, plus row offsets
    assert report["pruned_compression"] > (7 if dtype == "fp16" else 5)


def test_export_bench_predict_on_the_cli(tiny_model, tmp_path):
    model = pruned_tiny(tiny_model)
    model.save_pretrained(tmp_path / "pruned")
    load_tokenizer(str(tiny_model)).save_pretrained(tmp_path / "pruned")
    result = run_cli("export", str(tmp_path / "pruned"), str(tmp_path / "exp"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "exp" / "export_report.json").read_text())
    assert {"pruned_dense_bytes", "pruned_compressed_bytes", "folder_bytes"} <= set(report)

    result = run_cli("bench", "--model", str(tmp_path / "pruned"), "--batch-sizes", "1,2", "--seq-length", "16",
                     "--repeats", "2", "--warmup", "1", "--json", str(tmp_path / "bench.json"))
    assert result.returncode == 0, result.stderr
    records = json.loads((tmp_path / "bench.json").read_text())
    assert [r["batch_size"] for r in records] == [1, 2]
    for r in records:
        assert {"batch_size", "seq_length", "sparsity", "dense_ms", "sparse_ms", "speedup"} <= set(r)
        assert r["seq_length"] == 16 and r["sparsity"] == pytest.approx(0.9, abs=0.01)
        assert r["speedup"] == pytest.approx(r["dense_ms"] / r["sparse_ms"], rel=0.02)
        assert r["max_logit_diff"] < 1e-4

    (tmp_path / "in.jsonl").write_text('{"text_a": "a cat", "text_b": "a dog"}\n\n{"text": "hello"}\n')
    result = run_cli("predict", str(tmp_path / "exp"), "--input", str(tmp_path / "in.jsonl"))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(l) for l in result.stdout.splitlines()]
    assert [l["line"] for l in lines] == [1, 3]
    assert all(abs(sum(l["probabilities"].values()) - 1) < 1e-5 for l in lines)
    (tmp_path / "bad.jsonl").write_text('{"text_a": "ok"}\n{"text_a": \n')
    result = run_cli("predict", str(tmp_path / "exp"), "--input", str(tmp_path / "bad.jsonl"))
    assert result.returncode == 2 and "bad.jsonl:2: not valid JSON" in result.stderr


def test_onnx_export_matches_pytorch(tiny_model, tmp_path):
    model = pruned_tiny(tiny_model)
    model.save_pretrained(tmp_path / "pruned")
    load_tokenizer(str(tiny_model)).save_pretrained(tmp_path / "pruned")
    result = run_cli("export", str(tmp_path / "pruned"), str(tmp_path / "exp"), "--onnx")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "exp" / "export_report.json").read_text())
    assert (tmp_path / "exp" / "model.onnx").is_file()
    assert report["onnx"]["max_abs_diff_vs_pytorch"] < 1e-4
