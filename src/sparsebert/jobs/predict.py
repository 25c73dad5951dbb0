"""sparsebert predict: labels and probabilities for new text, through the sparse engine.

Input: CSV or TSV with a header naming the text columns (--text-columns, by default the ones the model was
trained on, or text / sentence1,sentence2), JSON lines objects with those keys (or `text_a`, `text`, `sentence`,
`sentence1`, and `text_b`, `sentence2`), or plain TSV lines `text` or `text_a<TAB>text_b`. Output: one JSON
object per line, with the label names the model was trained with and their probabilities.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

import torch
from tqdm import tqdm

from .. import datafiles
from ..config import PredictConfig
from ..data import Encoded, eval_batches, model_data_settings, trained_length
from ..errors import UserError
from ..loading import load_config, load_dense, load_sparse
from ..models import check_model_positions, load_tokenizer, resolve_model_path
from ..runio import check_output_file
from ..tasks import get_task
from ..textfiles import first_line, table_rows, text_lines

FIRST_KEYS = ("text_a", "text", "sentence", "sentence1", "question", "question1")
SECOND_KEYS = ("text_b", "sentence2", "question2")


def parse_json_line(path: Path, number: int, text: str, columns: list[str] | None,
                    required: bool) -> tuple[str, str | None]:
    obj = datafiles.json_object(path, number, text)
    if columns and (required or all(c in obj for c in columns)):
        missing = [c for c in columns if c not in obj]
        if missing:
            raise UserError(f"{path}:{number}: no \"{missing[0]}\" field (--text-columns)")
        texts = [obj[c] for c in columns]
    else:
        texts = [next((obj[k] for k in keys if k in obj), None) for keys in (FIRST_KEYS, SECOND_KEYS)]
        if texts[0] is None:
            wanted = f"\"{columns[0]}\"" if columns else "\"text_a\" (and \"text_b\" for pairs)"
            raise UserError(f"{path}:{number}: no text field; give {wanted} (or --text-columns)")
    if not all(isinstance(t, str) for t in texts if t is not None):
        raise UserError(f"{path}:{number}: a text field is not a string")
    return texts[0], texts[1] if len(texts) > 1 else None


def read_inputs(path: Path, columns: str | None, required: bool,
                task_columns: str | None = None) -> Iterator[tuple[int, tuple[str, str | None]]]:
    """(line number, (text, second text or None)) of each row, read as they are consumed, so that a file of any
    length takes steady memory; the header and the columns are checked at once, each row when it is reached.
    JSON lines (by content or name) and CSV must hold the columns: --text-columns, else those the model was
    trained on, else the usual names (text, sentence1 and sentence2, ...); a TSV may have a header naming them,
    or be plain lines, `text` or `text_a<TAB>text_b`. `required`: the columns were asked for (--text-columns).
    `task_columns`: a GLUE model's columns, read by name where the file has them all (a header in another
    order, `sentence2<TAB>sentence1`, is read by its names, not its order)."""
    first = first_line(path)
    if not first:
        raise UserError(f"{path}: the file is empty")
    if first.lstrip().startswith("{") or path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        known = columns or task_columns
        names = known.split(",") if known else None
        return ((n, parse_json_line(path, n, line, names, required or bool(columns)))
                for n, line in enumerate(text_lines(path), 1) if line.strip())
    kind = "csv" if path.suffix.lower() == ".csv" else "tsv"
    header = next(csv.reader([first.rstrip("\r\n")], delimiter="," if kind == "csv" else "\t"))
    if not columns and task_columns and all(c in header for c in task_columns.split(",")):
        columns = task_columns
    named = bool(columns) and all(c in header for c in columns.split(","))
    # a TSV whose first line names text columns (`sentence1<TAB>sentence2`) has a header, not a first example
    headed = not named and all(field in FIRST_KEYS + SECOND_KEYS for field in header)
    if kind == "csv" or named or required or headed:
        found, records = datafiles.table_records(path, kind)
        a, b = datafiles.text_columns(columns or (header_roles(header, path) if headed else None), found, path)
        return ((n, (row[a], row[b] if b else None)) for n, row in records)
    return plain_rows(path)


def header_roles(header: list[str], path: Path) -> str:
    """A header of the usual names as `first,second` by what each name means, whatever their order; one that
    does not say which text comes first (`question<TAB>sentence`: both are first texts somewhere) is refused."""
    firsts, seconds = [f for f in header if f in FIRST_KEYS], [f for f in header if f in SECOND_KEYS]
    if len(firsts) != 1 or len(seconds) > 1:
        raise UserError(f"{path}:1: the header {', '.join(header)} does not say which text comes first; give "
                        "--text-columns FIRST,SECOND")
    return ",".join(firsts + seconds)


def rows_of_one_kind(rows, path: Path, pairs: bool | None):
    """Each row as the model reads it: a pair for a model trained on pairs, one text for one trained on single
    texts (`pairs`: from its record; None: as the first row is)."""
    for number, (a, b) in rows:
        if pairs is None:
            pairs = b is not None
        if (b is not None) != pairs:
            raise UserError(f"{path}:{number}: " + ("one text where the model reads pairs; give text_a and text_b"
                                                    if pairs else "two texts where the model reads one"))
        yield number, (a, b)


def reads_pairs(saved: dict) -> bool | None:
    """Whether the model was trained on pairs of texts, from what it recorded (None where it recorded nothing)."""
    if "text_columns" in saved:
        return "," in saved["text_columns"]
    if "task" in saved:
        return get_task(saved["task"]).text_b is not None
    return None


def task_columns(saved: dict) -> str | None:
    """A GLUE model's text columns by name (its task's files name them; CoLA's have no header)."""
    if "task" not in saved or "text_columns" in saved:
        return None
    task = get_task(saved["task"])
    return ",".join(c for c in (task.text_a, task.text_b) if c) if isinstance(task.text_a, str) else None


def plain_rows(path: Path) -> Iterator[tuple[int, tuple[str, str | None]]]:
    for number, fields in table_rows(path, "tsv"):
        if len(fields) > 2:
            raise UserError(f"{path}:{number}: {len(fields)} columns; give `text` or `text_a<TAB>text_b`, or a "
                            "header row and --text-columns")
        yield number, (fields[0], fields[1] if len(fields) == 2 else None)


def check_output(output: Path, input_path: Path, overwrite: bool) -> None:
    """Before anything is read or written: predictions never replace their input, nor another file unasked."""
    if output.resolve() == input_path.resolve():
        raise UserError(f"--output {output} is the input file; write the predictions to another file")
    check_output_file(output, "--output")
    if output.exists() and not overwrite:
        raise UserError(f"--output {output} exists; give another file or --overwrite to replace it")


@contextmanager
def output_stream(output: str | None, binary: bool = False):
    """The file to write to: standard output where no file is named; else a hidden file beside it, which takes
    the file's name only when everything is written, so a bad row or a cut-off run leaves no half-written file."""
    if not output:
        yield sys.stdout.buffer if binary else sys.stdout
        return
    output = Path(output)
    partial = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        with open(partial, "wb" if binary else "w") as f:
            yield f
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


def load_engine(path: str, dense: bool):
    if dense:
        return load_dense(path)
    model = load_sparse(path)
    print(model.describe(), file=sys.stderr)
    return model


def run(args: PredictConfig) -> None:
    path = resolve_model_path(args.model)
    input_path = Path(args.input)
    if not input_path.is_file():
        raise UserError(f"{input_path}: input file not found")
    if args.output:
        check_output(Path(args.output), input_path, args.overwrite)
    config = load_config(path)
    saved = model_data_settings(config)
    args = args.replace(max_seq_length=args.max_seq_length or trained_length(config, path))
    check_model_positions(args, config, path)
    rows = rows_of_one_kind(read_inputs(input_path, args.text_columns or saved.get("text_columns"),
                                        bool(args.text_columns), task_columns(saved)), input_path, reads_pairs(saved))
    tokenizer = load_tokenizer(path)
    model = load_engine(path, args.dense)
    labels = [config.id2label[i] for i in range(config.num_labels)]
    regression = config.problem_type == "regression" or config.num_labels == 1
    with output_stream(args.output) as out, torch.inference_mode(), tqdm(desc="predict", unit=" rows") as bar:
        for chunk in iter(lambda: list(islice(rows, args.chunk)), []):
            texts_a = [a for _, (a, _) in chunk]
            texts_b = [b or "" for _, (_, b) in chunk] if any(b is not None for _, (_, b) in chunk) else None
            enc = tokenizer(texts_a, texts_b, truncation=True, max_length=args.max_seq_length)
            data = Encoded(enc["input_ids"], enc["token_type_ids"], torch.zeros(len(chunk)), tokenizer.pad_token_id)
            logits = torch.empty(len(chunk), config.num_labels)
            for batch in eval_batches(data, args.batch_size):
                logits[batch["index"]] = model(**{k: batch[k] for k in ("input_ids", "token_type_ids",
                                                                        "attention_mask")}).logits.float()
            for (number, _), row in zip(chunk, logits):
                if regression:
                    record = {"line": number, "score": round(float(row[0]), 6)}
                else:
                    probs = torch.softmax(row, -1)
                    record = {"line": number, "label": labels[int(probs.argmax())],
                              "probabilities": {l: round(float(p), 6) for l, p in zip(labels, probs)}}
                out.write(json.dumps(record) + "\n")
            bar.update(len(chunk))
        if not bar.n:
            raise UserError(f"{input_path}: no rows to predict")
