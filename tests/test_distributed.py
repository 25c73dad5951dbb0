"""torchrun with 2 CPU processes (gloo) against one process with the same global batch."""

import json
import shutil

import torch
from safetensors.torch import load_file

from conftest import make_tiny_model, run_cli

TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")


def test_two_processes_match_one(tmp_path):
    # No dropout: with it, two processes draw other dropout masks than one would (equally valid, not equal).
    student = make_tiny_model(tmp_path / "student", dropout=0.0)
    teacher_src = make_tiny_model(tmp_path / "teacher-init", dropout=0.0, seed=3)
    common = ["--max-train-samples", "64", "--batch-size", "16", "--learning-rate", "1e-3", "--seed", "5"]
    made = run_cli("finetune", "--model", str(teacher_src), "--output", str(tmp_path / "teacher"), "--epochs", "1",
                   *common)
    assert made.returncode == 0, made.stderr
    prune = ["prune", "--teacher", str(tmp_path / "teacher"), "--student", str(student), "--max-steps", "12",
             "--sparsity", "0.8", "--prune-events", "6", "--eval-every", "6", "--save-every", "6", *common]
    one = run_cli(*prune, "--output", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = run_cli(*prune, "--output", str(tmp_path / "two"), launcher=TORCHRUN)
    assert two.returncode == 0, two.stderr

    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m1["final"] == m2["final"] and m1["best"] == m2["best"]
    masks1, masks2 = load_file(str(tmp_path / "one" / "masks.safetensors")), load_file(str(tmp_path / "two" / "masks.safetensors"))
    agree = sum((masks1[k] == masks2[k]).sum().item() for k in masks1) / sum(v.numel() for v in masks1.values())
    assert agree >= 0.999
    w1, w2 = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    for key in w1:
        both = (masks1.get(key, torch.ones(1)) != 0) & (masks2.get(key, torch.ones(1)) != 0)
        assert torch.allclose(w1[key] * both, w2[key] * both, atol=1e-4), key
    # rank 0 alone wrote: one log line per step
    steps = [json.loads(l)["step"] for l in (tmp_path / "two" / "log.jsonl").read_text().splitlines() if '"loss"' in l]
    assert steps == list(range(1, 13))

    # a run checkpointed by two processes, resumed by one: as if it had crashed after step 6
    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "two", crashed)
    for name in ("model.safetensors", "masks.safetensors", "metrics.json", "sparsity.json"):
        (crashed / name).unlink()
    resumed = run_cli(*prune, "--output", str(crashed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    w3 = load_file(str(crashed / "model.safetensors"))
    for key in w2:
        assert torch.allclose(w2[key], w3[key], atol=1e-4), key
    assert json.loads((crashed / "metrics.json").read_text())["final"] == m2["final"]
