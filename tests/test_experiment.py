import json

import yaml

from conftest import run_cli


def test_experiment_grid_runs_resumes_and_tabulates(tiny_model, tmp_path):
    config = {
        "name": "tiny", "output": str(tmp_path / "results"), "runs_dir": str(tmp_path / "runs"),
        "teachers": {"mrpc": {"task": "mrpc", "model": str(tiny_model), "max_train_samples": 32, "epochs": 1,
                              "batch_size": 16, "learning_rate": 1e-3}},
        "prune_defaults": {"student": str(tiny_model), "max_train_samples": 32, "max_steps": 3, "batch_size": 16},
        "jobs": [{"variant": "kap", "teacher": "mrpc", "seeds": [1, 2], "sparsities": [0.5]},
                 {"variant": "no-teacher", "teacher": "mrpc", "sparsities": [0.5], "prune": {"no_teacher": True}}],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli("experiment", str(path))
    assert result.returncode == 0, result.stderr
    records = json.loads((tmp_path / "results" / "results.json").read_text())
    assert sorted((r["variant"], r["seed"]) for r in records) == [("kap", 1), ("kap", 2), ("no-teacher", 42),
                                                                 ("teacher", 42)]
    for r in records:
        assert {"task", "variant", "sparsity", "seed", "metric", "score", "accuracy", "f1", "steps"} <= set(r)
        assert r["task"] == "mrpc" and r["score"] == r["f1"]
    table = (tmp_path / "results" / "table.md").read_text()
    assert "| mrpc | kap | 0.5 | 3 | 2 |" in table
    assert (tmp_path / "results" / "trajectories.png").stat().st_size > 1000
    # a second run finds every job done and trains nothing
    stamp = (tmp_path / "runs" / "kap-mrpc-s0.5-seed1" / "metrics.json").stat().st_mtime_ns
    again = run_cli("experiment", str(path), "--dry-run")
    assert again.returncode == 0 and again.stdout.count("done") == 3
    assert run_cli("experiment", str(path)).returncode == 0
    assert (tmp_path / "runs" / "kap-mrpc-s0.5-seed1" / "metrics.json").stat().st_mtime_ns == stamp
