"""Set-up that the training jobs share: the run folder, resume, data, steps, the task loss."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .. import checkpoint, datafiles
from ..data import encode, steps_per_epoch
from ..errors import UserError
from ..runio import lock_output_dir, prepare_output_dir, read_yaml_mapping, write_config
from ..tasks import get_task, load_split, read_examples, with_main_metric


def check_model_positions(config, model_config, path) -> None:
    """The model's position embeddings must cover --max-seq-length (RoBERTa's reserve padding_idx + 1)."""
    positions = model_config.max_position_embeddings - (model_config.pad_token_id + 1 if model_config.model_type in
                                                        ("roberta", "xlm-roberta", "camembert") else 0)
    if config.max_seq_length > positions:
        raise UserError(f"--max-seq-length {config.max_seq_length}: {path} has position embeddings for "
                        f"{positions} tokens; give at most {positions}")


# the settings that say where a run's inputs are, not how it trains
INPUT_LOCATIONS = ("model", "student", "teacher", "train_file", "validation_file", "data_dir")


def resumed_config(config):
    """With --resume, the settings are the run's own config.yaml, whatever else the command line says, except
    where things are: the run's folder is where it is now, and an input given anew (a teacher moved with the
    run, as `run --resume` gives its own) replaces the one the run started from."""
    if not config.resume:
        return config
    saved = saved_config(Path(config.output))
    current = config.to_dict()
    moved = {k: current[k] for k in INPUT_LOCATIONS if current.get(k) is not None}
    resumed = type(config)(**{**current, **{k: v for k, v in saved.items() if k in current}, **moved,
                              "resume": True, "output": config.output})
    resumed.check()
    return resumed


def saved_config(out: Path) -> dict:
    """The config.yaml of the run that --resume continues."""
    config = out / "config.yaml"
    if not config.is_file():
        raise UserError(f"{config}: not found; --resume continues a run in its output folder")
    saved = read_yaml_mapping(config, "the config.yaml a run writes")
    if not saved:
        raise UserError(f"{config}: empty; --resume needs the config.yaml the run wrote")
    return saved


def run_to_the_end(job, settings, resume: bool, say_fresh_start: bool = False) -> dict:
    """Runs one job of `run` or `experiment` in settings.output; with `resume`, from the latest checkpoint an
    earlier, interrupted process left there (a user who asked for it hears when there was none: `say_fresh_start`). Its
    checkpoints are deleted once its model is written: they serve only to resume, and these commands hand
    over finished models, not optimiser states."""
    folder = Path(settings.output)
    latest = checkpoint.latest(folder) if resume else None
    settings.resume = latest is not None
    if latest is not None:
        print(f"{folder}: resuming from {latest.name}", flush=True)
    elif resume and say_fresh_start:
        print(f"{folder}: no checkpoint, running it from the start", flush=True)
    result = job.run(settings)
    checkpoint.remove_all(folder)
    return result


def start_run(config, records: dict, main: bool = True):
    """The output folder with the config that made it, and `records` (the paths it resolved) beside the settings
    (rank 0 only; a resumed run keeps its own)."""
    out = Path(config.output)
    if main and config.resume:
        lock_output_dir(out)
    if main and not config.resume:
        out = prepare_output_dir(out, config.overwrite)
        checkpoint.remove_all(out)  # an overwritten run's, which a later --resume would take for this one's
        write_config(out, {"job": config.job, **config.to_dict(settings_only=True), **records})
    return out


def checkpoint_due(config, step: int, steps: int) -> bool:
    return bool(config.save_every) and step % config.save_every == 0 and step < steps


def check_training_state(loss: torch.Tensor, step: int, out: Path) -> None:
    if not torch.isfinite(loss):
        ckpt = checkpoint.latest(out)
        where = (f" (its last good checkpoint, {ckpt.name}, would only repeat the run at the same rate on "
                 "--resume)") if ckpt else ""
        raise UserError(f"the loss became {loss.item()} at step {step + 1}; no model was written{where}. "
                        "Run it again with a lower --learning-rate and --overwrite")


def task_of(config, model_config=None):
    """The GLUE task the config names, or the task your own files define (--validation-file, with --train-file
    when training). `model_config`: a trained model's, whose labels, and data settings where the flags give
    none, the files are read with (evaluation)."""
    if not config.validation_file:
        if config.text_columns:
            raise UserError("--text-columns names columns of your own files: give --validation-file (and "
                            "--train-file to train)")
        return with_main_metric(get_task(config.task or "mrpc"), config.metric)
    saved = model_data_settings(model_config)
    regression, labels = config.regression, None
    if model_config is not None:
        regression = model_config.problem_type == "regression" or model_config.num_labels == 1
        labels = None if regression else tuple(model_config.id2label[i] for i in range(model_config.num_labels))
    return datafiles.own_task(config.task or saved.get("task"), getattr(config, "train_file", None) or
                              config.validation_file, text=config.text_columns or saved.get("text_columns"),
                              label_column=config.label_column or saved.get("label_column") or "label",
                              regression=regression,
                              metric=config.metric or saved.get("metric"), labels=labels)


def model_data_settings(model_config) -> dict:
    """What a model saved of the data it was trained on (models.save_model): task name, text columns."""
    return dict(getattr(model_config, "sparsebert_data", None) or {}) if model_config is not None else {}


def load_train_dev(config, task, tokenizer):
    if task.files:
        train = datafiles.read_examples(task, config.train_file)
    else:
        train = (read_examples(task, config.train_file) if config.train_file
                 else load_split(task, config.data_dir, "train"))
    if config.max_train_samples:
        train = train[:config.max_train_samples]
    dev = datafiles.read_examples(task, config.validation_file) if task.files else load_split(task, config.data_dir, "dev")
    return (encode(train, tokenizer, config.max_seq_length, task.is_regression),
            encode(dev, tokenizer, config.max_seq_length, task.is_regression))


def total_steps(config, n_train: int) -> int:
    per_epoch = steps_per_epoch(n_train, config.batch_size)
    return config.max_steps or max(1, math.ceil(config.epochs * per_epoch))


def eval_interval(config, n_train: int) -> int:
    return config.eval_every or steps_per_epoch(n_train, config.batch_size)


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}


def task_loss(task, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if task.is_regression:
        return torch.nn.functional.mse_loss(logits[:, 0], labels)
    return torch.nn.functional.cross_entropy(logits, labels)

