"""A job's task (GLUE, or your own files) and its data: tokenised examples and batches padded only to their own
longest sequence.

Batches are index lists drawn from a seeded permutation per epoch, so a run can be resumed at any
step and each of several processes can take its share of the same global batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import datafiles
from .errors import UserError
from .tasks import Example, get_task, load_split, read_glue_examples, with_main_metric


@dataclass
class Encoded:
    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: torch.Tensor  # float for regression, long for classification
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def encode(examples: list[Example], tokenizer, max_seq_length: int, regression: bool) -> Encoded:
    texts_a = [e.text_a for e in examples]
    texts_b = [e.text_b for e in examples] if examples and examples[0].text_b is not None else None
    out = tokenizer(texts_a, texts_b, truncation=True, max_length=max_seq_length, return_token_type_ids=True)
    labels = torch.tensor([e.label for e in examples], dtype=torch.float32 if regression else torch.long)
    return Encoded(out["input_ids"], out["token_type_ids"], labels, tokenizer.pad_token_id)


def collate(data: Encoded, indices) -> dict[str, torch.Tensor]:
    width = max(len(data.input_ids[i]) for i in indices)
    input_ids = torch.full((len(indices), width), data.pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((len(indices), width), dtype=torch.long)
    attention_mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, i in enumerate(indices):
        n = len(data.input_ids[i])
        input_ids[row, :n] = torch.tensor(data.input_ids[i])
        token_type_ids[row, :n] = torch.tensor(data.token_type_ids[i])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
            "labels": data.labels[list(indices)], "index": torch.tensor(list(indices))}


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


LENGTH_POOL = 64  # batches whose examples are grouped by length at a time


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, lengths: list[int] | None = None) -> list[list[int]]:
    """The global batches of one epoch, in order; the same for a seed whatever the process count.

    lengths: group examples of like length into a batch (each pool of LENGTH_POOL batches of the shuffled order is
    sorted by length and cut into batches, which are then shuffled): a batch is padded to its longest example,
    so a few long ones scattered through the data otherwise multiply the cost of every step they land in."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    if lengths is None:
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    pool = batch_size * LENGTH_POOL
    order = [i for start in range(0, n, pool) for i in sorted(order[start:start + pool], key=lengths.__getitem__)]
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    return [batches[j] for j in torch.randperm(len(batches), generator=generator).tolist()]


def batches_from(n: int, batch_size: int, seed: int, step: int, lengths: list[int] | None = None):
    """(epoch, global batch) from optimiser step `step` on, epoch after epoch: where a resumed run goes on."""
    epoch, skip = divmod(step, steps_per_epoch(n, batch_size))
    while True:
        for indices in epoch_batches(n, batch_size, seed, epoch, lengths)[skip:]:
            yield epoch, indices
        epoch, skip = epoch + 1, 0


def eval_batches(data: Encoded, batch_size: int):
    # Sorting by length keeps padding small; predictions are put back in file order by the caller.
    order = sorted(range(len(data)), key=lambda i: len(data.input_ids[i]))
    for start in range(0, len(order), batch_size):
        yield collate(data, order[start:start + batch_size])


def task_of(config, model_config=None):
    """The GLUE task the config names, or the task your own files define (--validation-file, with --train-file
    when training). `model_config`: a trained model's, whose labels, and data settings where the flags give
    none, the files are read with (evaluation)."""
    if not config.validation_file:
        if config.text_columns or config.positive_label:
            flag = "--text-columns names columns" if config.text_columns else "--positive-label names a label"
            raise UserError(f"{flag} of your own files: give --validation-file (and --train-file to train)")
        return with_main_metric(get_task(config.task or recorded_task(model_config)), config.metric)
    saved = model_data_settings(model_config)
    regression, labels = config.regression, None
    if model_config is not None:
        regression = model_config.problem_type == "regression" or model_config.num_labels == 1
        labels = None if regression else tuple(model_config.id2label[i] for i in range(model_config.num_labels))
    metric = config.metric or saved.get("metric")
    positive = config.positive_label or (saved.get("positive_label") if metric == "f1" else None)
    return datafiles.own_task(config.task or saved.get("task"), getattr(config, "train_file", None) or
                              config.validation_file, text=config.text_columns or saved.get("text_columns"),
                              label_column=config.label_column or saved.get("label_column") or "label",
                              regression=regression, metric=metric, labels=labels, positive=positive)


def recorded_task(model_config) -> str:
    """The GLUE task a trained model was trained on (what it recorded), for jobs given none; training jobs
    (no model config) default to MRPC. A model trained on your own files, or one that recorded nothing, is
    refused rather than scored on a task it may never have seen."""
    if model_config is None:
        return "mrpc"
    saved = model_data_settings(model_config)
    if "text_columns" in saved:
        raise UserError(f"the model was trained on your own files (task '{saved['task']}'); give --validation-file")
    if not saved.get("task"):
        raise UserError("the model records no task it was trained on; give --task (or --validation-file)")
    return saved["task"]


def trained_length(model_config, path) -> int:
    """The tokens a trained model's examples were truncated to, as it recorded (finetune and prune do); a model
    that recorded none (fine-tuned elsewhere) is refused rather than cut at a length it may never have seen."""
    length = model_data_settings(model_config).get("max_seq_length")
    if length is None:
        raise UserError(f"{path}: the model records no length its examples were truncated to; give "
                        "--max-seq-length (the length it was fine-tuned with; sparsebert's default is 128)")
    return int(length)


def model_data_settings(model_config) -> dict:
    """What a model saved of the data it was trained on (models.save_model): task name, text columns."""
    return dict(getattr(model_config, "sparsebert_data", None) or {}) if model_config is not None else {}


def load_train_dev(config, task, tokenizer):
    if task.own_files:
        train = datafiles.read_own_examples(task, config.train_file)
    else:
        train = (read_glue_examples(task, config.train_file) if config.train_file
                 else load_split(task, config.data_dir, "train"))
    if config.max_train_samples:
        train = train[:config.max_train_samples]
    dev = (datafiles.read_own_examples(task, config.validation_file) if task.own_files
           else load_split(task, config.data_dir, "dev"))
    return (encode(train, tokenizer, config.max_seq_length, task.is_regression),
            encode(dev, tokenizer, config.max_seq_length, task.is_regression))


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
