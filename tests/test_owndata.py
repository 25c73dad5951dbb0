"""Your own data: CSV, TSV and JSON lines with named columns, string labels, regression, label names end to end."""

import csv
import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

import sparsebert
from sparsebert import datafiles
from sparsebert.errors import UserError

from conftest import run_cli

REVIEWS = [("a wonderful film, full of life", "good"), ("dull and far too long", "bad"),
           ("I loved every minute", "good"), ("a waste of an evening", "bad"), ("the cast is superb", "good"),
           ("nothing works in it", "bad"), ("warm, funny and wise", "good"), ("a mess from start to end", "bad")]


def write(path, rows, columns):
    """rows of dicts, in the format the suffix names."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, delimiter="\t" if path.suffix == ".tsv" else ",",
                                quoting=csv.QUOTE_NONE if path.suffix == ".tsv" else csv.QUOTE_MINIMAL)
        writer.writeheader()
        writer.writerows(rows)
    return path


def reviews(path, n=32):
    rows = [{"review": text, "id": i, "sentiment": label} for i, (text, label) in
            enumerate(REVIEWS * (n // len(REVIEWS)))]
    return write(path, rows, ["id", "review", "sentiment"])


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_each_format_reads_named_columns_and_string_labels(tmp_path, suffix):
    path = reviews(tmp_path / f"train{suffix}")
    task = datafiles.own_task(None, path, text="review", label_column="sentiment", regression=False, metric=None)
    assert (task.labels, task.metrics, task.text_b) == (("bad", "good"), ("accuracy", "f1_macro"), None)
    assert task.name == tmp_path.name  # a file named by its split is named by its folder
    examples = datafiles.read_own_examples(task, path)
    assert [(e.text_a, task.labels[e.label]) for e in examples[:2]] == list(REVIEWS[:2])
    assert examples[1].line == (2 if suffix == ".jsonl" else 3)  # CSV and TSV: the header is line 1


def test_pairs_quoted_csv_fields_and_regression_by_decimals(tmp_path):
    rows = [{"sentence1": f"a, \"quoted\" {i}", "sentence2": f"b {i}", "score": f"{i / 3:.2f}"} for i in range(12)]
    path = write(tmp_path / "sts.csv", rows, ["sentence1", "sentence2", "score"])
    task = datafiles.own_task("sts", path, text=None, label_column="score", regression=False, metric=None)
    assert task.is_regression and task.metrics == ("spearman", "pearson") and task.text_b == "sentence2"
    first = datafiles.read_own_examples(task, path)[1]
    assert (first.text_a, first.text_b, first.label) == ('a, "quoted" 1', "b 1", pytest.approx(0.33))
    stars = write(tmp_path / "stars.jsonl", [{"text": "x", "label": i % 5 + 1} for i in range(20)], [])
    assert datafiles.own_task(None, stars, text=None, label_column="label", regression=False,
                              metric=None).labels == ("1", "2", "3", "4", "5")  # whole numbers: class names


def test_bad_files_are_one_line_naming_file_and_line(tmp_path):
    train = reviews(tmp_path / "train.csv")
    task = datafiles.own_task(None, train, text="review", label_column="sentiment", regression=False, metric=None)
    (tmp_path / "dev.csv").write_text("id,review,sentiment\n1,fine,good\n2,odd,meh\n")
    with pytest.raises(UserError, match=r"dev.csv:3: label 'meh' is not among the training file's labels \(bad, good\)"):
        datafiles.read_own_examples(task, tmp_path / "dev.csv")
    (tmp_path / "short.csv").write_text("id,review,sentiment\n1,fine\n")
    with pytest.raises(UserError, match=r"short.csv:2: 2 fields where the header has 3"):
        datafiles.read_own_examples(task, tmp_path / "short.csv")
    (tmp_path / "bad.jsonl").write_text('{"review": "ok", "sentiment": "good"}\n{"review": ["a"], "sentiment": "bad"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: a text field is missing or not a string"):
        datafiles.read_own_examples(task, tmp_path / "bad.jsonl")
    # JSON lines named .json are JSON lines; a TSV named .json is refused, not read as something else
    (tmp_path / "lines.json").write_text('{"review": "ok", "sentiment": "good"}\n')
    assert datafiles.read_own_examples(task, tmp_path / "lines.json")[0].text_a == "ok"
    (tmp_path / "table.json").write_text("review\tsentiment\nok\tgood\n")
    with pytest.raises(UserError, match="named .json but its first line is not a JSON object"):
        datafiles.read_records(tmp_path / "table.json")
    with pytest.raises(UserError, match="no column 'text'.*it has id, review, sentiment"):
        datafiles.own_task(None, train, text="text", label_column="sentiment", regression=False, metric=None)
    with pytest.raises(UserError, match="--metric f1 does not fit"):
        datafiles.own_task(None, write(tmp_path / "three.csv", [{"text": "a", "label": c} for c in "xyz"],
                                       ["text", "label"]), text=None, label_column="label", regression=False, metric="f1")


def test_files_as_editors_and_spreadsheets_write_them(tmp_path):
    """A byte-order mark, CRLF line ends, a quoted field spanning lines and empty trailing columns read as the text
    they hold."""
    content = "\ufeffreview,sentiment,,\r\ngood film,good,,\r\n\"long,\r\ndull\",bad,,\r\nfine,good,,\r\n"
    (tmp_path / "train.csv").write_bytes(content.encode("utf-8"))
    task = datafiles.own_task(None, tmp_path / "train.csv", text="review", label_column="sentiment",
                              regression=False, metric=None)  # the BOM is not part of the first column's name
    examples = datafiles.read_own_examples(task, tmp_path / "train.csv")
    assert [(e.text_a, task.labels[e.label], e.line) for e in examples] == [
        ("good film", "good", 2), ("long,\r\ndull", "bad", 4), ("fine", "good", 5)]


@pytest.mark.parametrize("name,content,options,message", [
    ("header.csv", "text,label\n", {}, "header.csv: no rows"),
    ("array.json", '[{"text": "a", "label": "x"}]\n', {}, "array.json: a JSON array; give JSON lines"),
    ("nolabel.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n', {},
     "nolabel.jsonl:2: no label \\(column or key 'label'\\); give every row its label"),
    ("empty.csv", "text,label\na,x\nb,\nc,y\n", {}, "empty.csv:3: no label"),
    ("single.csv", "text,label\na,yes\nb,yes\n", {}, "every row has the label 'yes'; a classifier needs two"),
    # a quote left open would swallow every row after it into one text; one closed early would lose its quotes
    ("unclosed.csv", 'text,label\nfirst,x\n"second,y\nthird,x\nfourth,y\n', {},
     "unclosed.csv:3: not valid CSV .*a quoted field that opens in this row is never closed"),
    ("stray.csv", 'text,label\nfirst,x\n"sec"ond,y\n', {}, "stray.csv:3: not valid CSV"),
    # a column or key given twice: one of them would be read and the other silently dropped
    ("twice.csv", "text,label,label\na,x,y\nb,y,x\n", {}, "twice.csv:1: the header names the column 'label' twice"),
    ("twice.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": "x", "label": "y"}\n', {},
     'twice.jsonl:2: the key "label" is given twice in one object'),
    # a question beside a sentence: training on the sentence alone would drop half of every example
    ("qnli.csv", "question,sentence,label\nWhat is it?,It is a cat.,yes\nWho?,Nobody.,no\n", {},
     "qnli.csv: the columns sentence, question could each hold the text; give --text-columns"),
    ("deep.jsonl", '{"text": ' + "[" * 100000 + "]" * 100000 + ', "label": "x"}\n', {},
     "deep.jsonl:1: JSON nested too deeply to read"),
])
def test_files_that_cannot_define_a_task_are_one_line_naming_what(tmp_path, name, content, options, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(UserError, match=message):
        task = datafiles.own_task(None, tmp_path / name, text=None, label_column="label", regression=False,
                                  metric=None, **options)
        datafiles.read_own_examples(task, tmp_path / name)


def test_decimal_labels_are_a_regression_in_every_format(tmp_path):
    rows = [{"text": f"review {i}", "score": float(i % 3 * 2)} for i in range(9)]  # 0.0, 2.0, 4.0
    for suffix in (".csv", ".jsonl"):
        path = write(tmp_path / f"scores{suffix}", [{**r, "score": f"{r['score']:.1f}"} for r in rows]
                     if suffix == ".csv" else rows, ["text", "score"])
        task = datafiles.own_task(None, path, text=None, label_column="score", regression=False, metric=None)
        assert task.is_regression, suffix
        assert [e.label for e in datafiles.read_own_examples(task, path)][:3] == [0.0, 2.0, 4.0]


def test_f1_on_named_classes_scores_the_positive_label_it_is_given_and_no_other(tiny_model, tmp_path):
    from sklearn.metrics import f1_score

    rows = [{"sentence1": f"a {i}", "sentence2": f"b {i}", "label": ("equivalent", "not_equivalent")[i % 3 == 0]}
            for i in range(24)]
    pairs = write(tmp_path / "pairs.csv", rows, ["sentence1", "sentence2", "label"])
    options = dict(text=None, label_column="label", regression=False, metric="f1")
    with pytest.raises(UserError, match=r"--metric f1 is the F1 of one class: give --positive-label \(one of "
                                        r"equivalent, not_equivalent\)"):
        datafiles.own_task(None, pairs, **options)
    with pytest.raises(UserError, match=r"--positive-label yes: not one of the labels"):
        datafiles.own_task(None, pairs, **options, positive="yes")
    common = ["--model", tiny_model, "--train-file", pairs, "--validation-file", pairs, "--metric", "f1",
              "--positive-label", "equivalent", "--max-steps", "2", "--batch-size", "8"]
    result = run_cli("finetune", *common, "--output", tmp_path / "teacher")
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "teacher" / "config.json").read_text())
    assert saved["sparsebert_data"]["positive_label"] == "equivalent"
    # the score is scikit-learn's F1 of "equivalent" on the model's own predictions; evaluate takes the positive
    # label from the model's record
    result = run_cli("predict", tmp_path / "teacher", "--input", pairs, "--dense")
    predicted = [json.loads(line)["label"] for line in result.stdout.splitlines()]
    expected = f1_score([r["label"] for r in rows], predicted, pos_label="equivalent")
    assert sparsebert.evaluate(tmp_path / "teacher", validation_file=pairs)["f1"] == pytest.approx(expected)
    assert json.loads((tmp_path / "teacher" / "metrics.json").read_text())["final"]["f1"] == pytest.approx(expected)
    assert "f1" not in sparsebert.evaluate(tmp_path / "teacher", validation_file=pairs, metric="accuracy")
    with pytest.raises(UserError, match="--positive-label names the class that --metric f1 scores; the main metric"):
        datafiles.own_task(None, pairs, **{**options, "metric": None}, positive="equivalent")
    assert run_cli("finetune", *common[:6], "--positive-label", "equivalent", "--output", tmp_path / "x").returncode == 2


def test_a_model_of_whole_number_classes_reads_them_written_as_floats(tmp_path):
    """pandas writes a label column of 0 and 1 as 0.0 and 1.0 when its type is float: a model trained on the
    classes 0 and 1 (by an earlier version, which read them so) reads them as its classes."""
    dev = write(tmp_path / "dev.jsonl", [{"text": f"r{i}", "label": float(i % 2)} for i in range(4)], [])
    task = datafiles.own_task(None, dev, text="text", label_column="label", regression=False, metric=None,
                              labels=("0", "1"))
    assert [e.label for e in datafiles.read_own_examples(task, dev)] == [0, 1, 0, 1]


def test_whole_numbers_are_classes_unless_regression_is_asked(tmp_path):
    (tmp_path / "stars.csv").write_text("text,label\n" + "".join(f"review {i},{i % 5 + 1}\n" for i in range(10)))
    as_classes = datafiles.own_task(None, tmp_path / "stars.csv", text=None, label_column="label", regression=False,
                                    metric=None)
    as_scores = datafiles.own_task(None, tmp_path / "stars.csv", text=None, label_column="label", regression=True,
                                   metric=None)
    assert as_classes.labels == ("1", "2", "3", "4", "5") and not as_classes.is_regression
    assert as_scores.is_regression and as_scores.main_metric == "spearman"
    assert [e.label for e in datafiles.read_own_examples(as_scores, tmp_path / "stars.csv")][:3] == [1.0, 2.0, 3.0]


def test_the_regression_flag_on_the_command_line_trains_a_regression_on_whole_numbers(tiny_model, tmp_path):
    """--regression from the command line: star ratings as scores to predict (one output, Spearman), where the
    same file without it is five classes; `predict` then gives a score a row."""
    stars = tmp_path / "stars.csv"
    stars.write_text("text,label\n" + "".join(f"review {i},{i % 5 + 1}\n" for i in range(20)))
    common = ["--model", tiny_model, "--train-file", stars, "--validation-file", stars, "--epochs", "1",
              "--batch-size", "10"]
    for flags, folder in (([], "classes"), (["--regression"], "scores")):
        result = run_cli("finetune", *common, *flags, "--output", tmp_path / folder)
        assert result.returncode == 0, result.stderr
    classes, scores = (json.loads((tmp_path / f / "config.json").read_text()) for f in ("classes", "scores"))
    assert len(classes["id2label"]) == 5 and classes.get("problem_type") != "regression"
    assert scores["problem_type"] == "regression" and len(scores["id2label"]) == 1
    assert set(json.loads((tmp_path / "scores" / "metrics.json").read_text())["final"]) == {"spearman", "pearson"}
    assert "regression: true" in (tmp_path / "scores" / "config.yaml").read_text()
    (tmp_path / "new.csv").write_text("text\nreview 3\n")
    result = run_cli("predict", tmp_path / "scores", "--input", tmp_path / "new.csv", "--dense")
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout.splitlines()[0])) == {"line", "score"}


def test_own_data_end_to_end_with_label_names(tiny_model, tmp_path):
    """finetune -> prune -> export -> predict on a CSV of reviews; the label names everywhere, and `pipeline`
    on the saved folders."""
    train, dev = reviews(tmp_path / "train.csv", 64), reviews(tmp_path / "dev.csv", 16)
    data = dict(train_file=train, validation_file=dev, text_columns=["review"], label_column="sentiment")
    teacher = sparsebert.finetune(model=str(tiny_model), output=tmp_path / "teacher", epochs=2, batch_size=16,
                                  learning_rate=1e-3, **data)
    assert set(teacher["final"]) == {"accuracy", "f1_macro"}
    student = sparsebert.prune(teacher=tmp_path / "teacher", student=str(tiny_model), output=tmp_path / "student",
                               max_steps=6, batch_size=16, sparsity=0.5, prune_events=2, **data)
    for folder in ("teacher", "student"):
        config = json.loads((tmp_path / folder / "config.json").read_text())
        assert config["id2label"] == {"0": "bad", "1": "good"}
        assert config["sparsebert_data"]["text_columns"] == "review"
        card = (tmp_path / folder / "README.md").read_text()
        assert "`bad`, `good`" in card and "config.yaml" in card
        # the folder opens in transformers' pipeline, which gives the model's own label names and probabilities
        classify = pipeline("text-classification", model=str(tmp_path / folder), top_k=None)
        model = AutoModelForSequenceClassification.from_pretrained(tmp_path / folder).eval()
        with torch.inference_mode():
            probs = model(**AutoTokenizer.from_pretrained(tmp_path / folder)("a wonderful film", return_tensors="pt")
                          ).logits.softmax(-1)[0]
        assert {r["label"]: r["score"] for r in classify(["a wonderful film"])[0]} == pytest.approx(
            {"bad": float(probs[0]), "good": float(probs[1])}, abs=1e-6)
    assert "50.0% of the encoder's linear weights are zero" in (tmp_path / "student" / "README.md").read_text()
    again = sparsebert.evaluate(tmp_path / "student", validation_file=dev)
    assert again["accuracy"] == student["final"]["accuracy"]  # columns and labels from the model itself

    result = run_cli("export", tmp_path / "student", tmp_path / "exported")
    assert result.returncode == 0, result.stderr
    assert "`bad`, `good`" in (tmp_path / "exported" / "README.md").read_text()
    new = write(tmp_path / "new.csv", [{"id": 1, "review": "superb"}, {"id": 2, "review": "dull"}], ["id", "review"])
    result = run_cli("predict", tmp_path / "exported", "--input", new)  # the model's own text column
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["line"] for r in lines] == [2, 3]
    # each row's label and probabilities are the exported model's own, for that row's text
    engine = sparsebert.load_sparse(tmp_path / "exported")
    with torch.inference_mode():
        probs = engine(**engine.tokenizer(["superb", "dull"], padding=True, return_tensors="pt")).logits.softmax(-1)
    for r, p in zip(lines, probs):
        assert r["probabilities"] == pytest.approx({"bad": float(p[0]), "good": float(p[1])}, abs=2e-6)
        assert r["label"] == ("bad", "good")[int(p.argmax())]
    # a file without the model's column is refused, not read by the usual names (its `text` is not a review)
    other = write(tmp_path / "other.csv", [{"id": 1, "text": "superb"}], ["id", "text"])
    refused = run_cli("predict", tmp_path / "exported", "--input", other)
    assert refused.returncode == 2 and f"{other}: no column 'review'" in refused.stderr and not refused.stdout
    (tmp_path / "other.jsonl").write_text('{"text": "superb"}\n')
    refused = run_cli("predict", tmp_path / "exported", "--input", tmp_path / "other.jsonl")
    assert refused.returncode == 2 and 'other.jsonl:1: no "review" field' in refused.stderr
    # predictions never replace their input
    result = run_cli("predict", tmp_path / "exported", "--input", new, "--output", new, "--overwrite")
    assert result.returncode == 2 and "is the input file" in result.stderr
    assert "superb" in new.read_text()


def test_glue_models_carry_the_task_label_names(tiny_teacher):
    config = json.loads((tiny_teacher / "config.json").read_text())
    assert config["id2label"] == {"0": "not_equivalent", "1": "equivalent"}
    assert config["sparsebert_data"] == {"task": "MRPC", "max_seq_length": 128}


def test_a_dev_label_unseen_in_training_stops_before_anything_is_written(tiny_model, tmp_path):
    train = reviews(tmp_path / "train.csv")
    (tmp_path / "dev.csv").write_text("id,review,sentiment\n1,fine,good\n2,odd,meh\n")
    result = run_cli("finetune", "--model", tiny_model, "--train-file", train, "--validation-file",
                     tmp_path / "dev.csv", "--text-columns", "review", "--label-column", "sentiment",
                     "--output", tmp_path / "out")
    assert result.returncode == 2 and "dev.csv:3: label 'meh'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_label_of_nan_or_inf_is_refused_with_its_line_not_read_as_a_class_or_a_regression(tmp_path):
    rows = [{"text": f"sentence {i}", "label": label} for i, label in enumerate(["0", "1", "nan", "1"])]
    path = write(tmp_path / "train.csv", rows, ["text", "label"])
    with pytest.raises(UserError, match=r"train.csv:4: label 'nan' is not a finite number"):
        datafiles.own_task(None, path, text=None, label_column="label", regression=False, metric=None)
    scores = write(tmp_path / "scores.csv", [{"text": "a", "label": "0.5"}, {"text": "b", "label": "inf"}],
                   ["text", "label"])
    task = datafiles.own_task(None, scores, text=None, label_column="label", regression=True, metric=None)
    with pytest.raises(UserError, match=r"scores.csv:3: label 'inf' is not a number"):
        datafiles.read_own_examples(task, scores)
