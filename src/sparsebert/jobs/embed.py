"""sparsebert embed: sentence embeddings of a file's texts, through the sparse engine.

Input as `predict` reads it: a text file with one sentence a line, or CSV, TSV or JSON lines naming the text
column (--text-column, else `text`, `sentence`, ...). Output: FILE.npy, a float32 matrix with a row per input
row in file order, or FILE.jsonl with `{"line": N, "embedding": [...]}` per row. Embeddings are the mean of the
last layer over each text's real tokens, normalised to length 1 (sentence-transformers' pooling of
all-MiniLM-L6-v2); `--no-normalize` keeps their length.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from ..config import EmbedConfig
from ..errors import UserError
from ..models import resolve_model_path
from .predict import check_output, read_inputs


def read_sentences(path: Path, column: str | None) -> list[tuple[int, str]]:
    """(line number, text) of each row of a file of single sentences, read as `predict` reads its input."""
    if not path.is_file():
        raise UserError(f"{path}: file of sentences not found")
    rows = read_inputs(path, column, bool(column))
    pair = next((number for number, (_, second) in rows if second is not None), None)
    if pair is not None:
        raise UserError(f"{path}:{pair}: two texts on a row; give one sentence a row (name the column with "
                        "--text-column, or write one sentence a line without tabs)")
    if not rows:
        raise UserError(f"{path}: no sentences in the file")
    return [(number, text) for number, (text, _) in rows]


def run(args: EmbedConfig) -> dict:
    from ..sparse.engine import load_sparse

    path = resolve_model_path(args.model)
    input_path, output = Path(args.input), Path(args.output)
    if not input_path.is_file():
        raise UserError(f"{input_path}: input file not found")  # before the output is looked at
    check_output(output, input_path, args.overwrite)
    rows = read_sentences(input_path, args.text_column)
    model = load_sparse(path)
    print(model.describe(), file=sys.stderr)
    vectors = model.encode([text for _, text in rows], batch_size=args.batch_size, normalize=args.normalize)
    partial = output.with_name(f".{output.name}.{os.getpid()}.tmp")  # a cut-off run leaves no half-written file
    if output.suffix.lower() == ".npy":
        with open(partial, "wb") as f:
            np.save(f, vectors)
    else:
        with open(partial, "w") as f:
            for (number, _), vector in zip(rows, vectors):
                f.write(json.dumps({"line": number, "embedding": [round(float(v), 6) for v in vector]}) + "\n")
    os.replace(partial, output)
    print(f"{len(rows)} texts -> {output} ({vectors.shape[1]} dimensions)", file=sys.stderr)
    return {"texts": len(rows), "dimensions": int(vectors.shape[1]), "output": str(output)}
