"""The jobs as a user runs them, on a tiny random BERT and slices of the bundled data."""

import dataclasses
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

import sparsebert
import sparsebert.cli
from sparsebert import checkpoint

from conftest import ROOT, make_tiny_model, run_cli


def assert_clean_error(result, text):
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], result.stderr


def test_finetune_writes_model_config_log_metrics(tiny_teacher):
    files = {p.name for p in tiny_teacher.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "config.yaml", "log.jsonl", "metrics.json"} <= files
    metrics = json.loads((tiny_teacher / "metrics.json").read_text())
    assert set(metrics) >= {"f1", "accuracy", "steps", "final", "best", "best_step"}
    log = [json.loads(line) for line in (tiny_teacher / "log.jsonl").read_text().splitlines()]
    assert any("eval" in r for r in log) and all("loss" in r for r in log if "eval" not in r)
    # the run is reported by the model it ends with: its last evaluation, which the saved model reproduces
    last = [r["eval"] for r in log if "eval" in r][-1]
    assert {k: metrics[k] for k in last} == last == metrics["final"]
    saved = sparsebert.evaluate(tiny_teacher, task="mrpc")
    assert (saved["f1"], saved["accuracy"]) == (last["f1"], last["accuracy"])


def test_non_empty_output_is_refused_and_left_alone(tiny_model, tiny_teacher):
    before = {p.name: p.stat().st_mtime_ns for p in tiny_teacher.iterdir()}
    result = run_cli("finetune", "--model", str(tiny_model), "--output", str(tiny_teacher), "--max-train-samples", "8")
    assert_clean_error(result, "not empty")
    assert {p.name: p.stat().st_mtime_ns for p in tiny_teacher.iterdir()} == before


def test_overwritten_run_starts_a_new_log_and_leaves_no_old_checkpoint(tiny_model, tmp_path):
    out = tmp_path / "reused"
    stale = out / "checkpoint-3"
    stale.mkdir(parents=True)
    (stale / "trainer_state.pt").write_bytes(b"an older run's")
    (out / "log.jsonl").write_text('{"step": 1, "loss": 9.0}\n')
    result = run_cli("finetune", "--model", str(tiny_model), "--output", str(out), "--overwrite",
                     "--max-train-samples", "32", "--epochs", "1", "--batch-size", "16", "--save-every", "1")
    assert result.returncode == 0, result.stderr
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()
             if '"loss"' in line]
    assert steps == [1, 2]
    assert not stale.exists() and [p.name for p in checkpoint.complete_checkpoints(out)] == ["checkpoint-1"]


def test_finetune_trains_each_task_for_its_own_epochs_unless_told(tiny_model, tmp_path):
    grammar = ROOT / "examples" / "grammar"
    runs = {"rte": ["--task", "rte"], "rte-2": ["--task", "rte", "--epochs", "2"],
            "own": ["--train-file", grammar / "train.csv", "--validation-file", grammar / "dev.csv",
                    "--text-columns", "sentence", "--label-column", "verdict"]}
    steps = {}
    for name, args in runs.items():
        result = run_cli("finetune", *args, "--model", tiny_model, "--output", tmp_path / name,
                         "--max-train-samples", "16", "--batch-size", "16", "--eval-every", "100")
        assert result.returncode == 0, result.stderr
        steps[name] = json.loads((tmp_path / name / "metrics.json").read_text())["steps"]
        assert yaml.safe_load((tmp_path / name / "config.yaml").read_text())["epochs"] == steps[name]  # re-runs it
    assert steps == {"rte": 5, "rte-2": 2, "own": 3}  # one batch an epoch; RTE's teachers train 5 (results/teachers)


def test_same_seed_same_metrics(tiny_model, tiny_teacher, tmp_path):
    again = run_cli("finetune", "--model", str(tiny_model), "--output", str(tmp_path / "again"),
                    "--max-train-samples", "64", "--epochs", "1", "--batch-size", "16", "--learning-rate", "1e-3")
    assert again.returncode == 0, again.stderr
    first = json.loads((tiny_teacher / "metrics.json").read_text())
    second = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert first["f1"] == second["f1"] and first["accuracy"] == second["accuracy"]
    # the whole model, the freshly drawn task head included
    a, b = load_file(str(tiny_teacher / "model.safetensors")), load_file(str(tmp_path / "again" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_prune_end_to_end_on_a_tiny_model(tiny_model, tiny_teacher, tmp_path):
    out = tmp_path / "pruned"
    result = run_cli("prune", "--teacher", str(tiny_teacher), "--student", str(tiny_model), "--output", str(out),
                     "--max-train-samples", "48", "--epochs", "2", "--batch-size", "16", "--sparsity", "0.9",
                     "--prune-events", "5", "--learning-rate", "1e-3")
    assert result.returncode == 0, result.stderr
    sparsity = json.loads((out / "sparsity.json").read_text())
    assert all(abs(s - 0.9) < 0.002 for s in sparsity["per_matrix"].values())
    assert len(sparsity["per_matrix"]) == 12 and set(sparsity) >= {"targets", "encoder", "model"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"final", "best", "teacher"} and "f1" in metrics["final"]
    # metrics.json, by which a grid counts a job as done, comes after everything else the run leaves
    written = {f.name: f.stat().st_mtime_ns for f in out.iterdir() if f.is_file() and f.name != "metrics.json"}
    assert {"masks.safetensors", "sparsity.json", "README.md", "model.safetensors"} <= set(written)
    assert (out / "metrics.json").stat().st_mtime_ns >= max(written.values())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert {"attention", "hidden", "prediction", "sparsity", "lr"} <= set(steps[-1])
    # the saved model opens with plain transformers; its removed weights are zeros, matching the masks
    model = AutoModelForSequenceClassification.from_pretrained(out)
    masks = load_file(str(out / "masks.safetensors"))
    state = model.state_dict()
    for name, mask in masks.items():
        assert (state[name][mask == 0] == 0).all()
        assert (mask == 0).float().mean().item() == pytest.approx(0.9, abs=0.002)
    evaluation = run_cli("evaluate", str(out), "--task", "mrpc")
    assert evaluation.returncode == 0 and "sparsity=0.9" in evaluation.stdout


@pytest.mark.parametrize("flags,message", [
    (["--sparsity", "1.0"], "--sparsity 1.0"),
    (["--sparsity", "-0.1"], "--sparsity -0.1"),
    (["--prune-start", "0.8", "--prune-end", "0.5"], "start <= end"),
    (["--loss-weights", "1,2"], "--loss-weights"),
    (["--no-teacher"], "not both"),
])
def test_prune_bad_flags(tiny_model, tiny_teacher, tmp_path, flags, message):
    out = tmp_path / "x"
    result = run_cli("prune", "--teacher", str(tiny_teacher), "--student", str(tiny_model), "--output", str(out), *flags)
    assert_clean_error(result, message)
    assert not out.exists()


def test_a_pattern_the_matrices_cannot_be_cut_into_is_refused_before_anything_is_written(tmp_path):
    """1x4 blocks need every pruned matrix's inputs in fours; a hidden size of 30 has not, and the run stops at
    once rather than pruning some other way."""
    odd = make_tiny_model(tmp_path / "odd", hidden=30, heads=6)
    out = tmp_path / "x"
    result = run_cli("prune", "--task", "mrpc", "--student", str(odd), "--no-teacher", "--pattern", "1x4",
                     "--max-steps", "2", "--output", str(out))
    assert_clean_error(result, "--pattern 1x4: a matrix with 30 inputs cannot be cut into blocks of 4; use "
                               "--pattern unstructured")
    assert not out.exists()


def test_prune_refuses_incompatible_teachers_before_training(tiny_teacher, tmp_path):
    deep3 = make_tiny_model(tmp_path / "deep3", layers=3, num_labels=2)
    result = run_cli("prune", "--task", "mrpc", "--teacher", str(deep3), "--student", str(tiny_teacher), "--output",
                     str(tmp_path / "o"))
    assert_clean_error(result, "not a multiple")
    result = run_cli("prune", "--task", "stsb", "--teacher", str(tiny_teacher), "--output", str(tmp_path / "o"))
    assert_clean_error(result, "has 1")
    other_vocab = tmp_path / "vocab"
    make_tiny_model(other_vocab, num_labels=2)
    (other_vocab / "tokenizer.json").unlink()
    (other_vocab / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    result = run_cli("prune", "--task", "mrpc", "--teacher", str(other_vocab), "--student", str(tiny_teacher),
                     "--output", str(tmp_path / "o"))
    assert_clean_error(result, "tokenizers differ")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,message", [
    (["evaluate", "/nonexistent/model"], "model folder not found"),
    (["finetune", "--task", "nope", "--output", "o"], "unknown task 'nope'"),
    (["finetune", "--data-dir", "/nonexistent", "--output", "o"], "data folder not found"),
    (["finetune", "--batch-size", "0", "--output", "o"], "--batch-size must be at least 1"),
    (["run", "--preset", "nope"], "--preset nope"),
    (["run", "--resume"], "--resume needs --output"),
    (["run", "--resume", "--output", "nothing"], "config.yaml: not found"),
    (["finetune", "--max-train-samples", "-5", "--output", "o"], "--max-train-samples must be 0"),
    (["finetune", "--max-steps", "-1", "--output", "o"], "--max-steps must be 0 (no limit) or more"),
    (["finetune", "--max-train-samples", "-1", "--output", "o"], "--max-train-samples must be 0 (no limit) or more"),
    (["finetune", "--max-seq-length", "1", "--output", "o"], "--max-seq-length 1: give 8 to 512"),
    (["evaluate", "embedded", "--batch-size", "0"], "--batch-size must be at least 1"),
])
def test_clear_one_line_errors(args, message, tmp_path):
    assert_clean_error(run_cli(*args, cwd=tmp_path), message)
    assert not (tmp_path / "o").exists()


def test_a_length_beyond_the_models_positions_is_refused_before_anything_is_written(tiny_model, tiny_teacher,
                                                                                   tmp_path):
    # the tiny model has 128 position embeddings
    result = run_cli("finetune", "--model", str(tiny_model), "--max-seq-length", "300", "--output", str(tmp_path / "o"))
    assert_clean_error(result, "position embeddings for 128 tokens")
    assert not (tmp_path / "o").exists()
    assert_clean_error(run_cli("evaluate", str(tiny_teacher), "--max-seq-length", "300"), "give at most 128")
    (tmp_path / "in.tsv").write_text("a sentence\n")
    assert_clean_error(run_cli("predict", str(tiny_teacher), "--input", str(tmp_path / "in.tsv"), "--batch-size", "0"),
                       "--batch-size must be at least 1")


def test_predict_reads_a_json_lines_file_whatever_its_name(tiny_teacher, tmp_path):
    (tmp_path / "in.tsv").write_text("a cat sat\ton the mat\nhello\tworld\n")
    expected = run_cli("predict", str(tiny_teacher), "--input", str(tmp_path / "in.tsv"))
    assert expected.returncode == 0 and len(expected.stdout.splitlines()) == 2
    for name in ("in.json", "in.txt"):
        (tmp_path / name).write_text('{"text_a": "a cat sat", "text_b": "on the mat"}\n{"sentence1": "hello", '
                                     '"sentence2": "world"}\n')
        result = run_cli("predict", str(tiny_teacher), "--input", str(tmp_path / name))
        assert result.stdout == expected.stdout, name  # the texts classified, not the JSON read as text


def test_a_yaml_file_that_does_not_parse_or_has_the_wrong_shape_is_one_line(tmp_path):
    (tmp_path / "preset.yaml").write_text("teacher: {epochs: 1\nprune: {}\n")
    assert_clean_error(run_cli("run", "--preset", "preset.yaml", cwd=tmp_path), "preset.yaml, line 2: not valid YAML")
    (tmp_path / "preset.yaml").write_text("- teacher\n")
    assert_clean_error(run_cli("run", "--preset", "preset.yaml", cwd=tmp_path),
                       "preset.yaml: holds a YAML list, but a preset is a mapping of settings")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("task: [mrpc\n")
    assert_clean_error(run_cli("prune", "--resume", "--output", "run", cwd=tmp_path), "config.yaml, line 2: not valid YAML")
    assert (tmp_path / "run" / "config.yaml").read_text() == "task: [mrpc\n", "the user's file is untouched"


def test_bad_row_in_user_data_names_file_and_line(tiny_model, tmp_path):
    data = tmp_path / "rte"
    data.mkdir()
    (data / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\n")
    (data / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    result = run_cli("finetune", "--task", "rte", "--data-dir", str(data), "--model", str(tiny_model),
                     "--output", str(tmp_path / "o"))
    assert_clean_error(result, f"{data / 'train.tsv'}:3: 3 columns where RTE has 4")


def test_run_writes_a_report(tiny_model, tiny_teacher, tmp_path):
    preset = tmp_path / "tiny.yaml"
    preset.write_text("teacher: {max_train_samples: 32, epochs: 1, batch_size: 16, learning_rate: 1.0e-3}\n"
                      "prune: {max_train_samples: 32, max_steps: 4, batch_size: 16, save_every: 0}\n")
    result = run_cli("run", "--task", "rte", "--preset", str(preset), "--model", str(tiny_model), "--sparsity", "0.8",
                     "--output", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert {"teacher_score", "sparse_score", "retention", "sparsity", "wall_seconds"} <= set(report)
    # the scores are those of the models the run hands over, as evaluate measures them afresh (RTE: accuracy)
    teacher, student = (sparsebert.evaluate(tmp_path / "run" / name)["accuracy"] for name in ("teacher", "student"))
    assert (report["metric"], report["teacher_score"], report["sparse_score"]) == ("accuracy", teacher, student)
    assert report["retention"] == pytest.approx(student / teacher)
    assert report["sparsity"] == pytest.approx(0.8, abs=0.002)
    assert "retention" in result.stdout
    assert (tmp_path / "run" / "config.yaml").is_file() and (tmp_path / "run" / "student" / "masks.safetensors").is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text("prune: {no_such_setting: 1}\n")
    assert_clean_error(run_cli("run", "--preset", str(bad), "--output", str(tmp_path / "r2")), "no_such_setting")
    before = {p.name: p.stat().st_mtime_ns for p in tiny_teacher.iterdir()}
    assert_clean_error(run_cli("run", "--resume", "--output", str(tiny_teacher)), "not the config of a `sparsebert run`")
    assert {p.name: p.stat().st_mtime_ns for p in tiny_teacher.iterdir()} == before


def test_small_dense_student_distils_through_a_projection(tiny_model, tiny_teacher, tmp_path):
    out = tmp_path / "small"
    result = run_cli("prune", "--teacher", str(tiny_teacher), "--student", str(tiny_model), "--output", str(out),
                     "--max-train-samples", "32", "--max-steps", "3", "--batch-size", "16", "--sparsity", "0",
                     "--student-layers", "1", "--student-hidden", "16", "--save-every", "0")
    assert result.returncode == 0, result.stderr
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (1, 16)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(r["hidden"] > 0 and r["attention"] > 0 for r in log if "loss" in r)
    assert json.loads((out / "sparsity.json").read_text())["targets"]["sparsity"] == 0


@pytest.mark.parametrize("name", ["quick", "long", "paper"])
def test_every_bundled_preset_is_settings_the_jobs_take(name):
    from sparsebert.config import FinetuneConfig, PruneConfig, build
    from sparsebert.jobs.run import load_preset

    preset = load_preset(name)
    teacher = build(FinetuneConfig, {**preset["teacher"], "output": "t"}, name, "teacher")
    student = build(PruneConfig, {**preset["prune"], "output": "s", "teacher": "t"}, name, "prune")
    assert all(getattr(teacher, k) == v for k, v in preset["teacher"].items())
    assert all(getattr(student, k) == v for k, v in preset["prune"].items())


def test_the_config_a_run_writes_runs_it_again(tiny_model, tiny_teacher, tmp_path):
    import yaml

    config = yaml.safe_load((tiny_teacher / "config.yaml").read_text())
    assert not {"debug", "resume", "overwrite", "trust_pickle", "config"} & set(config)  # settings only
    again = run_cli("finetune", "--config", str(tiny_teacher / "config.yaml"), "--output", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    assert (json.loads((tmp_path / "again" / "metrics.json").read_text())["accuracy"]
            == json.loads((tiny_teacher / "metrics.json").read_text())["accuracy"])
    # a flag beside the file wins; the file's other settings stay
    (tmp_path / "short.yaml").write_text(f"model: {tiny_model}\nmax_train_samples: 32\nepochs: 1\nbatch_size: 16\n"
                                         f"output: {tmp_path / 'short'}\n")
    short = run_cli("finetune", "--config", str(tmp_path / "short.yaml"), "--max-steps", "1")
    assert short.returncode == 0, short.stderr
    written = yaml.safe_load((tmp_path / "short" / "config.yaml").read_text())
    assert (written["max_steps"], written["max_train_samples"], written["batch_size"]) == (1, 32, 16)
    (tmp_path / "typo.yaml").write_text("max_step: 3\n")
    assert_clean_error(run_cli("finetune", "--config", str(tmp_path / "typo.yaml"), "--output", str(tmp_path / "t")),
                       "unknown setting 'max_step' for sparsebert finetune")
    assert_clean_error(run_cli("prune", "--config", str(tiny_teacher / "config.yaml"), "--output", str(tmp_path / "t")),
                       "the config of a `sparsebert finetune`")
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("job", sorted(sparsebert.cli.JOBS))
def test_every_job_answers_help_with_its_flags_and_defaults(job, capsys, monkeypatch):
    """A help text is also a format string (argparse expands %(default)s in it): a bare per-cent sign in one
    setting's help would crash `--help` of that job."""
    monkeypatch.setenv("COLUMNS", "1000")  # one line a flag
    with pytest.raises(SystemExit) as stop:
        sparsebert.cli.main([job, "--help"])
    assert stop.value.code == 0
    shown = capsys.readouterr().out
    config = sparsebert.config.CONFIGS[job]
    flags = [f.name.replace("_", "-") for f in dataclasses.fields(config) if not f.metadata.get("positional")]
    assert all(f"--{flag}" in shown for flag in flags), shown
    if job == "prune-embedder":  # the recipe results/embedder measured, as a user reads it
        assert all(f"(default: {value})" in shown for value in ("0.001", "3200", "4.0", "0.9", "cosine")), shown
