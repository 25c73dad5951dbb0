"""GLUE tasks: where their files are, how their TSV rows are read, their labels and metrics.

Files follow the standard GLUE distribution (`download_glue_data.py`), the format that
HF `run_glue` and TinyBERT read. Columns of files with a header are found by name, so a
file with extra columns (MNLI's dev has more label columns than its train) reads the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from .errors import UserError
from .textfiles import table_rows


def normalise_task_name(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


@dataclass(frozen=True)
class Task:
    name: str  # canonical GLUE spelling, e.g. "STS-B"
    text_a: str | int  # header name, or column index for files without a header
    text_b: str | int | None
    label: str | int
    labels: tuple[str, ...] | None  # None for regression
    metrics: tuple[str, ...]  # the first one is the task's main score
    dev_files: tuple[str, ...] = ("dev.tsv",)
    has_header: bool = True
    num_columns: int | None = None  # only for files without a header
    label_names: tuple[str, ...] | None = None  # what a model calls the labels (default: as the files write them)
    own_files: bool = False  # the user's own CSV/TSV/JSON lines files (datafiles.py), not the GLUE distribution
    positive: int = 1  # the class (index into labels) whose F1 `f1` is

    @property
    def names(self) -> tuple[str, ...] | None:
        return self.label_names or self.labels

    @property
    def key(self) -> str:
        return normalise_task_name(self.name)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def main_metric(self) -> str:
        return self.metrics[0]


BINARY = ("0", "1")
TASKS: dict[str, Task] = {
    t.key: t
    for t in [
        Task("CoLA", text_a=3, text_b=None, label=1, labels=BINARY, metrics=("matthews_corr",),
             has_header=False, num_columns=4, label_names=("unacceptable", "acceptable")),
        Task("SST-2", "sentence", None, "label", BINARY, ("accuracy",), label_names=("negative", "positive")),
        Task("MRPC", "#1 String", "#2 String", "Quality", BINARY, ("f1", "accuracy"),
             label_names=("not_equivalent", "equivalent")),
        Task("STS-B", "sentence1", "sentence2", "score", None, ("spearman", "pearson")),
        Task("QQP", "question1", "question2", "is_duplicate", BINARY, ("f1", "accuracy"),
             label_names=("not_duplicate", "duplicate")),
        Task("MNLI", "sentence1", "sentence2", "gold_label", ("contradiction", "entailment", "neutral"),
             ("accuracy",), dev_files=("dev_matched.tsv", "dev_mismatched.tsv")),
        Task("QNLI", "question", "sentence", "label", ("entailment", "not_entailment"), ("accuracy",)),
        Task("RTE", "sentence1", "sentence2", "label", ("entailment", "not_entailment"), ("accuracy",)),
        Task("WNLI", "sentence1", "sentence2", "label", BINARY, ("accuracy",),
             label_names=("not_entailment", "entailment")),
    ]
}


def get_task(name: str) -> Task:
    task = TASKS.get(normalise_task_name(name))
    if task is None:
        raise UserError(f"unknown task '{name}': choose one of {', '.join(t.name for t in TASKS.values())}")
    return task


def with_main_metric(task: Task, metric: str | None) -> Task:
    """The task with `metric` (--metric) first: the one that is reported first and compared."""
    if metric is None or metric == task.main_metric:
        return task
    fits = (("spearman", "pearson") if task.is_regression else
            ("accuracy", "f1_macro") + (("f1", "matthews_corr") if task.num_labels == 2 else ()))
    if metric not in fits:
        kind = "a regression" if task.is_regression else f"{task.num_labels} classes"
        raise UserError(f"--metric {metric} does not fit {task.name} ({kind}); choose one of {', '.join(fits)}")
    return replace(task, metrics=(metric, *(m for m in task.metrics if m != metric)))


def bundled_data_dir(task: Task) -> Path:
    """The task folder shipped inside the package (MRPC, RTE, CoLA, STS-B, WNLI; QNLI dev only)."""
    return Path(str(resources.files("sparsebert") / "glue" / task.name))


@dataclass
class Example:
    text_a: str
    text_b: str | None
    label: float | int  # class index, or the score for regression
    line: int = field(default=0, compare=False)  # 1-based line in its file, for error messages


def read_tsv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """Rows of a TSV file as (line number, fields). Accepts a BOM and CRLF; skips blank lines."""
    rows = list(table_rows(path, "tsv"))
    if not rows:
        raise UserError(f"{path}: the file is empty")
    return rows


def split_header(task: Task, path: Path, rows: list) -> tuple[list[str] | None, list, dict, int]:
    """(header or None, data rows, column index of each of the task's fields, row width)."""
    fields = [c for c in (task.text_a, task.text_b, task.label) if c is not None]
    if not task.has_header:
        return None, rows, {c: c for c in fields}, task.num_columns
    (_, header), rows = rows[0], rows[1:]
    try:
        col = {c: header.index(c) for c in fields}
    except ValueError:
        raise UserError(f"{path}:1: header {header} lacks one of the columns {fields} that "
                        f"{task.name} files have; is this a {task.name} file?") from None
    if not rows:
        raise UserError(f"{path}: the file has a header but no rows")
    return header, rows, col, len(header)


def read_glue_examples(task: Task, path: Path) -> list[Example]:
    """Reads one labelled TSV file of `task` (train or dev split)."""
    path = Path(path)
    _, rows, col, width = split_header(task, path, read_tsv_rows(path))
    examples = []
    for number, fields in rows:
        if len(fields) != width:
            raise UserError(f"{path}:{number}: {len(fields)} columns where {task.name} has {width}; "
                            "check for a stray or missing tab")
        raw_label = fields[col[task.label]].strip()
        examples.append(Example(
            text_a=fields[col[task.text_a]],
            text_b=fields[col[task.text_b]] if task.text_b is not None else None,
            label=parse_label(task, raw_label, f"{path}:{number}"),
            line=number,
        ))
    return examples


def is_number(text: str) -> bool:
    """A finite number as written in a data file: not nan, inf or Python's 1_000."""
    try:
        return math.isfinite(float(text)) and "_" not in text
    except ValueError:
        return False


def parse_label(task: Task, raw: str, where: str) -> float | int:
    if task.is_regression:
        if not is_number(raw):
            raise UserError(f"{where}: score '{raw}' is not a number")
        return float(raw)
    if raw not in task.labels:
        raise UserError(f"{where}: unknown label '{raw}'; {task.name} labels are {', '.join(task.labels)}")
    return task.labels.index(raw)


def task_file(data_dir: Path | str | None, task: Task, filename: str) -> Path:
    folder = bundled_data_dir(task) if data_dir is None else Path(data_dir)
    if not folder.is_dir():
        raise UserError(f"{folder}: data folder not found; give --data-dir a {task.name} folder "
                        "of the GLUE distribution (train.tsv, dev.tsv)")
    path = folder / filename
    if not path.is_file():
        raise UserError(f"{path}: file not found; a {task.name} folder holds "
                        f"train.tsv and {', '.join(task.dev_files)}")
    return path


def load_split(task: Task, data_dir, split: str) -> list[Example]:
    """split: 'train' or 'dev' (for MNLI, 'dev' is dev_matched)."""
    filename = "train.tsv" if split == "train" else task.dev_files[0]
    return read_glue_examples(task, task_file(data_dir, task, filename))
