"""Flags and set-up that the training jobs share."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from .. import checkpoint
from ..data import encode, steps_per_epoch
from ..errors import UserError
from ..runio import lock_output_dir, prepare_output_dir, read_yaml_mapping, write_config
from ..tasks import get_task, load_split, read_examples


def add_task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="mrpc", help="GLUE task, any case, with or without hyphen (default mrpc)")
    p.add_argument("--data-dir", default=None,
                   help="task folder of the GLUE distribution (default: the bundled copy of the task)")
    p.add_argument("--max-seq-length", type=int, default=128)


def add_training_args(p: argparse.ArgumentParser, *, epochs: float, lr: float, schedule: str) -> None:
    add_task_args(p)
    p.add_argument("--output", required=True, help="output folder (must be empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    p.add_argument("--epochs", type=float, default=epochs)
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many optimiser steps (0: epochs decide)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=lr)
    p.add_argument("--head-learning-rate", type=float, default=None,
                   help="learning rate of the new task head (default %(default)s; None: --learning-rate)")
    p.add_argument("--lr-schedule", choices=["linear", "constant"], default=schedule)
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps for linear LR warm-up")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-train-samples", type=int, default=0, help="use only the first N training rows (0: all)")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (0: at the end of each epoch)")
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="autocast precision of the forward pass (fp16 needs a GPU)")
    p.add_argument("--save-every", type=int, default=200, help="checkpoint every N steps (0: never)")
    p.add_argument("--keep-checkpoints", type=int, default=2,
                   help="how many recent checkpoints to keep (`run` and `experiment` delete them when the job is done)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output from its latest complete checkpoint, with its config.yaml; "
                        "only inputs that moved may be given anew (--teacher, --student, --model, --train-file, "
                        "--data-dir)")


MIN_SEQ_LENGTH = 8  # a pair's [CLS] a [SEP] b [SEP] with room for a word of each: below it, truncation gives up


def check_sizes(args, names=("batch_size",)) -> None:
    """Sizes every job that reads text takes: whole numbers of at least 1, a sequence length a BERT can take."""
    for name in names:
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if not MIN_SEQ_LENGTH <= args.max_seq_length <= 512:
        raise UserError(f"--max-seq-length {args.max_seq_length}: give {MIN_SEQ_LENGTH} to 512 tokens "
                        "(BERT-family encoders take at most 512)")


def check_seq_length(args, config, path) -> None:
    """The model's position embeddings must cover --max-seq-length (RoBERTa's reserve padding_idx + 1)."""
    positions = config.max_position_embeddings - (config.pad_token_id + 1 if config.model_type in
                                                  ("roberta", "xlm-roberta", "camembert") else 0)
    if args.max_seq_length > positions:
        raise UserError(f"--max-seq-length {args.max_seq_length}: {path} has position embeddings for "
                        f"{positions} tokens; give at most {positions}")


def check_training_args(args) -> None:
    check_sizes(args, ("batch_size", "eval_batch_size"))
    if args.epochs <= 0 and args.max_steps <= 0:
        raise UserError("--epochs must be positive (or give --max-steps)")
    if args.max_steps < 0 or args.max_train_samples < 0:
        raise UserError("--max-steps and --max-train-samples must be 0 (no limit) or more")
    if args.learning_rate <= 0:
        raise UserError("--learning-rate must be positive")
    if not 0 <= args.warmup < 1:
        raise UserError("--warmup is a fraction of the run, in [0, 1)")
    if args.precision == "fp16" and not (args.device in ("auto", "cuda") and torch.cuda.is_available()):
        raise UserError("--precision fp16 needs a GPU; on a CPU use bf16 or fp32")
    if args.save_every < 0 or args.keep_checkpoints < 1:
        raise UserError("--save-every must be >= 0 and --keep-checkpoints >= 1")


# the settings that say where a run's inputs are, not how it trains
INPUT_LOCATIONS = ("model", "student", "teacher", "train_file", "data_dir")


def resumed_args(args):
    """With --resume, the settings are the run's own config.yaml, whatever else the command line says, except
    where things are: the run's folder is where it is now, and an input given anew (a teacher moved with the
    run, as `run --resume` gives its own) replaces the one the run started from."""
    if not args.resume:
        return args
    saved = saved_config(Path(args.output))
    moved = {k: getattr(args, k) for k in INPUT_LOCATIONS if getattr(args, k, None) is not None}
    settings = {**vars(args), **{k: v for k, v in saved.items() if k in vars(args)}, **moved, "resume": True,
                "output": args.output}
    return argparse.Namespace(**settings)


def saved_config(out: Path) -> dict:
    """The config.yaml of the run that --resume continues."""
    config = out / "config.yaml"
    if not config.is_file():
        raise UserError(f"{config}: not found; --resume continues a run in its output folder")
    saved = read_yaml_mapping(config, "the config.yaml a run writes")
    if not saved:
        raise UserError(f"{config}: empty; --resume needs the config.yaml the run wrote")
    return saved


def run_to_the_end(job, settings: argparse.Namespace, resume: bool, say_fresh_start: bool = False) -> dict:
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


def start_run(args, config: dict, main: bool = True):
    """The output folder with the config that made it (rank 0 only; a resumed run keeps its own)."""
    out = Path(args.output)
    if main and args.resume:
        lock_output_dir(out)
    if main and not args.resume:
        out = prepare_output_dir(out, args.overwrite)
        checkpoint.remove_all(out)  # an overwritten run's, which a later --resume would take for this one's
        write_config(out, config)
    return out


def check_training_state(loss: torch.Tensor, step: int, out: Path) -> None:
    if not torch.isfinite(loss):
        ckpt = checkpoint.latest(out)
        where = (f" (its last good checkpoint, {ckpt.name}, would only repeat the run at the same rate on "
                 "--resume)") if ckpt else ""
        raise UserError(f"the loss became {loss.item()} at step {step + 1}; no model was written{where}. "
                        "Run it again with a lower --learning-rate and --overwrite")


def load_train_dev(args, tokenizer, train_file=None):
    task = get_task(args.task)
    train = read_examples(task, train_file) if train_file else load_split(task, args.data_dir, "train")
    if args.max_train_samples:
        train = train[:args.max_train_samples]
    dev = load_split(task, args.data_dir, "dev")
    return (encode(train, tokenizer, args.max_seq_length, task.is_regression),
            encode(dev, tokenizer, args.max_seq_length, task.is_regression))


def total_steps(args, n_train: int) -> int:
    per_epoch = steps_per_epoch(n_train, args.batch_size)
    return args.max_steps or max(1, math.ceil(args.epochs * per_epoch))


def eval_interval(args, n_train: int) -> int:
    return args.eval_every or steps_per_epoch(n_train, args.batch_size)


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}


def task_loss(task, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if task.is_regression:
        return torch.nn.functional.mse_loss(logits[:, 0], labels)
    return torch.nn.functional.cross_entropy(logits, labels)


def is_better(task, metrics: dict, best: dict | None) -> bool:
    return best is None or metrics[task.main_metric] > best[task.main_metric]
