"""sparsebert predict: labels and probabilities for new text, through the sparse engine.

Input: TSV lines `text` or `text_a<TAB>text_b` (no header), or JSONL objects with `text_a` (or `text`,
`sentence`, `sentence1`) and optionally `text_b` (or `sentence2`). Output: one JSON object per line.
Large inputs are streamed in chunks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from ..data import Encoded, eval_batches
from ..errors import UserError
from ..models import load_config, load_tokenizer, resolve_model_path
from ..sparse.format import is_exported, load_exported
from ..tasks import read_tsv_rows
from ..config import PredictConfig
from .common import check_model_positions

FIRST_KEYS = ("text_a", "text", "sentence", "sentence1", "question", "question1")
SECOND_KEYS = ("text_b", "sentence2", "question2")


def parse_line(path: Path, number: int, text: str, jsonl: bool) -> tuple[str, str | None]:
    if jsonl:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{number}: not valid JSON ({e.msg})") from None
        first = next((obj[k] for k in FIRST_KEYS if isinstance(obj, dict) and k in obj), None)
        if not isinstance(first, str):
            raise UserError(f"{path}:{number}: no text field; give \"text_a\" (and \"text_b\" for pairs)")
        second = next((obj[k] for k in SECOND_KEYS if k in obj), None)
        return first, second
    fields = text.split("\t")
    if len(fields) > 2:
        raise UserError(f"{path}:{number}: {len(fields)} columns; give `text` or `text_a<TAB>text_b`")
    return fields[0], fields[1] if len(fields) == 2 else None


def is_jsonl(path: Path) -> bool:
    """JSON lines by the name (.jsonl, .json) or, whatever the name, by a first line that opens an object: a
    JSON file read as TSV would classify its JSON text."""
    if path.suffix.lower() in (".jsonl", ".json"):
        return True
    first = next((text for _, text in read_lines(path)), "")
    return first.lstrip().startswith("{")


def read_lines(path: Path):
    """(line number, text) of non-blank lines, with the same UTF-8 checks as task files."""
    yield from ((n, "\t".join(fields)) for n, fields in read_tsv_rows(path))


def check_output(output: Path, input_path: Path, overwrite: bool) -> None:
    """Before anything is read or written: predictions never replace their input, nor another file unasked."""
    if output.resolve() == input_path.resolve():
        raise UserError(f"--output {output} is the input file; write the predictions to another file")
    if output.is_dir():
        raise UserError(f"--output {output} is a folder; give a file name")
    if not output.parent.is_dir():
        raise UserError(f"--output {output}: the folder {output.parent} does not exist")
    if output.exists() and not overwrite:
        raise UserError(f"--output {output} exists; give another file or --overwrite to replace it")


def load_engine(path: str, dense: bool):
    if dense:
        from ..models import load_classifier

        return load_exported(path) if is_exported(path) else load_classifier(path)
    from ..sparse.engine import load_sparse

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
    jsonl = is_jsonl(input_path)
    config = load_config(path)
    check_model_positions(args, config, path)
    tokenizer = load_tokenizer(path)
    model = load_engine(path, args.dense)
    labels = [config.id2label[i] for i in range(config.num_labels)]
    regression = config.problem_type == "regression" or config.num_labels == 1
    rows = [(n, parse_line(input_path, n, text, jsonl)) for n, text in read_lines(input_path)]
    out = open(args.output, "w") if args.output else sys.stdout
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, len(rows), args.chunk), desc="predict", unit="chunk", disable=len(rows) <= args.chunk):
                chunk = rows[start:start + args.chunk]
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
    finally:
        if args.output:
            out.close()
