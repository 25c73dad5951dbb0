"""Text files read a line at a time, so that a file of any length is read in steady memory: UTF-8 checked line by
line (the error names the line), a byte-order mark dropped, CRLF or LF line ends; CSV rows (standard quoting, so a
quoted field may span lines) and TSV rows (no quoting, as GLUE writes its files, whose sentences hold bare quotes).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError


def text_lines(path: Path) -> Iterator[str]:
    """The file's lines, line ends kept, each decoded as UTF-8 when it is reached."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{number}: bytes that are not UTF-8 (at byte {e.start} of the line); save "
                                "the file as UTF-8") from None
            yield text.removeprefix("\ufeff") if number == 1 else text


def first_line(path: Path) -> str:
    """The first line that is not blank ("" for a file of blank lines)."""
    lines = text_lines(path)
    try:
        return next((line for line in lines if line.strip()), "")
    finally:
        lines.close()


def table_reader(lines, kind: str):
    """csv.reader for kind "csv" (strict: a quote that opens a field must close it, and nothing may follow the
    closing one, where the lenient reader would run on to the end of the file or drop the quotes) or "tsv"."""
    if kind == "tsv":
        return csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    return csv.reader(lines, delimiter=",", quoting=csv.QUOTE_MINIMAL, strict=True)


def table_rows(path: Path, kind: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each row that is not blank, for kind "csv" or "tsv"; the number is the row's
    last line where a quoted CSV field spans lines. A row that cannot be read is an error naming its first line."""
    reader = table_reader(text_lines(path), kind)
    start = 1
    try:
        for fields in reader:
            if any(f.strip() for f in fields):
                yield reader.line_num, fields
            start = reader.line_num + 1
    except csv.Error as e:
        unclosed = "; a quoted field that opens in this row is never closed" if "end of data" in str(e) else ""
        raise UserError(f"{path}:{start}: not valid {kind.upper()} ({e}){unclosed}") from None
