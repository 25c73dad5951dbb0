import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from sparsebert import checkpoint

from conftest import kill_once_written, run_cli


def prune_cmd(tiny_model, teacher, out, *extra):
    taught_by = [] if "--no-teacher" in extra else ["--teacher", str(teacher)]
    return ["prune", *taught_by, "--student", str(tiny_model), "--output", str(out),
            "--max-train-samples", "96", "--max-steps", "36", "--batch-size", "8", "--sparsity", "0.9",
            "--prune-events", "9", "--eval-every", "12", "--save-every", "4", "--learning-rate", "1e-3",
            "--criterion", "taylor", *extra]  # the criterion with state (squared gradients) that must survive


def assert_same_weights(a_folder, b_folder, names=("model.safetensors", "masks.safetensors")) -> None:
    for name in names:
        a, b = load_file(str(a_folder / name)), load_file(str(b_folder / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{name} differs after resume"


# each set of settings keeps state of its own across a resume: blocks and one threshold over all matrices with
# the second learning-rate ramp; the labels alone; the teacher's outputs computed anew each step, from the
# fine-tuned model pruned itself, its predictions alone
@pytest.mark.parametrize("settings", [(), ("--pattern", "1x4", "--allocation", "global", "--lr-schedule", "rewind"),
                                      ("--no-teacher",),
                                      ("--no-cache-teacher", "--init", "teacher", "--distill", "logits")],
                         ids=["default", "1x4-global-rewind", "no-teacher", "uncached-init-teacher-logits"])
def test_killed_run_resumes_bit_identical(tiny_model, tiny_teacher, tmp_path, settings):
    reference = run_cli(*prune_cmd(tiny_model, tiny_teacher, tmp_path / "whole", *settings))
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "killed"
    kill_once_written(prune_cmd(tiny_model, tiny_teacher, out, *settings), out / "checkpoint-12")
    assert not (out / "metrics.json").exists(), "the run finished before it could be killed"
    assert checkpoint.latest(out) is not None

    resumed = run_cli(*prune_cmd(tiny_model, tiny_teacher, out, *settings, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(tmp_path / "whole", out)
    assert len(checkpoint.complete_checkpoints(out)) <= 2  # --keep-checkpoints 2
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in (out / "log.jsonl").read_text().splitlines()
             if '"loss"' in line]
    assert steps == list(range(1, 37)), "the resumed log should read as one uninterrupted run"


def test_killed_finetune_resumes_to_the_same_teacher(tiny_model, tmp_path):
    # a grid retrains its teachers in each session and resumes one cut off; its fingerprint must not change
    def finetune(out, *extra):
        return ["finetune", "--model", str(tiny_model), "--output", str(out), "--max-train-samples", "96",
                "--epochs", "2", "--batch-size", "8", "--save-every", "4", "--learning-rate", "1e-3", *extra]

    assert run_cli(*finetune(tmp_path / "whole")).returncode == 0
    out = tmp_path / "killed"
    kill_once_written(finetune(out), out / "checkpoint-8")
    assert not (out / "metrics.json").exists(), "the run finished before it could be killed"
    # a setting given anew would be dropped for the saved one: refused, the run left as it was
    refused = run_cli(*finetune(out, "--resume", "--learning-rate", "5e-4"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert (f"--resume continues the run with the settings of {out / 'config.yaml'}: --learning-rate 0.0005 is not "
            "its 0.001; leave it out, or start a new run in another --output") in refused.stderr
    assert not (out / "metrics.json").exists()
    resumed = run_cli(*finetune(out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(tmp_path / "whole", out, names=("model.safetensors",))


def test_ctrl_c_stops_with_one_line_that_says_how_to_go_on(tiny_model, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    args = ["finetune", "--model", str(tiny_model), "--output", str(out), "--max-train-samples", "96",
            "--epochs", "6", "--batch-size", "8", "--save-every", "4", "--learning-rate", "1e-3"]
    # `python -m sparsebert`, with SIGINT answered as a terminal's Ctrl-C is: a suite started in the background
    # (`pytest &`) ignores SIGINT, and a Python started ignoring it never raises KeyboardInterrupt
    main = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "runpy.run_module('sparsebert', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", main, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    # any complete checkpoint: on a loaded machine this loop may wake after a given one has been rotated away
    while checkpoint.latest(out) is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last == (f"sparsebert finetune: interrupted; `sparsebert finetune --resume --output {out}` goes on "
                    "from its last checkpoint"), stderr
    assert not (out / "model.safetensors").exists() and checkpoint.latest(out) is not None
    resumed = run_cli("finetune", "--resume", "--output", str(out))  # the command the line gives
    assert resumed.returncode == 0 and (out / "model.safetensors").is_file(), resumed.stderr


def test_debug_shows_the_traceback_behind_the_one_line(tmp_path):
    missing = tmp_path / "no-such-model"
    plain = run_cli("evaluate", str(missing), "--task", "mrpc")
    assert_one_line(plain, "model folder not found")
    debug = run_cli("evaluate", str(missing), "--task", "mrpc", "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "model folder not found" in debug.stderr


@pytest.fixture(scope="module")
def main_job(tiny_model, tmp_path_factory):
    """The main job on a tiny preset, and the folder of one uninterrupted run of it."""
    folder = tmp_path_factory.mktemp("main-job")
    preset = folder / "tiny.yaml"
    preset.write_text("teacher: {max_train_samples: 64, epochs: 2, batch_size: 16, learning_rate: 1.0e-3,"
                      " save_every: 2}\n"
                      "prune: {max_train_samples: 96, max_steps: 36, batch_size: 8, prune_events: 9, eval_every: 12,"
                      " save_every: 4, learning_rate: 1.0e-3}\n")
    run = ["run", "--preset", str(preset), "--model", str(tiny_model), "--sparsity", "0.9"]
    reference = run_cli(*run, "--output", str(folder / "whole"))
    assert reference.returncode == 0, reference.stderr
    return run, folder / "whole"


def test_main_job_cut_off_in_its_teacher_resumes_to_the_same_models(main_job, tmp_path):
    run, whole = main_job
    out = tmp_path / "killed"
    kill_once_written([*run, "--output", str(out)], out / "teacher" / "checkpoint-4")
    assert not (out / "teacher" / "metrics.json").exists(), "the teacher finished before it could be killed"
    resumed = run_cli("run", "--resume", "--output", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from checkpoint-4" in resumed.stdout
    assert_same_weights(whole / "teacher", out / "teacher", names=("model.safetensors",))
    assert_same_weights(whole / "student", out / "student")


def test_main_job_cut_off_in_pruning_resumes_to_the_same_model(main_job, tmp_path):
    run, whole = main_job
    out = tmp_path / "killed"
    kill_once_written([*run, "--output", str(out)], out / "student" / "checkpoint-12")
    assert not (out / "student" / "metrics.json").exists(), "the run finished before it could be killed"
    teacher_log = (out / "teacher" / "log.jsonl").read_text()
    # the user moves the run before resuming it: the student is then taught by the teacher in its new place
    out = out.rename(tmp_path / "moved")

    resumed = run_cli("run", "--resume", "--output", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "finished before, kept" in resumed.stdout and "resuming from checkpoint-" in resumed.stdout
    assert (out / "teacher" / "log.jsonl").read_text() == teacher_log, "the finished teacher was trained again"
    assert_same_weights(whole / "student", out / "student")
    report = json.loads((out / "report.json").read_text())
    assert report["resumed"] and report["sparse_score"] == json.loads((whole / "report.json").read_text())["sparse_score"]
    assert checkpoint.complete_checkpoints(out / "student") == checkpoint.complete_checkpoints(out / "teacher") == []

    # a student cut off before its first checkpoint starts over, and the user hears so
    (out / "student" / "metrics.json").unlink()
    again = run_cli("run", "--resume", "--output", str(out))
    assert again.returncode == 0, again.stderr
    assert f"{out / 'student'}: no checkpoint, running it from the start" in again.stdout


def test_resume_without_a_run_is_a_clear_error(tmp_path):
    result = run_cli("finetune", "--output", str(tmp_path / "nothing"), "--resume")
    assert result.returncode == 2 and "config.yaml: not found" in result.stderr


def test_a_loss_that_becomes_nan_stops_the_job_with_one_line_and_no_model(tiny_model, tmp_path, monkeypatch):
    from sparsebert.jobs import finetune

    calls, loss = [], finetune.task_loss
    monkeypatch.setattr(finetune, "task_loss", lambda *a: (calls.append(1), loss(*a) * (float("nan") if len(calls) == 3
                                                                                        else 1.0))[1])
    result = run_cli("finetune", "--model", tiny_model, "--max-train-samples", "64", "--batch-size", "8",
                     "--max-steps", "5", "--output", tmp_path / "out")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "the loss became nan at step 3; no model was written" in result.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists() and not (tmp_path / "out" / "metrics.json").exists()


def test_interrupted_checkpoint_is_not_used(tmp_path):
    (tmp_path / "checkpoint-8").mkdir()  # no trainer_state.pt: a write that never finished
    (tmp_path / ".checkpoint-12.tmp").mkdir()
    assert checkpoint.latest(tmp_path) is None


def test_pickle_weights_load_only_with_trust_pickle(tiny_model, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save(load_file(str(tiny_model / "model.safetensors")), folder / "pytorch_model.bin")
    for f in list(tiny_model.glob("tokenizer*")) + [tiny_model / "config.json"]:
        (folder / f.name).write_bytes(f.read_bytes())
    refused = run_cli("evaluate", str(folder), "--task", "mrpc")
    assert refused.returncode == 2 and "--trust-pickle" in refused.stderr
    allowed = run_cli("--trust-pickle", "evaluate", str(folder), "--task", "mrpc", "--max-seq-length", "64",
                      "--json", tmp_path / "pickled.json")
    assert allowed.returncode == 0, allowed.stderr
    # the pickled weights are the model's: it scores as the safetensors original does
    assert run_cli("evaluate", str(tiny_model), "--task", "mrpc", "--max-seq-length", "64",
                   "--json", tmp_path / "original.json").returncode == 0
    scores = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("pickled", "original")]
    assert [(m["accuracy"], m["f1"]) for m in scores[:1]] == [(m["accuracy"], m["f1"]) for m in scores[1:]]


def test_resume_passes_over_a_torn_log_line_and_an_unreadable_checkpoint(tiny_model, tmp_path):
    out = tmp_path / "run"
    args = ["finetune", "--model", str(tiny_model), "--output", str(out), "--max-train-samples", "64", "--epochs", "2",
            "--batch-size", "8", "--save-every", "4", "--keep-checkpoints", "3", "--learning-rate", "1e-3"]
    whole = tmp_path / "whole"
    assert run_cli(*[a if a != str(out) else str(whole) for a in args]).returncode == 0
    kill_once_written(args, out / "checkpoint-12")
    # what a crash leaves: the newest checkpoint's weights cut short, the log's last line cut mid-write
    newest = checkpoint.latest(out)
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with open(out / "log.jsonl", "a") as log:
        log.write('{"step": 13, "loss": 0.6')
    result = run_cli(*args, "--resume")
    assert result.returncode == 0, result.stderr
    assert f"{newest.name}: unreadable" in result.stdout and "cut short" in result.stdout
    assert_same_weights(out, whole, names=("model.safetensors",))  # as if left alone, from the checkpoint before
    for line in (out / "log.jsonl").read_text().splitlines():
        json.loads(line)


def test_a_folder_with_an_earlier_run_is_refused_with_a_word_on_resume(tiny_teacher):
    result = run_cli("finetune", "--output", str(tiny_teacher))
    assert result.returncode == 2 and "--resume goes on with it" in result.stderr


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_writes(tiny_model, tmp_path):
    import os
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    args = ["finetune", "--model", str(tiny_model), "--output", str(out), "--max-train-samples", "64", "--epochs", "50",
            "--batch-size", "8", "--save-every", "0"]
    first = subprocess.Popen([sys.executable, "-m", "sparsebert", *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 300
        while not (out / "log.jsonl").is_file() and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        second = run_cli(*args, "--overwrite")
        assert second.returncode == 2 and "another sparsebert process is writing into this folder" in second.stderr
        assert first.poll() is None, "the first run goes on"
    finally:
        first.kill()
        first.wait()
    # once it is gone (killed, even) the folder is free again
    again = run_cli(*args[:-4], "--epochs", "1", "--batch-size", "16", "--overwrite")
    assert again.returncode == 0, again.stderr


def assert_one_line(result, text):
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], result.stderr


def test_weights_cut_short_or_of_other_shapes_are_one_line(tiny_model, tiny_teacher, tmp_path):
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(tiny_teacher, cut)
    weights = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(weights[:len(weights) // 2])
    assert_one_line(run_cli("evaluate", cut), "the weights file cannot be read")
    assert_one_line(run_cli("finetune", "--model", cut, "--output", tmp_path / "out"), "the weights file cannot be read")
    assert not (tmp_path / "out").exists()
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_teacher, mixed)
    config = json.loads((mixed / "config.json").read_text())
    (mixed / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    assert_one_line(run_cli("evaluate", mixed), "the weights' shapes differ from those config.json gives")


def test_finetuning_a_model_with_a_head_of_another_size_replaces_the_head(tmp_path):
    from conftest import make_tiny_model

    three = make_tiny_model(tmp_path / "three-labels", num_labels=3)  # e.g. an MNLI model, re-headed for MRPC
    result = run_cli("finetune", "--model", three, "--output", tmp_path / "out", "--max-train-samples", "16",
                     "--max-steps", "2", "--batch-size", "8")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out" / "config.json").read_text())["id2label"] == {"0": "not_equivalent",
                                                                                      "1": "equivalent"}
    # only the head is new: the encoder it fine-tuned is the three-label model's, moved by two small steps
    before, after = load_file(str(three / "model.safetensors")), load_file(str(tmp_path / "out" / "model.safetensors"))
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert float((after[name] - before[name]).norm() / before[name].norm()) < 0.05
    assert before["classifier.weight"].shape[0] == 3 and after["classifier.weight"].shape[0] == 2


def test_output_files_in_missing_folders_are_refused_before_work(tiny_teacher, tmp_path):
    assert_one_line(run_cli("evaluate", tiny_teacher, "--json", tmp_path / "no" / "m.json"),
                    f"the folder {tmp_path / 'no'} does not exist")
    assert_one_line(run_cli("evaluate", tiny_teacher, "--json", tmp_path), "is a folder; give a file name")


def test_evaluate_never_writes_its_metrics_over_the_validation_file_nor_another_file_unasked(tiny_teacher, tmp_path):
    dev = tmp_path / "dev.tsv"
    dev.write_text("label\tsentence1\tsentence2\n1\ta cat\ta cat sat\n0\tdogs\tit rained\n")
    own = ["--validation-file", dev, "--text-columns", "sentence1,sentence2"]
    before = dev.read_bytes()
    assert_one_line(run_cli("evaluate", tiny_teacher, *own, "--json", dev, "--overwrite"),
                    f"--json {dev} is the input file; write to another file")
    assert dev.read_bytes() == before
    earlier = tmp_path / "metrics.json"
    earlier.write_text("{}")
    assert_one_line(run_cli("evaluate", tiny_teacher, "--json", earlier),
                    f"--json {earlier} exists; give another file or --overwrite to replace it")
    assert earlier.read_text() == "{}"
    assert run_cli("evaluate", tiny_teacher, "--json", earlier, "--overwrite").returncode == 0
    assert "accuracy" in json.loads(earlier.read_text())


def test_a_full_disk_while_checkpointing_is_one_line_and_the_last_complete_checkpoint_resumes(tiny_model, tmp_path,
                                                                                               monkeypatch):
    import errno

    real_save_file, calls = checkpoint.save_file, []

    def full_on_the_second_checkpoint(tensors, path, *a, **k):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real_save_file(tensors, path, *a, **k)

    args = ["finetune", "--model", tiny_model, "--max-train-samples", "32", "--max-steps", "6", "--batch-size", "8",
            "--save-every", "2", "--learning-rate", "1e-3"]
    assert run_cli(*args, "--output", tmp_path / "whole").returncode == 0
    monkeypatch.setattr(checkpoint, "save_file", full_on_the_second_checkpoint)
    out = tmp_path / "out"
    result = run_cli(*args, "--output", out)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]  # beside the progress bar
    assert len(errors) == 1 and errors[0].startswith("sparsebert finetune: error: the disk is full")
    assert "--resume" in errors[0]
    # the checkpoint of step 4 was cut off half-written; step 2's is whole, and the run goes on from it
    assert (out / ".checkpoint-4.tmp").exists() and checkpoint.latest(out).name == "checkpoint-2"
    monkeypatch.setattr(checkpoint, "save_file", real_save_file)
    assert run_cli(*args, "--output", out, "--resume").returncode == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 6
    resumed, whole = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "whole" / "model.safetensors"))
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)


def test_a_presets_sparsity_is_kept_unless_the_run_gives_one(tmp_path):
    from sparsebert.config import RunConfig
    from sparsebert.jobs.run import new_jobs
    from sparsebert.output_folders import release_output_locks

    (tmp_path / "preset.yaml").write_text("teacher: {epochs: 1}\nprune: {sparsity: 0.5, max_steps: 10}\n")
    try:
        _, _, student = new_jobs(RunConfig(preset=str(tmp_path / "preset.yaml"), output=str(tmp_path / "a")))
        assert student.sparsity == 0.5
        _, _, student = new_jobs(RunConfig(preset=str(tmp_path / "preset.yaml"), output=str(tmp_path / "b"),
                                           sparsity=0.8))
        assert student.sparsity == 0.8
    finally:
        release_output_locks()


def test_an_export_cut_off_before_it_finished_is_refused_by_every_reader(tiny_teacher, tmp_path):
    result = run_cli("export", tiny_teacher, tmp_path / "exp", "--values", "fp32", "--embeddings", "fp32")
    assert result.returncode == 0, result.stderr
    (tmp_path / "exp" / "sparse_config.json").unlink()  # written last: what a crash mid-export leaves
    (tmp_path / "in.tsv").write_text("a sentence\tanother\n")
    for args in (("predict", tmp_path / "exp", "--input", tmp_path / "in.tsv"), ("evaluate", tmp_path / "exp")):
        assert_one_line(run_cli(*args), "an export that was cut off before it finished")


def test_a_model_fine_tuned_on_one_task_is_refused_for_another_of_the_same_size_and_prune_takes_its_teachers(
        tiny_model, tiny_teacher, tmp_path):
    """MRPC and RTE both have two labels: a size check alone would score the MRPC model on RTE."""
    refused = run_cli("evaluate", str(tiny_teacher), "--task", "rte")
    assert_one_line(refused, "the model was fine-tuned on MRPC, not RTE; give --task MRPC")
    rte_teacher = tmp_path / "rte-teacher"
    assert run_cli("finetune", "--model", str(tiny_model), "--task", "rte", "--output", str(rte_teacher),
                   "--max-train-samples", "16", "--epochs", "1", "--batch-size", "8").returncode == 0
    student = tmp_path / "student"
    pruned = run_cli("prune", "--teacher", str(rte_teacher), "--student", str(tiny_model), "--output", str(student),
                     "--max-train-samples", "16", "--max-steps", "2", "--batch-size", "8", "--sparsity", "0.5")
    assert pruned.returncode == 0, pruned.stderr
    assert yaml.safe_load((student / "config.yaml").read_text())["task"] == "RTE"
    assert json.loads((student / "config.json").read_text())["sparsebert_data"]["task"] == "RTE"
    wrong = run_cli("prune", "--task", "mrpc", "--teacher", str(rte_teacher), "--student", str(tiny_model),
                    "--output", str(tmp_path / "wrong"), "--max-train-samples", "16", "--max-steps", "2")
    assert_one_line(wrong, "the model was fine-tuned on RTE, not MRPC; give --task RTE")
    assert not (tmp_path / "wrong").exists() or not any((tmp_path / "wrong").iterdir())


def test_a_vocabulary_without_its_tokenizer_settings_is_refused(tiny_model, tmp_path):
    """Without tokenizer_config.json, transformers lower-cases by default: a cased model would read lower-cased text."""
    import shutil

    folder = tmp_path / "vocab-only"
    shutil.copytree(tiny_model, folder)
    from sparsebert.models import load_tokenizer

    vocab = load_tokenizer(str(folder)).get_vocab()
    (folder / "vocab.txt").write_text("".join(f"{token}\n" for token in sorted(vocab, key=vocab.get)))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    refused = run_cli("evaluate", str(folder), "--task", "mrpc")
    assert_one_line(refused, "a vocabulary without tokenizer.json or tokenizer_config.json")


def test_run_with_a_mistyped_model_writes_no_folder(tmp_path):
    """Else the folder's config.yaml would hold the wrong --model, and --resume would go on with it."""
    refused = run_cli("run", "--model", str(tmp_path / "no-such-model"), "--output", str(tmp_path / "run"))
    assert_one_line(refused, "no-such-model: model folder not found")
    assert not (tmp_path / "run").exists()


def test_evaluate_and_predict_truncate_as_the_model_was_trained(tiny_model, tmp_path):
    """A model trained on 32 tokens and scored on 128 would be judged on inputs it never saw."""
    out = tmp_path / "short"
    assert run_cli("finetune", "--model", str(tiny_model), "--output", str(out), "--max-train-samples", "16",
                   "--epochs", "1", "--batch-size", "8", "--max-seq-length", "32").returncode == 0
    assert json.loads((out / "config.json").read_text())["sparsebert_data"]["max_seq_length"] == 32
    import sparsebert

    recorded, told = sparsebert.evaluate(out), sparsebert.evaluate(out, max_seq_length=128)
    assert (recorded["max_seq_length"], told["max_seq_length"]) == (32, 128)
    assert recorded["f1"] == json.loads((out / "metrics.json").read_text())["final"]["f1"]  # as training scored it
    # a model fine-tuned elsewhere records no length: it is refused, not cut at 128 tokens
    refused = run_cli("evaluate", str(tiny_model), "--task", "mrpc")
    assert_one_line(refused, "the model records no length its examples were truncated to; give --max-seq-length")
    (tmp_path / "in.tsv").write_text("a sentence\tanother one\n")
    refused = run_cli("predict", str(tiny_model), "--input", str(tmp_path / "in.tsv"), "--output", str(tmp_path / "p.jsonl"))
    assert_one_line(refused, "the model records no length its examples were truncated to")
    assert not (tmp_path / "p.jsonl").exists()
    assert sparsebert.evaluate(str(tiny_model), task="mrpc", max_seq_length=64)["max_seq_length"] == 64
