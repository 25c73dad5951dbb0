import json
import os
import shutil
import statistics
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import sparsebert
from conftest import kill_once_written, run_cli
from sparsebert import checkpoint
from sparsebert.errors import UserError
from sparsebert.research.grid import claim, release
from sparsebert.research.reports import write_comparison
from sparsebert.tasks import get_task, task_file
from sparsebert.training import machine_of


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
        assert r["task"] == "mrpc" and r["metric"] == "f1"
    # a record's score is the dev F1 of the model its job ended with, as `sparsebert evaluate` measures it
    kap = next(r for r in records if r["variant"] == "kap" and r["seed"] == 2)
    scored = sparsebert.evaluate(str(tmp_path / "runs" / kap["job"]), task="mrpc")
    # accuracy too: a tiny model's F1 may be 0 whatever it was, its accuracy on MRPC dev never is
    assert (kap["score"], kap["accuracy"]) == pytest.approx((scored["f1"], scored["accuracy"]))
    # the augmented set is written once by `sparsebert augment` and is what the job trained on
    augmented = tmp_path / "runs" / "augmented-mrpc-x1.tsv"
    bundled = [line for line in default_train_file().read_text(encoding="utf-8-sig").splitlines() if line]
    assert len(augmented.read_text().splitlines()) == 1 + 2 * (len(bundled) - 1)  # header, rows, one variant each
    job_config = yaml.safe_load((tmp_path / "runs" / "kap-aug-mrpc-s0.5-seed42" / "config.yaml").read_text())
    assert job_config["train_file"] == str(augmented)
    table = (tmp_path / "results" / "table.md").read_text()
    assert "| mrpc | kap | 0.5 | 3 | 2 |" in table
    assert (tmp_path / "results" / "trajectories.png").stat().st_size > 1000
    # every pruned model's layers at the target: uniform allocation prunes each matrix to it
    for r in records:
        if r["variant"] != "teacher":
            assert r["layer_sparsity"].keys() == {"0", "1"} and all(abs(s - 0.5) < 0.02 for s in r["layer_sparsity"].values())
    assert "| mrpc | kap | 0.5 | 3 | 1 | 0.5" in (tmp_path / "results" / "layers.md").read_text()
    # how far fine-tuning moved the teacher from the model it started from, per layer
    teacher = next(r for r in records if r["variant"] == "teacher")
    assert teacher["weight_change"].keys() == {"0", "1"} and all(0 < v < 1 for v in teacher["weight_change"].values())
    assert "| mrpc | " in (tmp_path / "results" / "teacher_change.md").read_text()
    # the mean of the evaluations at the target, from the job's log
    log = [json.loads(line) for line in (tmp_path / "runs" / "kap-mrpc-s0.5-seed1" / "log.jsonl").read_text().splitlines()]
    at_target = [r["eval"]["f1"] for r in log if "eval" in r and r["sparsity"] >= 0.5 - 1e-3]
    kap1 = next(r for r in records if r["variant"] == "kap" and r["seed"] == 1)
    assert at_target and abs(kap1["mean_at_target"] - sum(at_target) / len(at_target)) < 1e-12
    # the plots follow accuracy where the task has it, each record saying which metric its evaluations are in
    evaluated = lambda metric: [[r["step"], r.get("sparsity", 0.0), r["eval"][metric]] for r in log if "eval" in r]
    assert kap1["evaluations_metric"] == "accuracy" and kap1["evaluations"] == evaluated("accuracy")
    # `label:` renames the field the jobs are named by (the paper grid's records say `method`); `plot_metric: score`
    # plots the task's score (MRPC's F1) instead
    relabelled = tmp_path / "relabelled.yaml"
    relabelled.write_text(yaml.safe_dump({**config, "label": "method", "output": str(tmp_path / "relabelled"),
                                          "plot_metric": "score"}))
    assert run_cli("experiment", str(relabelled), "--collect").returncode == 0
    renamed = json.loads((tmp_path / "relabelled" / "results.json").read_text())
    scored = next(r for r in renamed if r["method"] == "kap" and r["seed"] == 1)
    assert scored["evaluations_metric"] == "f1" and scored["evaluations"] == evaluated("f1")
    assert sorted(r["method"] for r in renamed) == ["kap", "kap", "kap-aug", "no-teacher", "teacher"]
    assert not any("variant" in r for r in renamed)
    assert (tmp_path / "relabelled" / "table.md").read_text().startswith("| task | method |")
    # `compare:` adds the claims table; a teacher scoring 0 (this tiny one's F1) gives no shares
    compared = tmp_path / "compared.yaml"
    compared.write_text(yaml.safe_dump({**config, "output": str(tmp_path / "compared"), "compare": {
        "rows": {"teacher": 0, "kap": 0.5, "no-teacher": 0.5}, "method": "kap", "baselines": ["no-teacher"],
        "keep": 0.97}}))
    assert run_cli("experiment", str(compared), "--collect").returncode == 0
    assert (tmp_path / "compared" / "comparison.md").read_text().startswith("| variant | sparsity | mrpc (f1) |")
    # a second run finds every job done and trains nothing
    stamp = (tmp_path / "runs" / "kap-mrpc-s0.5-seed1" / "metrics.json").stat().st_mtime_ns
    listed = run_cli("experiment", str(path), "--dry-run", "--only", "no-teacher,kap-mrpc-s0.5-seed2")
    assert [line.split()[1] for line in listed.stdout.splitlines()] == ["no-teacher-mrpc-s0.5-seed42",
                                                                        "kap-mrpc-s0.5-seed2"]
    results_stamp = (tmp_path / "results" / "results.json").stat().st_mtime_ns
    again = run_cli("experiment", str(path), "--dry-run")
    assert again.returncode == 0 and again.stdout.count("done") == 4
    assert (tmp_path / "results" / "results.json").stat().st_mtime_ns == results_stamp, "a dry run wrote results"
    assert run_cli("experiment", str(path)).returncode == 0
    assert (tmp_path / "runs" / "kap-mrpc-s0.5-seed1" / "metrics.json").stat().st_mtime_ns == stamp


def test_a_claim_belongs_to_one_live_process(tmp_path):
    job = tmp_path / "job"
    assert claim(job) and not claim(job)
    release(job)
    assert claim(job)
    release(job)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "job.claim").write_text(str(gone.pid))  # left by a process that died mid-job
    assert claim(job) and (tmp_path / "job.claim").read_text() == str(os.getpid())


def test_two_processes_share_a_grid_without_repeating_a_job(tiny_model, tmp_path):
    config = {
        "name": "shared", "output": str(tmp_path / "results"), "runs_dir": str(tmp_path / "runs"),
        "teachers": {"mrpc": {"task": "mrpc", "model": str(tiny_model), "max_train_samples": 32, "epochs": 1,
                              "batch_size": 16}},
        "prune_defaults": {"student": str(tiny_model), "max_train_samples": 32, "max_steps": 2, "batch_size": 16},
        "jobs": [{"variant": "kap", "teacher": "mrpc", "seeds": [1, 2], "sparsities": [0.5, 0.8]}],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    procs = [subprocess.Popen([sys.executable, "-m", "sparsebert", "experiment", str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    ran = [line.split(":")[0] for out in outputs for line in out.splitlines() if line.endswith(": running")]
    assert sorted(ran) == sorted(f"kap-mrpc-s{s:g}-seed{seed}" for seed in (1, 2) for s in (0.5, 0.8))
    assert len(json.loads((tmp_path / "results" / "results.json").read_text())) == 5
    assert not list((tmp_path / "runs").glob("*.claim"))


def test_a_grid_goes_on_in_a_fresh_clone_from_its_committed_results(tiny_model, tmp_path):
    def grid(seeds):
        config = {
            "name": "sessions", "output": str(tmp_path / "results"), "runs_dir": str(tmp_path / "runs"),
            "label": "method",
            "teachers": {"mrpc": {"task": "mrpc", "model": str(tiny_model), "max_train_samples": 32, "epochs": 1,
                                  "batch_size": 16}},
            "prune_defaults": {"student": str(tiny_model), "max_train_samples": 32, "max_steps": 2, "batch_size": 16,
                               "eval_every": 1},
            "jobs": [{"variant": "kap", "teacher": "mrpc", "seeds": seeds, "sparsities": [0.5]}],
        }
        path = tmp_path / "grid.yaml"
        path.write_text(yaml.safe_dump(config))
        return str(path)

    results = tmp_path / "results" / "results.json"
    assert run_cli("experiment", grid([1])).returncode == 0
    first = {r["job"]: r for r in json.loads(results.read_text())}
    assert first["kap-mrpc-s0.5-seed1"]["evaluations"] and first["teacher-mrpc"]["teacher_sha256"]
    shutil.rmtree(tmp_path / "runs")  # runs_dir is not committed: a later session's clone has none
    assert run_cli("experiment", grid([1]), "--dry-run").stdout.split() == ["done", "kap-mrpc-s0.5-seed1"]
    # the next session retrains the teacher (bit for bit, same seed and threads) and runs only the new seed
    result = run_cli("experiment", grid([1, 2]))
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if line.endswith(": running")] == ["kap-mrpc-s0.5-seed2: running"]
    second = {r["job"]: r for r in json.loads(results.read_text())}
    assert second.keys() == {"teacher-mrpc", "kap-mrpc-s0.5-seed1", "kap-mrpc-s0.5-seed2"}
    assert second["kap-mrpc-s0.5-seed1"] == first["kap-mrpc-s0.5-seed1"]
    assert second["teacher-mrpc"]["teacher_sha256"] == first["teacher-mrpc"]["teacher_sha256"]
    assert "| mrpc | kap | 0.5 | 2 | 2 |" in (tmp_path / "results" / "table.md").read_text()
    # a teacher retrained on another kind of CPU comes out different: the grid goes on with it, both teachers
    # are recorded, and each new run names the teacher that taught it
    shutil.rmtree(tmp_path / "runs")
    tampered = [{**r, "teacher_sha256": "0" * 16} if r["job"] == "teacher-mrpc" else r for r in second.values()]
    results.write_text(json.dumps(tampered))
    third = run_cli("experiment", grid([1, 2, 3]))
    assert third.returncode == 0, third.stderr
    assert "differ from those of the teacher(s) of the committed runs (0000000000000000)" in third.stdout
    records = json.loads(results.read_text())
    teachers = [r["teacher_sha256"] for r in records if r["job"] == "teacher-mrpc"]
    assert teachers == ["0" * 16, second["teacher-mrpc"]["teacher_sha256"]]
    runs = {r["job"]: r for r in records if r["job"] != "teacher-mrpc"}
    assert runs["kap-mrpc-s0.5-seed2"] == second["kap-mrpc-s0.5-seed2"]  # earlier runs keep their record
    assert runs["kap-mrpc-s0.5-seed3"]["teacher_sha256"] == second["teacher-mrpc"]["teacher_sha256"]


def test_until_starts_no_job_that_like_jobs_say_would_still_run_then(tiny_model, tmp_path):
    def grid(seeds):
        config = {
            "name": "lane", "output": str(tmp_path / "results"), "runs_dir": str(tmp_path / "runs"),
            "teachers": {"mrpc": {"task": "mrpc", "model": str(tiny_model), "max_train_samples": 32, "epochs": 1,
                                  "batch_size": 16}},
            "prune_defaults": {"student": str(tiny_model), "max_train_samples": 32, "max_steps": 2, "batch_size": 16},
            "jobs": [{"variant": "kap", "teacher": "mrpc", "seeds": seeds, "sparsities": [0.5]}],
        }
        path = tmp_path / "grid.yaml"
        path.write_text(yaml.safe_dump(config))
        return str(path)

    assert run_cli("experiment", grid([1])).returncode == 0
    results = tmp_path / "results" / "results.json"
    # as if the committed runs had taken an hour here, and their teacher ten minutes; a run of the same job on a
    # GPU took a minute (the estimate goes by this machine's records); a new session has no runs_dir
    records = [{**r, "seconds": 600.0 if r["job"] == "teacher-mrpc" else 3600.0}
               for r in json.loads(results.read_text())]
    assert {r["machine"] for r in records} == {machine_of(torch.device("cpu"))}
    kap = next(r for r in records if r["job"] == "kap-mrpc-s0.5-seed1")
    elsewhere = {**kap, "job": "kap-mrpc-s0.5-seed9", "seed": 9, "seconds": 60.0, "machine": "NVIDIA H200"}
    results.write_text(json.dumps(records + [elsewhere]))
    shutil.rmtree(tmp_path / "runs")
    clock = lambda minutes: (datetime.now() + timedelta(minutes=minutes)).strftime("%H:%M")
    result = run_cli("experiment", grid([1, 2]), "--until", clock(65))
    assert result.returncode == 0, result.stderr
    assert "kap-mrpc-s0.5-seed2: not started: like jobs took 70 minutes" in result.stdout
    assert ": running" not in result.stdout and not (tmp_path / "runs" / "teacher-mrpc").exists()
    result = run_cli("experiment", grid([1, 2]), "--until", clock(75))
    assert result.returncode == 0, result.stderr
    assert "kap-mrpc-s0.5-seed2: running" in result.stdout
    bad = run_cli("experiment", grid([1, 2]), "--until", "7pm")
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    assert bad.stderr.strip().endswith("give the time of day after which no job may still run "
                                                         "as HH:MM (24-hour clock, this machine's local time)")


@pytest.mark.parametrize("flags", ["fma avx2", "avx2 avx512f avx512_bf16"])
def test_until_sizes_a_bf16_job_on_a_cpu_that_emulates_bf16_only_by_records_made_there(flags, tmp_path, monkeypatch,
                                                                                      capsys):
    from sparsebert.research.experiment import ends_in_time
    from sparsebert.sparse import calibration

    emulated = "avx512_bf16" not in flags
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the grid's jobs run on this CPU
    (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 {flags}\n\n")
    monkeypatch.setattr(calibration, "CPUINFO", tmp_path / "cpuinfo")
    calibration.instruction_sets.cache_clear()
    calibration.processor.cache_clear()
    try:
        (tmp_path / "runs" / "teacher-mrpc").mkdir(parents=True)
        (tmp_path / "runs" / "teacher-mrpc" / "metrics.json").write_text("{}")
        grid = {"output": str(tmp_path / "results"), "runs_dir": str(tmp_path / "runs"),
                "teachers": {"mrpc": {"task": "mrpc", "precision": "bf16"}}, "prune_defaults": {"precision": "bf16"}}
        job = {"variant": "kap", "task": "mrpc", "teacher": "mrpc", "steps": None, "dir": "kap-mrpc-s0.5-seed2"}
        elsewhere = {"job": "kap-mrpc-s0.5-seed1", "variant": "kap", "task": "mrpc", "steps": 500, "seconds": 600.0,
                     "machine": "Zen 4 EPYC, 1 thread"}  # ten minutes there: an hour left is plenty, unless emulated
        (tmp_path / "results").mkdir()
        write = lambda records: (tmp_path / "results" / "results.json").write_text(json.dumps(records))
        write([elsewhere])
        in_an_hour = datetime.now().timestamp() + 3600
        assert ends_in_time(grid, job, in_an_hour, "the end") != emulated
        assert ("kap-mrpc-s0.5-seed2: not started: it trains in bf16, which this CPU emulates"
                in capsys.readouterr().out) == emulated
        here = {**elsewhere, "job": "kap-mrpc-s0.5-seed3", "machine": machine_of(torch.device("cpu"))}
        write([elsewhere, here])  # this machine's own record sizes it: ten minutes here too
        assert ends_in_time(grid, job, in_an_hour, "the end")
        (tmp_path / "runs" / "teacher-mrpc" / "metrics.json").unlink()  # its teacher to train, in bf16 too
        assert ends_in_time(grid, job, in_an_hour, "the end") != emulated
        assert ("not started: its teacher trains in bf16" in capsys.readouterr().out) == emulated
        assert ends_in_time({**grid, "teachers": {"mrpc": {"task": "mrpc"}}}, job, in_an_hour, "the end")
    finally:
        monkeypatch.undo()
        calibration.instruction_sets.cache_clear()
        calibration.processor.cache_clear()


def test_curves_are_drawn_only_for_runs_that_differ_in_one_setting(tmp_path):
    from sparsebert.research.plots import plot_curves

    runs = [{"task": "mrpc", "variant": "kap", "sparsity": s, "steps": n, "shown": 0.7 + s / 10}
            for s, n in ((0.9, 500), (0.95, 500), (0.95, 1000))]
    plot_curves(runs, "sparsity", {"mrpc": "accuracy"}, {"mrpc": 0.78}, {"mrpc": 0.68}, tmp_path / "sparsity.png")
    plot_curves(runs, "steps", {"mrpc": "accuracy"}, {"mrpc": 0.78}, {}, tmp_path / "steps.png")
    assert (tmp_path / "sparsity.png").stat().st_size > 1000 and (tmp_path / "steps.png").stat().st_size > 1000
    plot_curves(runs[:1], "steps", {"mrpc": "accuracy"}, {}, {}, tmp_path / "steps.png")  # one run: no curve, the old plot goes
    assert not (tmp_path / "steps.png").exists()


def test_a_job_cut_off_after_a_checkpoint_goes_on_from_it(tiny_model, tmp_path):
    def grid(name):
        config = {
            "name": name, "output": str(tmp_path / name / "results"), "runs_dir": str(tmp_path / name / "runs"),
            "teachers": {"mrpc": {"task": "mrpc", "model": str(tiny_model), "max_train_samples": 96, "epochs": 1,
                                  "batch_size": 8, "save_every": 1}},
            "prune_defaults": {"student": str(tiny_model), "max_train_samples": 64, "batch_size": 8,
                               "eval_every": 8},
            "jobs": [{"variant": "kap", "teacher": "mrpc", "sparsities": [0.5], "steps": [24],
                      "prune": {"save_every": 4, "criterion": "taylor"}}],
        }
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
        return str(tmp_path / f"{name}.yaml"), tmp_path / name / "runs" / "kap-mrpc-s0.5-seed42-24steps"

    whole_config, whole = grid("whole")
    assert run_cli("experiment", whole_config).returncode == 0
    assert not checkpoint.complete_checkpoints(whole), "a finished job keeps no checkpoints"
    assert not checkpoint.complete_checkpoints(whole.parent / "teacher-mrpc"), "nor does its teacher"

    cut_config, cut = grid("cut")
    kill_once_written(["experiment", cut_config], cut / "checkpoint-8")  # the session ends
    assert not (cut / "metrics.json").exists(), "the job finished before it could be cut off"
    started = checkpoint.latest(cut)
    again = run_cli("experiment", cut_config)
    assert again.returncode == 0, again.stderr
    assert f"kap-mrpc-s0.5-seed42-24steps: resuming from {started.name}" in again.stdout
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "cut" / "results" / "results.json").read_text())[-1]["steps"] == 24

    # a session that ends while the grid's teacher trains: the teacher goes on from its checkpoint, to the same
    # weights, and so does everything it teaches
    teacher_config, job = grid("cut-teacher")
    teacher = job.parent / "teacher-mrpc"
    kill_once_written(["experiment", teacher_config], teacher / "checkpoint-3")
    assert not (teacher / "metrics.json").exists(), "the teacher finished before it could be cut off"
    started = checkpoint.latest(teacher)
    again = run_cli("experiment", teacher_config)
    assert again.returncode == 0, again.stderr
    assert f"teacher-mrpc: resuming from {started.name}" in again.stdout
    for folder, finished in ((teacher, whole.parent / "teacher-mrpc"), (job, whole)):
        a, b = load_file(str(finished / "model.safetensors")), load_file(str(folder / "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder.name


def test_the_comparison_states_the_claims_from_the_records(tmp_path):
    def rec(task, variant, sparsity, score, seed=42):
        return {"task": task, "variant": variant, "sparsity": sparsity, "score": score, "seed": seed}

    records = [rec("mrpc", "teacher", 0.0, 0.80), rec("mrpc", "kap", 0.95, 0.78), rec("mrpc", "kap", 0.95, 0.76, 7),
               rec("mrpc", "kap", 0.9, 0.10), rec("mrpc", "no-teacher", 0.95, 0.70),
               rec("mrpc", "small-dense", 0.0, 0.75), rec("rte", "teacher", 0.0, 0.60),
               rec("rte", "kap", 0.95, 0.57), rec("rte", "no-teacher", 0.95, 0.58)]
    compare = {"rows": {"teacher": 0, "kap": 0.95, "no-teacher": 0.95, "small-dense": 0}, "method": "kap",
               "baselines": ["no-teacher", "small-dense"], "keep": 0.97}
    write_comparison(tmp_path / "c.md", records, ["mrpc", "rte", "cola"], compare, "method")
    lines = (tmp_path / "c.md").read_text().splitlines()
    assert lines[0] == "| method | sparsity | mrpc (f1) | rte (accuracy) | cola (matthews_corr) |"
    assert lines[2] == "| teacher | 0 | 0.800 | 0.600 | – |"
    assert lines[3] == "| kap | 0.95 | 0.770 ± 0.014 (96.2%) n=2 | 0.570 (95.0%) | – |"  # not the 0.9 run
    assert lines[5] == "| small-dense | 0 | 0.750 (93.8%) | – | – |"
    # (96.25% + 95%) / 2; rte lacks small-dense, so only mrpc decides the second claim
    assert lines[7] == ("- kap at 0.95 keeps 95.6% of the teacher's score on average over mrpc, rte (goal 97%); "
                        "missing: cola.")
    # one seed of each: a paired test cannot resolve anything, whatever the means say
    assert lines[8] == "- kap against no-teacher, seed against seed: mrpc undecided: 1 pair, the test needs 6 (+0.080, p 1.000); rte undecided: 1 pair, the test needs 6 (-0.010, p 1.000)."
    assert lines[9] == "- kap against small-dense, seed against seed: mrpc undecided: 1 pair, the test needs 6 (+0.030, p 1.000)."


def test_the_comparison_pairs_a_seed_only_under_one_teacher(tmp_path):
    def rec(variant, score, seed, teacher):
        return {"task": "mrpc", "variant": variant, "sparsity": 0.95, "score": score, "seed": seed,
                "teacher_sha256": teacher}

    # seed 7's prune-teacher ran again under a retrained teacher "b"; only its run under "a" pairs with kap's
    records = [rec("kap", 0.80, 42, "a"), rec("prune-teacher", 0.70, 42, "a"), rec("kap", 0.82, 7, "a"),
               rec("prune-teacher", 0.78, 7, "a"), rec("prune-teacher", 0.10, 7, "b")]
    compare = {"rows": {"kap": 0.95, "prune-teacher": 0.95}, "method": "kap", "baselines": ["prune-teacher"],
               "keep": 0.97}
    write_comparison(tmp_path / "c.md", records, ["mrpc"], compare, "method")
    assert (tmp_path / "c.md").read_text().splitlines()[-1] == (
        "- kap against prune-teacher, seed against seed: mrpc undecided: 2 pairs, the test needs 6 (+0.070, p 0.500).")


def test_a_grid_with_a_bad_job_stops_before_running_anything(tmp_path):
    def grid(**last_job):
        config = {"name": "g", "output": str(tmp_path / "results"), "runs_dir": str(tmp_path / "runs"),
                  "teachers": {"mrpc": {"task": "mrpc", "max_train_samples": 32}},
                  "jobs": [{"variant": "kap", "teacher": "mrpc"}, {"variant": "late", "teacher": "mrpc", **last_job}]}
        path = tmp_path / "grid.yaml"
        path.write_text(yaml.safe_dump(config))
        result = run_cli("experiment", str(path))
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert not (tmp_path / "runs").exists(), "nothing ran"
        return result.stderr.strip()

    assert grid(prune={"learning_rat": 1e-4}).endswith("grid.yaml: unknown setting 'learning_rat' in late:")
    assert "job 2 (late): unknown key 'sparsity'" in grid(sparsity=[0.9])
    assert "variant: '../../x' is not a plain name" in grid(variant="../../x")  # would run outside runs_dir
    assert "job 2 (late): teacher 'rte' is not defined under 'teachers:'" in grid(teacher="rte")
    assert "job 2 (late): trains on 'mrpc-x4', which 'augmented:' does not define" in grid(train="mrpc-x4")
    assert "job 2 (late): 'seeds:' is a list like [42]" in grid(seeds=42)
    assert "job 2 (late): 'sparsities:' is a list like [0.95]" in grid(sparsities=[0.9, 95])
    assert "job 2 (late): prune: is a mapping ({key: value, ...}), not a list" in grid(prune=["max_steps"])
    config = yaml.safe_load((tmp_path / "grid.yaml").read_text())
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump({**config, "augmented": {"x": {"task": "mrpc", "n_aug": -1}}}))
    refused = run_cli("experiment", str(tmp_path / "grid.yaml"))
    assert refused.returncode != 0 and "--n-aug must be >= 0" in refused.stderr and not (tmp_path / "runs").exists()
    # a misspelt task would stop the grid only when that teacher's first job ran, hours in
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump({**config, "teachers": {"mrpc": {"task": "mrcp"}}}))
    refused = run_cli("experiment", str(tmp_path / "grid.yaml"))
    assert refused.returncode != 0 and not (tmp_path / "runs").exists()
    assert f"{tmp_path / 'grid.yaml'}: teachers: mrpc: unknown task 'mrcp'" in refused.stderr
    config = yaml.safe_load((tmp_path / "grid.yaml").read_text())
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump({**config, "plot_metric": "f1", "jobs": config["jobs"][:1]}))
    refused = run_cli("experiment", str(tmp_path / "grid.yaml"))
    assert refused.returncode != 0 and "plot_metric: 'f1'; give accuracy or score" in refused.stderr
    # a misspelt top-level key would leave its setting at the default for the whole grid
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump({**config, "prune_default": {"max_steps": 9}}))
    refused = run_cli("experiment", str(tmp_path / "grid.yaml"))
    assert refused.returncode != 0 and "unknown key 'prune_default:'" in refused.stderr
    without_teachers = yaml.safe_dump({k: v for k, v in config.items() if k != "teachers"})
    for text, message in ((without_teachers + "teachers: [mrpc]\n", "teachers: is a mapping ({key: value, ...}), not a list"),
                          ("name: g\njobs: [{variant: kap\n", "grid.yaml, line 3: not valid YAML"),
                          ("- kap\n", "holds a YAML list, but an experiment config is a mapping of settings")):
        (tmp_path / "grid.yaml").write_text(text)
        refused = run_cli("experiment", str(tmp_path / "grid.yaml"))
        assert refused.returncode != 0 and "Traceback" not in refused.stderr and message in refused.stderr
    assert not (tmp_path / "runs").exists()


def test_the_shipped_grids_are_valid():
    shipped = sorted((Path(__file__).parent.parent / "src/sparsebert/research/experiments").glob("*.yaml"))
    assert shipped
    for config in shipped:
        listed = run_cli("experiment", str(config), "--dry-run")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.splitlines() and all(line.split()[0] in ("done", "todo") for line in listed.stdout.splitlines())


def test_only_runs_seed_by_seed_across_the_tasks_given_and_refuses_a_name_the_grid_lacks():
    """--only with --tasks: each seed's jobs on every task given before the next seed's, so that lanes complete
    pairs on all tasks as they go rather than every seed of the first task first."""
    claim = Path(__file__).parent.parent / "src/sparsebert/research/experiments/claim.yaml"
    listed = run_cli("experiment", str(claim), "--dry-run", "--only", "no-teacher-taylor", "--tasks", "sts-b,cola")
    assert listed.returncode == 0, listed.stderr
    jobs = [line.split()[1] for line in listed.stdout.splitlines()]
    assert jobs[:4] == ["no-teacher-taylor-sts-b-s0.95-seed42", "no-teacher-taylor-cola-s0.95-seed42",
                        "no-teacher-taylor-sts-b-s0.95-seed7", "no-teacher-taylor-cola-s0.95-seed7"]
    assert len(jobs) == 16
    # a misspelt name would select no job: the lane would end at once, having done nothing, and say nothing
    for option, name, message in (("--only", "no-teacher-tailor", "--only no-teacher-tailor: not a variant of"),
                                  ("--tasks", "stsb", "--tasks stsb: not a teacher of")):
        refused = run_cli("experiment", str(claim), "--dry-run", option, name)
        assert refused.returncode == 2 and message in refused.stderr and "Traceback" not in refused.stderr


def test_records_and_tables_are_by_the_final_model(tmp_path):
    from sparsebert.research.reports import by_final_model, record, write_table

    result = {"final": {"f1": 0.80, "accuracy": 0.70}, "best": {"f1": 0.85, "accuracy": 0.75}, "best_step": 40,
              "steps": 100, "train_seconds": 60.0}
    line = record("mrpc", "kap", 0.95, 42, result)
    assert (line["score"], line["accuracy"], line["best_score"]) == (0.80, 0.70, 0.85)
    write_table(tmp_path / "table.md", [{**line, "job": "kap-mrpc"}], "variant")
    row = (tmp_path / "table.md").read_text().splitlines()[2].split(" | ")
    assert row[5:9] == ["0.800 (f1)", "0.700", "0.800", "0.850"]  # score, accuracy, f1, best evaluation
    # a record written when `score` was the best evaluation is read as the final model's
    old = {"metric": "f1", "score": 0.85, "final_score": 0.80, "accuracy": 0.75, "f1": 0.85}
    assert by_final_model(old) == {"metric": "f1", "score": 0.80, "best_score": 0.85, "accuracy": None, "f1": 0.80,
                                   "best_accuracy": 0.75, "best_f1": 0.85}


def test_paired_comparison_matches_seed_steps_and_pattern_and_applies_the_rule(tmp_path):
    from sparsebert.research.pairs import write_paired

    def rec(task, variant, seed, score, steps=500, pattern="unstructured"):
        return {"task": task, "variant": variant, "sparsity": 0.95, "seed": seed, "score": score, "steps": steps,
                "pattern": pattern}

    records = [rec("mrpc", "kap", s, 0.80 + 0.01 * s) for s in range(7)]
    records += [rec("mrpc", "prune-teacher", s, 0.75 + 0.01 * s + 0.001 * (s % 2)) for s in range(7)]
    records += [rec("mrpc", "prune-teacher", s, 0.99, steps=2000) for s in range(7)]  # other lengths: not pairs
    records += [rec("mrpc", "kap", s, 0.50, pattern="1x4") for s in range(2)]  # nor other patterns
    records += [rec("cola", "kap", s, v) for s, v in enumerate([0.10, 0.20, 0.15])]
    records += [rec("cola", "prune-teacher", s, v) for s, v in enumerate([0.15, 0.12, 0.16])]
    records += [rec("cola", "prune-teacher", 9, 0.5)]  # no kap run of seed 9: not a pair
    records += [rec("sts-b", "kap", 42, 0.85), rec("sts-b", "prune-teacher", 42, 0.80)]
    write_paired(tmp_path / "paired.md", records, ["mrpc", "cola", "rte", "sts-b"],
                 [{"method": "kap", "baseline": "prune-teacher", "sparsity": 0.95}], "method",
                 teachers={"mrpc": 0.86, "cola": 0.30}, constant={"mrpc": 0.81, "cola": 0.0})
    text = (tmp_path / "paired.md").read_text()
    assert text.startswith("Decision rule (fixed before the runs): an exact two-sided sign-flip test")
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 3  # rte has no runs; the 2000-step and 1x4 runs have no partner
    mrpc, cola, sts_b = rows
    assert mrpc[4:7] == ["500", "unstructured", "7 (0, 1, 2, 3, 4, 5, 6)"] and mrpc[9] == "+0.050"
    assert mrpc[11:13] == ["0.016", "ahead"]  # 2 / 2**7: every difference positive
    # kap's mean 0.83 as a share of the teacher's 0.86 and of its margin over the constant answer (0.02 / 0.05)
    assert mrpc[13] == "96.5% / 40%"
    assert cola[6] == "3 (0, 1, 2)" and cola[9] == "+0.007" and cola[12] == "undecided: 3 pairs, the test needs 6"
    assert sts_b[9:11] == ["+0.050", "–"]  # a single pair shows no interval
    assert "across mrpc, cola, sts-b (11 pairs)" in text


def test_arms_taught_by_different_teachers_are_not_paired(tmp_path):
    """A grid continued on another kind of CPU retrains its teacher, which comes out different: a seed whose
    two arms had different teachers is listed, not paired, and each arm's retention is of its own teacher."""
    from sparsebert.research.pairs import write_paired

    def rec(variant, seed, score, teacher):
        return {"task": "mrpc", "variant": variant, "sparsity": 0.95, "seed": seed, "score": score, "steps": 500,
                "pattern": "unstructured", "teacher_sha256": teacher}

    records = [rec("kap", s, 0.84, "a") for s in range(3)] + [rec("prune-teacher", s, 0.82, "a") for s in range(3)]
    records += [rec("kap", 3, 0.84, "b"), rec("prune-teacher", 3, 0.82, "b"), rec("prune-teacher", 4, 0.1, "b")]
    records += [rec("kap", 4, 0.99, "a"), rec("no-teacher", 4, 0.5, None)]
    write_paired(tmp_path / "paired.md", records, ["mrpc"],
                 [{"method": "kap", "baseline": "prune-teacher", "sparsity": 0.95},
                  {"method": "kap", "baseline": "no-teacher", "sparsity": 0.95}], "method",
                 teachers={"mrpc": 0.5}, constant={"mrpc": 0.0}, teacher_by_fingerprint={"a": 0.84, "b": 0.42})
    text = (tmp_path / "paired.md").read_text()
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| mrpc")]
    assert rows[0][6] == "4 (0, 1, 2, 3)" and rows[0][9] == "+0.020"  # seed 4's arms had different teachers
    assert rows[0][13] == f"{0.84 / statistics.mean([0.84] * 3 + [0.42]):.1%} / {0.84 / 0.735:.0%}"
    assert rows[1][6] == "1 (4)"  # an arm without a teacher pairs with any
    assert "- mrpc seed 4, 500 steps, unstructured: kap and prune-teacher were taught by different teachers" in text


def test_an_arm_is_run_again_to_pair_with_a_run_of_a_retrained_teacher(tiny_model, tmp_path):
    """One arm of a seed ran with a teacher that this machine does not retrain bit for bit: when its other arm runs
    here, the first arm runs again under this teacher, so that the seed pairs; the earlier run keeps its record."""
    config = {
        "name": "straddle", "output": str(tmp_path / "results"), "runs_dir": str(tmp_path / "runs"), "label": "method",
        "teachers": {"mrpc": {"task": "mrpc", "model": str(tiny_model), "max_train_samples": 32, "epochs": 1,
                              "batch_size": 16}},
        "prune_defaults": {"student": str(tiny_model), "max_train_samples": 32, "max_steps": 2, "batch_size": 16,
                           "eval_every": 1},
        "paired": [{"method": "kap", "baseline": "prune-teacher", "sparsity": 0.5}],
        "jobs": [{"variant": "kap", "teacher": "mrpc", "seeds": [1], "sparsities": [0.5]},
                 {"variant": "prune-teacher", "teacher": "mrpc", "seeds": [1], "sparsities": [0.5],
                  "prune": {"init": "teacher"}}],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    results = tmp_path / "results" / "results.json"
    assert run_cli("experiment", str(path), "--only", "kap").returncode == 0
    # as if kap's run and its teacher came from another kind of machine
    elsewhere = [{**r, "teacher_sha256": "0" * 16} for r in json.loads(results.read_text())]
    results.write_text(json.dumps(elsewhere))
    shutil.rmtree(tmp_path / "runs")
    result = run_cli("experiment", str(path))
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if "running" in line] == [
        "prune-teacher-mrpc-s0.5-seed1: running",
        "kap-mrpc-s0.5-seed1: running again, to pair with prune-teacher-mrpc-s0.5-seed1 under this teacher"]
    records = json.loads(results.read_text())
    here = next(r["teacher_sha256"] for r in records if r["job"] == "teacher-mrpc" and r["teacher_sha256"] != "0" * 16)
    assert [(r["job"], r["teacher_sha256"]) for r in records if r["method"] != "teacher"] == [
        ("kap-mrpc-s0.5-seed1", "0" * 16), ("kap-mrpc-s0.5-seed1", here), ("prune-teacher-mrpc-s0.5-seed1", here)]
    paired = (tmp_path / "results" / "paired.md").read_text()
    assert "| mrpc | kap | prune-teacher | 0.5 | 2 | unstructured | 1 (1) |" in paired and "Not paired" not in paired
    # both arms now have runs of this teacher: running the grid again runs nothing
    again = run_cli("experiment", str(path))
    assert again.returncode == 0 and "running" not in again.stdout


def test_a_seed_pairs_the_first_runs_that_one_teacher_taught():
    from sparsebert.research.pairs import pair_of, partners_to_run_again

    kap_a, kap_b = {"teacher_sha256": "a"}, {"teacher_sha256": "b"}
    base_b, free = {"teacher_sha256": "b"}, {"teacher_sha256": None}
    assert pair_of([kap_a, kap_b], [base_b]) == (kap_b, base_b)
    assert pair_of([kap_a, kap_b], [free]) == (kap_a, free)  # no teacher: pairs with the earliest run
    assert pair_of([kap_a], [base_b]) is None
    job = lambda variant, seed=1: {"variant": variant, "teacher": "mrpc", "seed": seed, "sparsity": 0.95, "steps": None}
    config = {"paired": [{"method": "kap", "baseline": "prune-teacher", "sparsity": 0.95},
                         {"method": "kap", "baseline": "no-teacher", "sparsity": 0.95}]}
    jobs = [job("kap"), job("prune-teacher"), job("no-teacher"), job("prune-teacher", seed=2)]
    runs = {"kap": {"a"}, "prune-teacher": {"b"}, "no-teacher": {None}}
    teachers_of = lambda j: runs[j["variant"]] if j["seed"] == 1 else set()
    assert partners_to_run_again(config, jobs, job("prune-teacher"), teachers_of) == [job("kap")]
    assert partners_to_run_again(config, jobs, job("no-teacher"), teachers_of) == []  # taught by none: pairs with any
    runs["kap"] = {"a", "b"}  # the seed already pairs under b: nothing runs again
    assert partners_to_run_again(config, jobs, job("prune-teacher"), teachers_of) == []
    runs["prune-teacher"] = set()  # an arm not run yet runs in its turn, under this teacher
    assert partners_to_run_again(config, jobs, job("kap"), teachers_of) == []


def test_the_arms_of_a_pair_draw_the_same_dropout_masks(tiny_teacher, tmp_path, monkeypatch):
    """kap draws a fresh head before training and prune-teacher does not: without re-seeding at the start of
    the loop their dropout masks would differ at every step."""
    import sparsebert
    from conftest import make_tiny_model
    from sparsebert.jobs import prune as prune_job

    student = make_tiny_model(tmp_path / "three-labels", num_labels=3)  # MRPC has two: a fresh head is drawn

    states, collate = [], prune_job.collate
    monkeypatch.setattr(prune_job, "collate", lambda *a: (states.append(torch.get_rng_state()), collate(*a))[1])
    common = dict(task="mrpc", teacher=str(tiny_teacher), max_train_samples=32, batch_size=16, max_steps=3,
                  sparsity=0.5, seed=5, cache_teacher=False)
    sparsebert.prune(**common, student=str(student), student_head="teacher", output=str(tmp_path / "kap"))
    kap, states[:] = list(states), []
    sparsebert.prune(**common, init="teacher", output=str(tmp_path / "prune-teacher"))
    assert len(kap) == len(states) == 3
    assert all(torch.equal(a, b) for a, b in zip(kap, states))


def test_a_bad_paired_section_stops_the_grid(tmp_path):
    from sparsebert.research.grid import load_grid

    base = {"name": "g", "output": str(tmp_path / "o"), "runs_dir": str(tmp_path / "r"),
            "teachers": {"mrpc": {"task": "mrpc"}}, "jobs": [{"variant": "kap", "teacher": "mrpc"}]}
    for paired, words in [({"method": "kap"}, "'paired:' is a list"),
                          ([{"method": "kap", "baseline": "prune-teacher", "sparsity": 0.95}], "'prune-teacher'"),
                          ([{"method": "kap", "baseline": "kap"}], "takes method:, baseline: and sparsity:")]:
        path = tmp_path / "grid.yaml"
        path.write_text(yaml.safe_dump({**base, "paired": paired}))
        with pytest.raises(UserError, match=words):
            load_grid(str(path))


def test_the_product_never_imports_the_research_tools():
    """Every product module imported in a fresh interpreter loads nothing of sparsebert.research."""
    import subprocess
    import sys

    code = """
import importlib, pathlib, sys, sparsebert
root = pathlib.Path(sparsebert.__file__).parent
for path in sorted(root.rglob("*.py")):
    parts = path.relative_to(root).with_suffix("").parts
    if parts[0] != "research" and parts[-1] != "__main__":
        importlib.import_module(".".join(("sparsebert",) + parts).removesuffix(".__init__"))
print(sorted(m for m in sys.modules if m.startswith("sparsebert.research")))
print(len([m for m in sys.modules if m.startswith("sparsebert.")]))
"""
    loaded, count = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")[:2]
    assert loaded == "[]" and int(count) > 40
