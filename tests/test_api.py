"""The Python API: the jobs as functions of the command line's options."""


import pytest
import torch

import sparsebert


def test_the_python_api_runs_finetune_prune_evaluate_export_and_load_sparse(tiny_model, tmp_path):
    teacher = sparsebert.finetune(model=str(tiny_model), task="mrpc", output=tmp_path / "teacher",
                                  max_train_samples=64, epochs=1, batch_size=16, learning_rate=1e-3)
    # what finetune returns is the saved teacher's score, as evaluate measures it afresh
    scored = sparsebert.evaluate(tmp_path / "teacher")
    assert (teacher["accuracy"], teacher["f1"]) == (scored["accuracy"], scored["f1"])
    student = sparsebert.prune(task="mrpc", teacher=tmp_path / "teacher", student=str(tiny_model),
                               output=tmp_path / "student", max_train_samples=64, max_steps=8, batch_size=16,
                               sparsity=0.75, prune_events=2, cache_teacher=False)
    assert student["sparsity"] == pytest.approx(0.75, abs=1e-3)
    dense = sparsebert.evaluate(tmp_path / "student", task="mrpc")
    sparse = sparsebert.evaluate(tmp_path / "student", task="mrpc", engine="sparse")
    assert (dense["accuracy"], dense["f1"]) == (sparse["accuracy"], sparse["f1"])
    report = sparsebert.export(tmp_path / "student", tmp_path / "exported", values="fp32", embeddings="fp32")
    assert report["max_logit_diff_vs_dense"] < 1e-4
    model = sparsebert.load_sparse(tmp_path / "exported")
    inputs = model.tokenizer(["a short one", "and a longer second sentence"], padding=True, return_tensors="pt")
    # the export on the engine answers as the pruned student does in PyTorch, padded batch and all
    from transformers import AutoModelForSequenceClassification

    dense = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student").eval()
    with torch.inference_mode():
        torch.testing.assert_close(model(**inputs).logits, dense(**inputs).logits, atol=1e-4, rtol=1e-4)


def test_the_python_api_refuses_unknown_options_and_bad_values(tmp_path):
    with pytest.raises(TypeError, match="unexpected keyword argument 'sparsty'"):
        sparsebert.prune(task="mrpc", no_teacher=True, output=tmp_path / "x", sparsty=0.9)
    with pytest.raises(sparsebert.UserError, match="--batch-size: 'many' is not a whole number"):
        sparsebert.finetune(task="mrpc", output=tmp_path / "x", batch_size="many")
    with pytest.raises(sparsebert.UserError, match="--sparsity 1.5"):
        sparsebert.prune(task="mrpc", no_teacher=True, output=tmp_path / "x", sparsity=1.5)
    assert not (tmp_path / "x").exists()


def test_a_config_object_is_the_same_settings_as_keywords(tiny_model, tmp_path):
    from sparsebert import FinetuneConfig

    config = FinetuneConfig(model=str(tiny_model), output=str(tmp_path / "a"), max_train_samples=32, max_steps=3,
                            batch_size=16)
    by_object = sparsebert.finetune(config=config)
    by_keywords = sparsebert.finetune(model=str(tiny_model), output=tmp_path / "b", max_train_samples=32,
                                      max_steps=3, batch_size=16)
    assert by_object["final"] == by_keywords["final"]
    written = (tmp_path / "a" / "config.yaml").read_text().replace(str(tmp_path / "a"), "OUT")
    assert written == (tmp_path / "b" / "config.yaml").read_text().replace(str(tmp_path / "b"), "OUT")


def test_help_answers_without_loading_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom sparsebert.cli import main\ntry:\n    main(['prune', '--help'])\nexcept SystemExit:\n"
            "    pass\nassert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pruning:" in result.stdout and "distillation:" in result.stdout  # flags grouped
    assert "(default: 0.95)" in result.stdout  # defaults shown
