"""sparsebert predict: labels and probabilities for new text, through the sparse engine.

Input: CSV or TSV with a header naming the text columns (--text-columns, by default the ones the model was
trained on, or text / sentence1,sentence2), JSON lines objects with those keys (or `text_a`, `text`, `sentence`,
`sentence1`, and `text_b`, `sentence2`), or plain TSV lines `text` or `text_a<TAB>text_b`. Output: one JSON
object per line, with the label names the model was trained with and their probabilities.
"""

from __future__ import annotations

import json
import sys
from itertools import islice
from pathlib import Path

import torch
from tqdm import tqdm

from ..config import PredictConfig
from ..data import Encoded, eval_batches, model_data_settings, trained_length
from ..errors import UserError
from ..inference_files import output_stream, read_inputs, rows_of_one_kind
from ..loading import load_config, load_dense, load_sparse
from ..models import check_model_positions, load_tokenizer, resolve_model_path
from ..output_folders import check_output
from ..tasks import get_task


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


def load_engine(path: str, dense: bool):
    if dense:
        return load_dense(path)
    model = load_sparse(path)
    print(model.describe(), file=sys.stderr)
    return model


def run(config: PredictConfig) -> None:
    path = resolve_model_path(config.model)
    input_path = Path(config.input)
    if not input_path.is_file():
        raise UserError(f"{input_path}: input file not found")
    if config.output:
        check_output(Path(config.output), input_path, config.overwrite)
    model_config = load_config(path)
    saved = model_data_settings(model_config)
    config = config.replace(max_seq_length=config.max_seq_length or trained_length(model_config, path))
    check_model_positions(config, model_config, path)
    rows = rows_of_one_kind(read_inputs(input_path, config.text_columns or saved.get("text_columns"),
                                        bool(config.text_columns), task_columns(saved)), input_path, reads_pairs(saved))
    tokenizer = load_tokenizer(path)
    model = load_engine(path, config.dense)
    labels = [model_config.id2label[i] for i in range(model_config.num_labels)]
    regression = model_config.problem_type == "regression" or model_config.num_labels == 1
    with output_stream(config.output) as out, torch.inference_mode(), tqdm(desc="predict", unit=" rows") as bar:
        for chunk in iter(lambda: list(islice(rows, config.chunk)), []):
            texts_a = [a for _, (a, _) in chunk]
            texts_b = [b or "" for _, (_, b) in chunk] if any(b is not None for _, (_, b) in chunk) else None
            enc = tokenizer(texts_a, texts_b, truncation=True, max_length=config.max_seq_length)
            data = Encoded(enc["input_ids"], enc["token_type_ids"], torch.zeros(len(chunk)), tokenizer.pad_token_id)
            logits = torch.empty(len(chunk), model_config.num_labels)
            for batch in eval_batches(data, config.batch_size):
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
