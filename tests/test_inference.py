"""Where the project infers something (the task, the columns, the precision), it takes what the model recorded or
refuses with one line; it never falls back to a default that answers about something else."""

import json
from pathlib import Path

import pytest

import sparsebert
from conftest import run_cli
from sparsebert.config import AugmentConfig
from sparsebert.errors import UserError


@pytest.fixture(scope="module")
def rte_model(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("rte") / "model"
    result = run_cli("finetune", "--task", "rte", "--model", tiny_model, "--output", out, "--max-train-samples", "16",
                     "--max-steps", "2", "--batch-size", "8")
    assert result.returncode == 0, result.stderr
    return out


def test_evaluate_without_a_task_scores_the_task_the_model_was_trained_on(rte_model):
    result = sparsebert.evaluate(str(rte_model))
    assert result["task"] == "RTE" and "accuracy" in result and "f1" not in result
    assert sparsebert.evaluate(str(rte_model), task="rte")["accuracy"] == result["accuracy"]


def test_a_model_that_records_no_task_is_refused_not_scored_on_mrpc(tiny_model):
    refused = run_cli("evaluate", tiny_model)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "the model records no task it was trained on; give --task" in refused.stderr
    # nor is a teacher that records none taken for an MRPC teacher by prune
    student = Path(tiny_model).parent / "student-of-an-unknown-task"
    refused = run_cli("prune", "--teacher", tiny_model, "--student", tiny_model, "--output", student, "--max-steps", "1")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr and not student.exists()
    assert "the teacher records no task it was fine-tuned on; give --task" in refused.stderr


def test_a_model_of_your_own_files_needs_them_to_be_evaluated(tiny_model, tmp_path):
    rows = "sentence,verdict\n" + "".join(f"a sentence {i},{'yes' if i % 2 else 'no'}\n" for i in range(16))
    (tmp_path / "train.csv").write_text(rows)
    out = tmp_path / "own"
    assert run_cli("finetune", "--model", tiny_model, "--train-file", tmp_path / "train.csv", "--validation-file",
                   tmp_path / "train.csv", "--text-columns", "sentence", "--label-column", "verdict", "--max-steps", "1",
                   "--output", out).returncode == 0
    refused = run_cli("evaluate", out)
    assert refused.returncode != 0 and "trained on your own files (task '" in refused.stderr
    assert refused.stderr.strip().endswith("'); give --validation-file")


def test_predict_reads_a_tsv_header_of_text_columns_as_a_header(tiny_teacher, tmp_path):
    (tmp_path / "pairs.tsv").write_text("sentence1\tsentence2\nThe cat sat.\tA cat sat.\nIt rained.\tThe sun shone.\n")
    result = run_cli("predict", tiny_teacher, "--input", tmp_path / "pairs.tsv")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["line"] for line in result.stdout.splitlines()] == [2, 3]
    (tmp_path / "plain.tsv").write_text("The cat sat.\tA cat sat.\n")  # no header: the first line is a pair
    result = run_cli("predict", tiny_teacher, "--input", tmp_path / "plain.tsv")
    assert [json.loads(line)["line"] for line in result.stdout.splitlines()] == [1]


def test_a_first_line_the_csv_reader_cannot_read_is_one_line_naming_it(tmp_path):
    from sparsebert.inference_files import read_inputs

    (tmp_path / "cr.txt").write_text("hello\rworld\nsecond line\n", newline="")
    (tmp_path / "open.csv").write_text('text,"label\nfirst,x\n')
    for name in ("cr.txt", "open.csv"):
        with pytest.raises(UserError, match=rf"{name}:1: not valid (TSV|CSV)"):
            list(read_inputs(tmp_path / name, None, False))


def test_a_tsv_header_with_a_label_column_is_a_header_and_a_guess_between_texts_is_refused(tmp_path):
    from sparsebert.inference_files import read_inputs

    (tmp_path / "dev.tsv").write_text("text\tlabel\nGreat movie\t1\nAwful\t0\n")
    assert list(read_inputs(tmp_path / "dev.tsv", None, False)) == [(2, ("Great movie", None)), (3, ("Awful", None))]
    (tmp_path / "qnli.jsonl").write_text('{"question": "What is it?", "sentence": "It is a cat."}\n')
    with pytest.raises(UserError, match=r"qnli.jsonl:1: the keys sentence, question do not say which text comes "
                                        "first; give --text-columns FIRST,SECOND"):
        list(read_inputs(tmp_path / "qnli.jsonl", None, False))
    assert list(read_inputs(tmp_path / "qnli.jsonl", "question,sentence", True)) == [
        (1, ("What is it?", "It is a cat."))]


def test_predict_reads_a_header_by_its_names_not_its_order(rte_model, tiny_teacher, tmp_path):
    pairs = [("The cat sat on the mat.", "A cat sat."), ("It rained all day.", "The sun shone.")]
    (tmp_path / "ordered.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in pairs))
    (tmp_path / "swapped.tsv").write_text("".join(f"{b}\t{a}\n" for a, b in pairs))
    for name, header in (("usual", "sentence2\tsentence1"), ("mrpc", "#2 String\t#1 String")):
        (tmp_path / f"{name}.tsv").write_text(f"{header}\n" + "".join(f"{b}\t{a}\n" for a, b in pairs))

    def predictions(model, name, *extra):
        result = run_cli("predict", model, "--input", tmp_path / name, *extra)
        assert result.returncode == 0, result.stderr
        return [json.loads(line)["probabilities"] for line in result.stdout.splitlines()]

    for model in (rte_model, tiny_teacher):
        ordered = predictions(model, "ordered.tsv")
        assert predictions(model, "swapped.tsv") != ordered  # the order of a pair matters to the model
        assert predictions(model, "usual.tsv") == ordered  # the usual names, by what each means
    assert predictions(tiny_teacher, "mrpc.tsv") == ordered  # the MRPC model's own columns, by name
    (tmp_path / "unclear.tsv").write_text("question\tsentence\n" + "".join(f"{a}\t{b}\n" for a, b in pairs))
    refused = run_cli("predict", tiny_teacher, "--input", tmp_path / "unclear.tsv")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "unclear.tsv:1: the header question, sentence does not say which text comes first" in refused.stderr
    assert predictions(tiny_teacher, "unclear.tsv", "--text-columns", "question,sentence") == ordered
    refused = run_cli("predict", tiny_teacher, "--input", tmp_path / "unclear.tsv", "--text-columns", "question,sentence,x")
    assert refused.returncode == 2 and "--text-columns question,sentence,x: give one column, or two" in refused.stderr


def test_predict_gives_a_pair_model_pairs_and_a_single_text_model_single_texts(tiny_teacher, tmp_path):
    """The MRPC model reads pairs: a file of single sentences is refused at its first row, not scored."""
    (tmp_path / "single.csv").write_text("id,text\n1,The cat sat.\n")
    refused = run_cli("predict", tiny_teacher, "--input", tmp_path / "single.csv")
    assert refused.returncode == 2 and "single.csv:2: one text where the model reads pairs" in refused.stderr
    (tmp_path / "mixed.tsv").write_text("The cat sat.\tA cat sat.\nIt rained.\n")
    refused = run_cli("predict", tiny_teacher, "--input", tmp_path / "mixed.tsv")
    assert refused.returncode == 2 and "mixed.tsv:2: one text where the model reads pairs" in refused.stderr


def test_fp16_on_a_cpu_is_refused_before_anything_is_written(tiny_model, tmp_path):
    refused = run_cli("finetune", "--model", tiny_model, "--max-steps", "1", "--precision", "fp16", "--device", "cpu",
                      "--output", tmp_path / "out")
    assert refused.returncode != 0 and "--precision fp16 needs a GPU; this run is on the cpu" in refused.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, noted", [("fma avx2", True), ("avx2 avx512f avx512_bf16", False), ("avx2 amx_bf16", False)])
def test_bf16_on_a_cpu_without_bf16_instructions_says_fp32_is_faster(flags, noted, monkeypatch, tmp_path, capsys):
    from sparsebert import distributed
    from sparsebert.sparse import calibration

    (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n\n")
    monkeypatch.setattr(calibration, "CPUINFO", tmp_path / "cpuinfo")
    calibration.instruction_sets.cache_clear()
    try:
        distributed.start("cpu", "bf16")
        distributed.start("cpu", "fp32")
    finally:
        monkeypatch.undo()
        calibration.instruction_sets.cache_clear()
    said = capsys.readouterr().err
    assert ("runs emulated" in said) == noted and said.count("\n") == noted


def test_a_config_object_of_another_job_is_a_clear_type_error(tmp_path):
    with pytest.raises(TypeError, match=r"sparsebert.finetune\(config=...\) takes a FinetuneConfig or a YAML file's "
                                        r"path, not a PruneConfig"):
        sparsebert.finetune(config=sparsebert.PruneConfig(teacher="t", output=str(tmp_path / "o")))


@pytest.mark.parametrize("options, message", [(dict(n_aug=-1), "--n-aug must be >= 0"),
                                              (dict(prob=2.0), "--prob in [0, 1]")])
def test_augment_settings_are_checked_by_its_config(options, message, tmp_path):
    with pytest.raises(sparsebert.UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        AugmentConfig(output=str(tmp_path / "a.tsv"), **options)


@pytest.mark.parametrize("suffix,header,row", [
    (".tsv", "", "sentence number {i}\tand its pair {i}\n"),
    (".csv", "id,text\n", '{i},"a sentence, number {i}"\n'),
    (".jsonl", "", '{{"text_a": "sentence {i}", "text_b": "its pair {i}"}}\n'),
])
def test_predict_reads_its_input_as_it_goes_in_steady_memory(tmp_path, suffix, header, row):
    import tracemalloc

    from sparsebert.inference_files import read_inputs

    big = tmp_path / f"big{suffix}"
    with open(big, "w") as f:
        f.write(header)
        f.writelines(row.format(i=i) for i in range(200_000))
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_inputs(big, None, False))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 200_000
    assert peak < 2_000_000, f"{peak} bytes held"  # the rows held at once would take 40 MB or more


def test_predict_in_several_chunks_answers_as_in_one_and_a_bad_row_leaves_no_file(tiny_teacher, tmp_path):
    pairs = [(f"The cat number {i} sat.", f"A cat {i} sat down.") for i in range(10)]
    (tmp_path / "pairs.tsv").write_text("sentence1\tsentence2\n" + "".join(f"{a}\t{b}\n" for a, b in pairs))
    outputs = {}
    for name, options in [("one", ["--chunk", "100"]), ("chunks", ["--chunk", "3"]), ("dense", ["--chunk", "4", "--dense"])]:
        result = run_cli("predict", tiny_teacher, "--input", tmp_path / "pairs.tsv", "--output", tmp_path / f"{name}.jsonl",
                         *options)
        assert result.returncode == 0, result.stderr
        outputs[name] = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
    assert [r["line"] for r in outputs["chunks"]] == list(range(2, 12))
    assert outputs["chunks"] == outputs["one"]
    for engine, dense in zip(outputs["one"], outputs["dense"]):
        assert engine["label"] == dense["label"]
        for label, p in engine["probabilities"].items():
            assert p == pytest.approx(dense["probabilities"][label], abs=1e-3)
    (tmp_path / "bad.tsv").write_text("sentence1\tsentence2\n" + "".join(f"{a}\t{b}\n" for a, b in pairs) + "x\ty\tz\n")
    refused = run_cli("predict", tiny_teacher, "--input", tmp_path / "bad.tsv", "--output", tmp_path / "bad.jsonl",
                      "--chunk", "3")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "bad.tsv:12: 3 fields where the header has 2" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if "bad" in p.name) == ["bad.tsv"]  # no file, half or whole
    (tmp_path / "header.tsv").write_text("sentence1\tsentence2\n")
    refused = run_cli("predict", tiny_teacher, "--input", tmp_path / "header.tsv", "--output", tmp_path / "h.jsonl")
    assert refused.returncode == 2 and "header.tsv: no rows to predict" in refused.stderr
    assert not (tmp_path / "h.jsonl").exists()


def test_embed_writes_chunk_by_chunk_the_matrix_of_one_pass(tmp_path, monkeypatch):
    import numpy as np
    from conftest import make_tiny_encoder

    model = make_tiny_encoder(tmp_path / "sentence-model")

    monkeypatch.setattr("sparsebert.jobs.embed.CHUNK", 3)
    sentences = [f"sentence {i} " + "word " * (i % 5) for i in range(11)]
    (tmp_path / "s.txt").write_text("\n".join(sentences) + "\n")
    assert run_cli("embed", model, "--input", tmp_path / "s.txt", "--output", tmp_path / "e.npy").returncode == 0
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), sparsebert.load_sparse(model).encode(sentences),
                               atol=1e-6)
    assert run_cli("embed", model, "--input", tmp_path / "s.txt", "--output", tmp_path / "e.jsonl").returncode == 0
    assert [json.loads(line)["line"] for line in (tmp_path / "e.jsonl").read_text().splitlines()] == list(range(1, 12))
    (tmp_path / "late.txt").write_text("\n".join(sentences) + "\nlast\tpair\n")
    refused = run_cli("embed", model, "--input", tmp_path / "late.txt", "--output", tmp_path / "late.npy")
    assert "late.txt:12: two texts on a row" in refused.stderr and not (tmp_path / "late.npy").exists()


def test_regression_end_to_end_scores_as_hugging_face_and_scipy_do(tiny_model, tmp_path):
    """STS-B: a teacher fine-tuned, a student pruned while distilling the teacher's scores, its predictions
    through the engine equal to Hugging Face's, its Spearman equal to scipy's."""
    import numpy as np
    import torch
    from scipy.stats import spearmanr
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sparsebert.tasks import get_task, load_split

    teacher, student = tmp_path / "teacher", tmp_path / "student"
    assert run_cli("finetune", "--task", "stsb", "--model", tiny_model, "--max-train-samples", "32", "--max-steps",
                   "3", "--batch-size", "8", "--output", teacher).returncode == 0
    pruned = run_cli("prune", "--task", "stsb", "--teacher", teacher, "--student", tiny_model, "--max-train-samples",
                     "32", "--max-steps", "4", "--batch-size", "8", "--sparsity", "0.5", "--output", student)
    assert pruned.returncode == 0, pruned.stderr
    step = next(json.loads(line) for line in (student / "log.jsonl").read_text().splitlines() if '"loss"' in line)
    assert step["prediction"] > 0  # the regression distillation term (MSE to the teacher's score) is there
    dev = load_split(get_task("stsb"), None, "dev")[:40]
    hf = AutoModelForSequenceClassification.from_pretrained(student).eval()
    tokenizer = AutoTokenizer.from_pretrained(student)
    with torch.no_grad():
        expected = [hf(**tokenizer(e.text_a, e.text_b, return_tensors="pt")).logits[0, 0].item() for e in dev]
    (tmp_path / "pairs.tsv").write_text("".join(f"{e.text_a}\t{e.text_b}\n" for e in dev))
    result = run_cli("predict", student, "--input", tmp_path / "pairs.tsv")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["line"] for r in lines] == list(range(1, 41)) and all(set(r) == {"line", "score"} for r in lines)
    np.testing.assert_allclose([r["score"] for r in lines], expected, atol=1e-4)
    every = load_split(get_task("stsb"), None, "dev")
    with torch.no_grad():
        scores = [hf(**tokenizer(e.text_a, e.text_b, return_tensors="pt")).logits[0, 0].item() for e in every]
    assert sparsebert.evaluate(str(student))["spearman"] == pytest.approx(
        spearmanr(scores, [e.label for e in every]).statistic, abs=1e-4)


def test_bench_times_the_dev_set_of_the_task_the_model_was_trained_on(rte_model, tiny_model, tmp_path):
    quick = ("--engines", "pytorch-fp32", "--batch-sizes", "1", "--seq-length", "16", "--threads", "1", "--repeats",
             "1", "--warmup", "0", "--json")
    result = run_cli("bench", "--model", rte_model, *quick, tmp_path / "rte.json")
    assert result.returncode == 0, result.stderr
    dev = [r for r in json.loads((tmp_path / "rte.json").read_text()) if "dataset" in r]
    assert [(r["dataset"], r["examples"]) for r in dev] == [("rte", 277)]  # RTE's dev set, not MRPC's 408 pairs
    refused = run_cli("bench", "--model", tiny_model, *quick, tmp_path / "tiny.json")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and not (tmp_path / "tiny.json").exists()
    assert "the model records no task it was trained on; give --dev-task TASK (a GLUE task) or none" in refused.stderr
    refused = run_cli("bench", "--dev-task", "mrcp", *quick, tmp_path / "typo.json")
    assert refused.returncode == 2 and "unknown task 'mrcp'" in refused.stderr
