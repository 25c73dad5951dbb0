import json

import yaml

from conftest import run_cli
from sparsebert.tasks import get_task, task_file


def default_train_file():
    return task_file(None, get_task("mrpc"), "train.tsv")


def test_experiment_grid_runs_resumes_and_tabulates(tiny_model, tmp_path):
    config = {
        "name": "tiny", "output": str(tmp_path / "results"), "runs_dir": str(tmp_path / "runs"),
        "teachers": {"mrpc": {"task": "mrpc", "model": str(tiny_model), "max_train_samples": 32, "epochs": 1,
                              "batch_size": 16, "learning_rate": 1e-3}},
        "prune_defaults": {"student": str(tiny_model), "max_train_samples": 32, "max_steps": 3, "batch_size": 16},
        "augmented": {"mrpc-x1": {"task": "mrpc", "model": str(tiny_model), "n_aug": 1}},
        "jobs": [{"variant": "kap", "teacher": "mrpc", "seeds": [1, 2], "sparsities": [0.5]},
                 {"variant": "kap-aug", "teacher": "mrpc", "sparsities": [0.5], "train": "mrpc-x1"},
                 {"variant": "no-teacher", "teacher": "mrpc", "sparsities": [0.5], "prune": {"no_teacher": True}}],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli("experiment", str(path))
    assert result.returncode == 0, result.stderr
    records = json.loads((tmp_path / "results" / "results.json").read_text())
    assert sorted((r["variant"], r["seed"]) for r in records) == [("kap", 1), ("kap", 2), ("kap-aug", 42),
                                                                 ("no-teacher", 42), ("teacher", 42)]
    for r in records:
        assert {"task", "variant", "sparsity", "seed", "metric", "score", "accuracy", "f1", "steps"} <= set(r)
        assert r["task"] == "mrpc" and r["score"] == r["f1"]
    # the augmented set is written once by `sparsebert augment` and is what the job trained on
    augmented = tmp_path / "runs" / "augmented-mrpc-x1.tsv"
    bundled = [line for line in default_train_file().read_text(encoding="utf-8-sig").splitlines() if line]
    assert len(augmented.read_text().splitlines()) == 1 + 2 * (len(bundled) - 1)  # header, rows, one variant each
    job_config = yaml.safe_load((tmp_path / "runs" / "kap-aug-mrpc-s0.5-seed42" / "config.yaml").read_text())
    assert job_config["train_file"] == str(augmented)
    table = (tmp_path / "results" / "table.md").read_text()
    assert "| mrpc | kap | 0.5 | 3 | 2 |" in table
    assert (tmp_path / "results" / "trajectories.png").stat().st_size > 1000
    # a second run finds every job done and trains nothing
    stamp = (tmp_path / "runs" / "kap-mrpc-s0.5-seed1" / "metrics.json").stat().st_mtime_ns
    results_stamp = (tmp_path / "results" / "results.json").stat().st_mtime_ns
    again = run_cli("experiment", str(path), "--dry-run")
    assert again.returncode == 0 and again.stdout.count("done") == 4
    assert (tmp_path / "results" / "results.json").stat().st_mtime_ns == results_stamp, "a dry run wrote results"
    assert run_cli("experiment", str(path)).returncode == 0
    assert (tmp_path / "runs" / "kap-mrpc-s0.5-seed1" / "metrics.json").stat().st_mtime_ns == stamp
