import pytest

from sparsebert.errors import UserError
from sparsebert.tasks import TASKS, bundled_data_dir, get_task, load_split, read_glue_examples

# Canonical GLUE row counts (shared/data/glue/README.md)
BUNDLED = {"MRPC": (3668, 408), "RTE": (2490, 277), "CoLA": (8551, 1043), "STS-B": (5749, 1500),
           "WNLI": (635, 71), "QNLI": (None, 5463)}


@pytest.mark.parametrize("name", list(BUNDLED))
def test_bundled_files_have_canonical_row_counts(name):
    task = get_task(name)
    train_rows, dev_rows = BUNDLED[name]
    assert len(load_split(task, None, "dev")) == dev_rows
    if train_rows:
        assert len(load_split(task, None, "train")) == train_rows


def test_bundled_labels_and_texts_are_parsed():
    mrpc = load_split(get_task("mrpc"), None, "dev")
    assert {e.label for e in mrpc} == {0, 1}
    assert mrpc[0].text_a.startswith("He said the foodservice pie business")
    assert mrpc[0].line == 2
    stsb = load_split(get_task("sts-b"), None, "dev")
    assert stsb[0].label == 5.0 and stsb[0].text_b == "A man wearing a hard hat is dancing."
    cola = load_split(get_task("cola"), None, "train")
    assert cola[0].text_b is None and cola[0].label == 1
    rte = load_split(get_task("RTE"), None, "dev")
    assert rte[0].label == get_task("rte").labels.index("not_entailment")


@pytest.mark.parametrize("spelling,name", [("sst-2", "SST-2"), ("SST2", "SST-2"), ("sts-b", "STS-B"),
                                           ("stsb", "STS-B"), ("MNLI", "MNLI"), ("cola", "CoLA"), ("Qqp", "QQP")])
def test_task_names_any_case_with_or_without_hyphen(spelling, name):
    assert get_task(spelling).name == name


def test_nine_tasks_with_their_metrics():
    assert len(TASKS) == 9
    assert get_task("cola").metrics == ("matthews_corr",)
    assert get_task("mrpc").metrics == ("f1", "accuracy") and get_task("qqp").metrics == ("f1", "accuracy")
    assert get_task("stsb").metrics == ("spearman", "pearson") and get_task("stsb").is_regression
    for name in ("sst2", "qnli", "rte", "wnli", "mnli"):
        assert get_task(name).metrics == ("accuracy",)
    assert get_task("mnli").dev_files == ("dev_matched.tsv", "dev_mismatched.tsv")


def write(path, text, mode="w"):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_sst2_reader(tmp_path):
    f = write(tmp_path / "train.tsv", "sentence\tlabel\nit 's a charming journey . \t1\nbad film\t0\n")
    rows = read_glue_examples(get_task("sst-2"), f)
    assert [(r.text_a, r.label) for r in rows] == [("it 's a charming journey . ", 1), ("bad film", 0)]


def test_qqp_reader(tmp_path):
    f = write(tmp_path / "dev.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                                     "1\t3\t4\tHow do I learn?\tHow can I learn?\t1\n")
    (row,) = read_glue_examples(get_task("qqp"), f)
    assert (row.text_a, row.text_b, row.label) == ("How do I learn?", "How can I learn?", 1)


def test_mnli_reader_train_and_dev_differ_in_width(tmp_path):
    base = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
            "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
    train = write(tmp_path / "train.tsv", "\t".join(base + ["label1", "gold_label"]) + "\n" +
                  "\t".join(["0"] * 8 + ["A man sleeps.", "A person rests.", "entailment", "entailment"]) + "\n")
    dev = write(tmp_path / "dev_matched.tsv", "\t".join(base + [f"label{i}" for i in range(1, 6)] + ["gold_label"]) +
                "\n" + "\t".join(["0"] * 8 + ["A cat.", "A dog."] + ["neutral"] * 5 + ["contradiction"]) + "\n")
    task = get_task("mnli")
    assert read_glue_examples(task, train)[0].label == task.labels.index("entailment")
    assert read_glue_examples(task, dev)[0].label == task.labels.index("contradiction")


def test_qnli_train_reader(tmp_path):
    f = write(tmp_path / "train.tsv", "index\tquestion\tsentence\tlabel\n0\tWho?\tHim.\tentailment\n")
    assert read_glue_examples(get_task("qnli"), f)[0].label == 0


def test_bom_crlf_and_blank_lines_are_accepted(tmp_path):
    f = write(tmp_path / "dev.tsv", "\ufeffindex\tsentence1\tsentence2\tlabel\r\n0\ta\tb\t1\r\n\r\n1\tc\td\t0\r\n")
    rows = read_glue_examples(get_task("wnli"), f)
    assert [(r.text_b, r.label, r.line) for r in rows] == [("b", 1, 2), ("d", 0, 4)]


@pytest.mark.parametrize("content,message", [
    ("index\tsentence1\tsentence2\tlabel\n0\ta\tb\n", ":2: 3 columns where WNLI has 4"),
    ("index\tsentence1\tsentence2\tlabel\n0\ta\tb\t1\n1\ta\tb\tyes\n", ":3: unknown label 'yes'"),
    ("", "the file is empty"),
    ("index\tsentence1\tsentence2\tlabel\n", "has a header but no rows"),
    ("idx\tfoo\tbar\n0\ta\tb\n", ":1: header"),
])
def test_malformed_files_name_file_and_line(tmp_path, content, message):
    f = write(tmp_path / "train.tsv", content)
    with pytest.raises(UserError, match=message) as e:
        read_glue_examples(get_task("wnli"), f)
    assert str(f) in str(e.value)


def test_non_utf8_bytes_name_the_line(tmp_path):
    f = write(tmp_path / "train.tsv", b"index\tsentence1\tsentence2\tlabel\n0\tcaf\xe9\tb\t1\n", mode="wb")
    with pytest.raises(UserError, match=r"train.tsv:2: bytes that are not UTF-8"):
        read_glue_examples(get_task("wnli"), f)


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(UserError, match="data folder not found"):
        load_split(get_task("rte"), tmp_path / "nope", "train")
    with pytest.raises(UserError, match="train.tsv: file not found"):
        load_split(get_task("rte"), tmp_path, "train")


def test_stsb_score_must_be_a_number(tmp_path):
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    f = write(tmp_path / "dev.tsv", header + "0\tg\tf\ty\t0\tn\tn\ta\tb\thigh\n")
    with pytest.raises(UserError, match=":2: score 'high' is not a number"):
        read_glue_examples(get_task("stsb"), f)


def test_bundled_dir_exists_for_shipped_tasks():
    assert (bundled_data_dir(get_task("mrpc")) / "train.tsv").is_file()


def test_the_tasks_command_lists_the_nine_glue_tasks_with_what_is_bundled():
    """`sparsebert tasks` names each GLUE task with its metrics, and as bundled exactly the files that ship."""
    from pathlib import Path

    from conftest import run_cli

    result = run_cli("tasks")
    assert result.returncode == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert set(lines) == {"CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI"}
    shipped = Path(__file__).parents[1] / "src" / "sparsebert" / "glue"
    for name, line in lines.items():
        folder = shipped / name
        files = sorted(p.name for p in folder.glob("*.tsv")) if folder.is_dir() else []
        bundled = line.split("(bundled: ")[1].rstrip(")")
        assert sorted(bundled.split(", ")) == files if files else bundled == "none", line
    assert "matthews_corr" in lines["CoLA"] and "spearman" in lines["STS-B"] and "f1" in lines["MRPC"]
