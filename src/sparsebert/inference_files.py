"""Files of texts read a row at a time, the header and columns checked at once (the input of predict and embed,
and the sentences prune-embedder learns from), and an output file written whole or not at all.

Input: CSV or TSV with a header naming the text columns, JSON lines objects with those keys (or `text_a`, `text`,
`sentence`, `sentence1`, and `text_b`, `sentence2`), or plain TSV lines `text` or `text_a<TAB>text_b`.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import datafiles
from .errors import UserError
from .textfiles import first_line, table_reader, table_rows, text_lines

FIRST_KEYS, SECOND_KEYS = datafiles.FIRST_TEXTS, datafiles.SECOND_TEXTS


def parse_json_line(path: Path, number: int, text: str, columns: list[str] | None,
                    required: bool) -> tuple[str, str | None]:
    obj = datafiles.json_object(path, number, text)
    if columns and (required or all(c in obj for c in columns)):
        missing = [c for c in columns if c not in obj]
        if missing:
            raise UserError(f"{path}:{number}: no \"{missing[0]}\" field (--text-columns)")
        texts = [obj[c] for c in columns]
    else:
        found = [[k for k in keys if k in obj] for keys in (FIRST_KEYS, SECOND_KEYS)]
        if len(found[0]) > 1 or len(found[1]) > 1:
            raise UserError(f"{path}:{number}: the keys {', '.join(found[0] + found[1])} do not say which text comes "
                            "first; give --text-columns FIRST,SECOND")
        texts = [obj[keys[0]] if keys else None for keys in found]
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
    try:
        header = next(table_reader([first.rstrip("\r\n")], kind))
    except csv.Error as e:
        raise UserError(f"{path}:1: not valid {kind.upper()} ({e})") from None
    if not columns and task_columns and all(c in header for c in task_columns.split(",")):
        columns = task_columns
    named = bool(columns) and all(c in header for c in columns.split(","))
    # a TSV whose first line names text columns (`sentence1<TAB>sentence2`, `text<TAB>label`) has a header, not a
    # first example
    headed = not named and any(field in FIRST_KEYS + SECOND_KEYS for field in header)
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


def plain_rows(path: Path) -> Iterator[tuple[int, tuple[str, str | None]]]:
    for number, fields in table_rows(path, "tsv"):
        if len(fields) > 2:
            raise UserError(f"{path}:{number}: {len(fields)} columns; give `text` or `text_a<TAB>text_b`, or a "
                            "header row and --text-columns")
        yield number, (fields[0], fields[1] if len(fields) == 2 else None)


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


def sentence_rows(path: Path, column: str | None) -> Iterator[tuple[int, str]]:
    """(line number, text) of each row of a file of single sentences, read as `read_inputs` reads a file: as they
    are consumed."""
    if not path.is_file():
        raise UserError(f"{path}: file of sentences not found")
    for number, (text, second) in read_inputs(path, column, bool(column)):
        if second is not None:
            raise UserError(f"{path}:{number}: two texts on a row; give one sentence a row (name the column with "
                            "--text-column, or write one sentence a line without tabs)")
        yield number, text


def read_sentences(path: Path, column: str | None) -> list[tuple[int, str]]:
    rows = list(sentence_rows(path, column))
    if not rows:
        raise UserError(f"{path}: no sentences in the file")
    return rows
