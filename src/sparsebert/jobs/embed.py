"""sparsebert embed: sentence embeddings of a file's texts, through the sparse engine.

Input as `predict` reads it: a text file with one sentence a line, or CSV, TSV or JSON lines naming the text
column (--text-column, else `text`, `sentence`, ...). Output: FILE.npy, a float32 matrix with a row per input
row in file order, or FILE.jsonl with `{"line": N, "embedding": [...]}` per row. Embeddings are the mean of the
last layer over each text's real tokens, normalised to length 1 (sentence-transformers' pooling of
all-MiniLM-L6-v2); `--no-normalize` keeps their length.
"""

from __future__ import annotations

import json
import sys
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import EmbedConfig
from ..embedding import check_sentence_model
from ..errors import UserError
from ..inference_files import output_stream, sentence_rows
from ..models import resolve_model_path
from ..output_folders import check_output


CHUNK = 4096  # sentences encoded and written at a time


def run(config: EmbedConfig) -> dict:
    from ..loading import load_sparse

    path = resolve_model_path(config.model)
    check_sentence_model(Path(path))
    input_path, output = Path(config.input), Path(config.output)
    if not input_path.is_file():
        raise UserError(f"{input_path}: input file not found")  # before the output is looked at
    check_output(output, input_path, config.overwrite)
    # a first pass checks every row and counts them (the .npy header needs the count) in steady memory; the
    # second encodes a chunk at a time
    count = sum(1 for _ in sentence_rows(input_path, config.text_column))
    if not count:
        raise UserError(f"{input_path}: no sentences in the file")
    model = load_sparse(path)
    print(model.describe(), file=sys.stderr)
    rows = sentence_rows(input_path, config.text_column)
    chunks = iter(lambda: list(islice(rows, CHUNK)), [])
    with output_stream(str(output), binary=output.suffix.lower() == ".npy") as f, \
            tqdm(total=count, desc="embed", unit=" sentences") as bar:
        if output.suffix.lower() == ".npy":
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                     "shape": (count, model.hidden)})
        for chunk in chunks:
            vectors = model.encode([text for _, text in chunk], batch_size=config.batch_size,
                                   normalize=config.normalize)
            if output.suffix.lower() == ".npy":
                f.write(vectors.astype("<f4").tobytes())
            else:
                f.writelines(json.dumps({"line": number, "embedding": [round(float(v), 6) for v in vector]}) + "\n"
                             for (number, _), vector in zip(chunk, vectors))
            bar.update(len(chunk))
    print(f"{count} texts -> {output} ({model.hidden} dimensions)", file=sys.stderr)
    return {"texts": count, "dimensions": model.hidden, "output": str(output)}
