"""Your own data: CSV, TSV or JSON lines files with named columns, and the task they define.

The format is read from the content where it tells (a first line that opens a JSON object is JSON lines,
whatever the file is called) and otherwise from the suffix; a file that fits neither is refused. The label
set is the training file's (any strings, whole numbers as class names), sorted, so the same files give the same
label ids; decimal labels (or --regression) make a regression; a dev label the training file lacks is an error naming its file and line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from .errors import UserError
from .tasks import Example, Task, is_number, with_main_metric
from .textfiles import first_line, table_rows, text_lines

SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
DEFAULT_TEXT_COLUMNS = (("text",), ("sentence1", "sentence2"), ("sentence",), ("text_a", "text_b"))
# the usual names of a first and a second text (GLUE's, Hugging Face's): a column so named holds a text
FIRST_TEXTS = ("text_a", "text", "sentence", "sentence1", "question", "question1")
SECOND_TEXTS = ("text_b", "sentence2", "question2")


def file_format(path: Path, first: str) -> str:
    """"csv", "tsv" or "jsonl", from the file's first line that is not blank and its suffix."""
    if first.lstrip().startswith("{"):
        return "jsonl"
    if first.lstrip().startswith("["):
        raise UserError(f"{path}: a JSON array; give JSON lines, one object per line")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind == "jsonl":
        raise UserError(f"{path}:1: the file is named {path.suffix} but its first line is not a JSON object")
    if kind is None:
        kind = "tsv" if "\t" in first else "csv" if "," in first else None
    if kind is None:
        raise UserError(f"{path}: cannot tell whether it is CSV, TSV or JSON lines; name it .csv, .tsv or .jsonl")
    return kind


def default_name(path: Path) -> str:
    """The task's name when --task gives none: the file's, or its folder's for a file named by its split."""
    return path.parent.name if path.stem.lower() in ("train", "training", "dev", "validation", "valid") else path.stem


class RepeatedKey(ValueError):
    pass


def once_each(pairs: list[tuple]) -> dict:
    """A JSON object's pairs as a dict, where json.loads would keep the last of a key given twice."""
    record = dict(pairs)
    if len(record) != len(pairs):
        raise RepeatedKey(next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i])))
    return record


def json_object(path: Path, number: int, line: str) -> dict:
    """One line of a JSON lines file: an object, else an error naming the file and line."""
    try:
        record = json.loads(line, object_pairs_hook=once_each)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{number}: not valid JSON ({e.msg})") from None
    except RepeatedKey as e:
        raise UserError(f"{path}:{number}: the key \"{e.args[0]}\" is given twice in one object; keep one") from None
    except RecursionError:
        raise UserError(f"{path}:{number}: JSON nested too deeply to read") from None
    if not isinstance(record, dict):
        raise UserError(f"{path}:{number}: not a JSON object; give one {{\"column\": value, ...}} per line")
    return record


def json_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each line of a JSON lines file that is not blank, read as they are consumed."""
    for number, line in enumerate(text_lines(path), 1):
        if line.strip():
            yield number, json_object(path, number, line)


def table_records(path: Path, kind: str) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    """(the header's column names, (line number, {column: value}) of each row, read as they are consumed) of a
    CSV or TSV file."""
    rows = table_rows(path, kind)
    first = next(rows, None)
    if first is None:
        raise UserError(f"{path}: the file is empty")
    columns = first[1]
    # a name given twice (blank ones, a spreadsheet's empty trailing columns, name nothing and are never read)
    twice = next((c for i, c in enumerate(columns) if c.strip() and c in columns[:i]), None)
    if twice is not None:
        raise UserError(f"{path}:{first[0]}: the header names the column '{twice}' twice; rename one")

    def records():
        for number, fields in rows:
            if len(fields) != len(columns):
                raise UserError(f"{path}:{number}: {len(fields)} fields where the header has {len(columns)}; "
                                f"check for a stray or missing {'tab' if kind == 'tsv' else 'comma or quote'}")
            yield number, dict(zip(columns, fields))

    return columns, records()


def read_records(path) -> tuple[list[str], list[tuple[int, dict]]]:
    """(column names, [(line number, {column: value})]) of a CSV, TSV (header first) or JSON lines file."""
    path = Path(path)
    kind = file_format(path, first_line(path))
    if kind == "jsonl":
        rows = list(json_rows(path))
        columns = list(dict.fromkeys(key for _, record in rows for key in record))
    else:
        columns, records = table_records(path, kind)
        rows = list(records)
    if not rows:
        raise UserError(f"{path}: no rows")
    return columns, rows


def text_columns(given: str | None, columns: list[str], path) -> tuple[str, str | None]:
    """The one or two text columns: those given, or the first default pair the file has where it has no other
    column of a text's usual name (`question` beside `sentence`: which to read is not for us to guess)."""
    if given:
        names = given.split(",")
        missing = [n for n in names if n not in columns]
        if missing:
            raise UserError(f"{path}: no column '{missing[0]}' (--text-columns); it has {', '.join(columns)}")
        return names[0], names[1] if len(names) > 1 else None
    for names in DEFAULT_TEXT_COLUMNS:
        if all(n in columns for n in names):
            others = [c for c in columns if c in FIRST_TEXTS + SECOND_TEXTS and c not in names]
            if others:
                raise UserError(f"{path}: the columns {', '.join([*names, *others])} could each hold the text; give "
                                "--text-columns (one column, or two for pairs)")
            return names[0], names[1] if len(names) > 1 else None
    raise UserError(f"{path}: give --text-columns (one column, or two for pairs); it has {', '.join(columns)}")


def label_text(value, where: str, column: str) -> str:
    """A row's label as a string: JSON numbers as written (a float such as 1.0 stays a decimal, a regression
    target, as "1.0" in a CSV file and a float column in Hugging Face's run_glue); a row without one is an error
    naming it."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise UserError(f"{where}: no label (column or key '{column}'); give every row its label")
    if isinstance(value, bool) or isinstance(value, (list, dict)):
        raise UserError(f"{where}: label {json.dumps(value)} is not a string or a number")
    return str(value).strip()


def is_number_like(text: str) -> bool:
    """What float() reads though it is no number a data file means (nan, inf, 1_0)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def own_task(name: str | None, train_file, *, text: str | None, label_column: str, regression: bool,
             metric: str | None, labels: tuple[str, ...] | None = None, positive: str | None = None) -> Task:
    """The task your files define. `labels`: a trained model's label names (evaluation, prediction), else the
    training file's. `positive`: the label whose F1 --metric f1 is (needed unless the labels are 0 and 1)."""
    path = Path(train_file)
    columns, rows = read_records(path)
    text_a, text_b = text_columns(text, columns, path)
    if label_column not in columns:
        raise UserError(f"{path}: no column '{label_column}' (--label-column); it has {', '.join(columns)}")
    if labels is None and not regression:
        labelled = [(n, label_text(r.get(label_column), f"{path}:{n}", label_column)) for n, r in rows]
        # nan or inf among the labels: a broken row, not a class of its own nor the sign of a regression
        odd = next(((n, v) for n, v in labelled if not is_number(v) and is_number_like(v)), None)
        if odd:
            raise UserError(f"{path}:{odd[0]}: label '{odd[1]}' is not a finite number; fix or drop the row")
        values = {v for _, v in labelled}
        numbers = all(is_number(v) for v in values)
        # as Hugging Face's run_glue reads a column: decimals are a regression target, whole numbers class ids
        regression = numbers and not all(v.lstrip("+-").isdigit() for v in values)
        if not regression:
            labels = tuple(sorted(values, key=lambda v: (float(v), v) if numbers else (0, v)))
            if len(labels) < 2:
                raise UserError(f"{path}: every row has the label '{labels[0] if labels else ''}'; a classifier "
                                "needs two labels or more (--regression for numbers to predict)")
    task = Task(name=name or default_name(path), text_a=text_a, text_b=text_b, label=label_column,
                labels=None if regression else labels,
                metrics=("spearman", "pearson") if regression else ("accuracy", "f1_macro"),
                dev_files=(), has_header=True, own_files=True)
    task = with_main_metric(task, metric)
    if task.main_metric != "f1":
        if positive is not None:
            raise UserError(f"--positive-label names the class that --metric f1 scores; the main metric here is "
                            f"{task.main_metric}: give --metric f1 too")
        return task
    if positive is None and task.labels != ("0", "1"):
        raise UserError(f"--metric f1 is the F1 of one class: give --positive-label (one of {', '.join(task.labels)})")
    if (positive or "1") not in task.labels:
        raise UserError(f"--positive-label {positive}: not one of the labels ({', '.join(task.labels)})")
    return replace(task, positive=task.labels.index(positive or "1"))


def read_own_examples(task: Task, path) -> list[Example]:
    """The labelled rows of one of your files, for `task` (own_task)."""
    path = Path(path)
    columns, rows = read_records(path)
    for column in (task.text_a, task.text_b, task.label):
        if column is not None and column not in columns:
            raise UserError(f"{path}: no column '{column}'; it has {', '.join(columns)} (the training file's "
                            "columns are used for every file)")
    examples = []
    for number, row in rows:
        where = f"{path}:{number}"
        texts = [row.get(c) for c in (task.text_a, task.text_b) if c is not None]
        if not all(isinstance(t, str) for t in texts):
            raise UserError(f"{where}: a text field is missing or not a string")
        raw = label_text(row.get(task.label), where, task.label)
        if not task.is_regression and raw not in task.labels and is_number(raw) and float(raw).is_integer():
            raw = str(int(float(raw)))  # 1.0 where the classes are whole numbers (a model trained on 0 and 1)
        if task.is_regression:
            if not is_number(raw):
                raise UserError(f"{where}: label '{raw}' is not a number (the task is a regression)")
            label = float(raw)
        elif raw not in task.labels:
            raise UserError(f"{where}: label '{raw}' is not among the training file's labels "
                            f"({', '.join(task.labels)})")
        else:
            label = task.labels.index(raw)
        examples.append(Example(texts[0], texts[1] if len(texts) > 1 else None, label, line=number))
    return examples
