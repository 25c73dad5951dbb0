"""Pieces every training job shares: seeding, the run's start (processes, output folder), the optimiser and its
schedule, one optimiser step, and the state a loop carries (with state_dict, for checkpoints)."""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from tqdm import tqdm

from . import checkpoint, distributed
from .data import batches_from, steps_per_epoch
from .errors import UserError
from .output_folders import JsonlLog, start_run


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def start_training(config, model, records: dict):
    """(processes, device, output folder) of a run that starts now: the processes joined (one, or torchrun's),
    the folder made with its config.yaml and `records` (a resumed run keeps its own), and, on the main process,
    room checked for the checkpoints it will keep of `model`."""
    processes, device = distributed.start(config.device, config.precision)
    out = start_run(config, records, processes.main)
    if processes.main:
        checkpoint.check_free_space(out, model, config.keep_checkpoints if config.save_every else 0)
    return processes, device, out


def no_decay(name: str) -> bool:
    return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name


def adamw(named_parameters, lr: float, weight_decay: float, head_lr: float | None = None,
          head_prefixes: tuple[str, ...] = ("classifier.",)):
    """AdamW without weight decay on biases and LayerNorm; the new task head may get its own rate."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in named_parameters:
        if param.requires_grad:
            groups.setdefault((no_decay(name), name.startswith(head_prefixes)), []).append(param)
    return torch.optim.AdamW([
        {"params": params, "weight_decay": 0.0 if nd else weight_decay,
         "lr": head_lr if (is_head and head_lr) else lr}
        for (nd, is_head), params in sorted(groups.items())
    ])


def lr_factor(kind: str, total_steps: int, warmup_steps: int, rewind_at: int | None = None):
    """LambdaLR factor: linear warm-up, then constant, or linear decay to zero; `rewind`: linear decay to zero at
    `rewind_at`, then back to the peak and a second linear decay to zero at the end (a recovery phase at the
    final sparsity with a fresh rate, as GMP* and oBERT rewind it)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        if kind == "rewind" and rewind_at is not None and warmup_steps <= rewind_at < total_steps:
            if step >= rewind_at:
                return max(0.0, (total_steps - step) / (total_steps - rewind_at))
            return max(0.0, (rewind_at - step) / max(1, rewind_at - warmup_steps))
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


def optimizer_and_schedule(named_parameters, config, steps: int, rewind_at: int | None = None):
    """AdamW, the warm-up schedule and the fp16 gradient scaler of a training job's config; `rewind_at`: the
    step where the `rewind` schedule goes back to the peak rate (pruning: where the target is reached)."""
    optimizer = adamw(named_parameters, config.learning_rate, config.weight_decay,
                      getattr(config, "head_learning_rate", None))  # jobs without a task head have none
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(config.lr_schedule, steps, int(config.warmup * steps), rewind_at))
    scaler = torch.amp.GradScaler("cuda" if config.precision == "fp16" else "cpu",
                                  enabled=config.precision == "fp16")  # fp16 gradients underflow
    return optimizer, scheduler, scaler


def backward_and_step(loss, *, optimizer, scheduler, scaler, averaged, clipped, processes, pruner=None,
                      step: int = 0) -> None:
    """One optimiser step: gradients averaged over the processes (`averaged` parameters), seen unscaled by the
    pruner's criterion before clipping `clipped` to norm 1. With a pruner, its masks are applied again after the
    step (the optimiser's momentum and weight decay must not revive removed weights) and its schedule advanced to
    `step + 1`, new masks the same on every process."""
    scaler.scale(loss).backward()
    distributed.average_gradients(averaged, processes)
    scaler.unscale_(optimizer)
    if pruner is not None:
        pruner.observe()
    torch.nn.utils.clip_grad_norm_(clipped, 1.0)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if pruner is not None:
        pruner.apply()
        if pruner.step(step + 1):
            distributed.broadcast_masks(pruner, processes)


@dataclass
class TrainState:
    """What a training loop carries from step to step, and a checkpoint across a crash."""
    step: int = 0
    metrics: dict | None = None  # the latest dev evaluation
    best: dict | None = None  # the best dev evaluation so far (a labelled figure: the model kept is the last)
    best_step: int = 0
    seconds: float = 0.0  # wall time of the run so far, over every resumption
    step_seconds: float = 0.0  # of it, in optimiser steps

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for name in (f.name for f in fields(self)):
            setattr(self, name, state[name])

    def record_evaluation(self, metrics: dict, main_metric: str, eligible: bool = True) -> None:
        """The latest dev metrics, and the best so far among the `eligible` ones (pruning: at the target)."""
        self.metrics = metrics
        if eligible and (self.best is None or metrics[main_metric] > self.best[main_metric]):
            self.best, self.best_step = metrics, self.step

    def results(self, steps: int) -> dict:
        """The run's report: by the model it ends with, the best evaluation beside it."""
        return {"final": self.metrics, "best": self.best, "best_step": self.best_step, "steps": steps,
                "train_seconds": round(self.seconds, 1), "seconds_per_step": round(self.step_seconds / steps, 3)}


class TrainingRun:
    """One training run's bookkeeping, which every training loop shares: the state (resumed from the latest
    complete checkpoint with --resume), the log, the progress bar, the batches from the step reached on, and the
    evaluation and checkpoint cadence. The loops keep their losses, top to bottom, in their own files.

    checkpointed: what a checkpoint holds beside the state (model, optimizer, scheduler, and pruner or
    extra_modules where the loop has them).
    """

    def __init__(self, config, out: Path, processes, steps: int, eval_every: int, checkpointed: dict):
        self.config, self.out, self.processes = config, out, processes
        self.steps, self.eval_every, self.checkpointed = steps, eval_every, checkpointed
        self.state = TrainState()
        resumed = config.resume and checkpoint.load_latest(out, **checkpointed)
        if resumed:
            self.state.load_state_dict(resumed)
        self.resumed = bool(resumed)
        self.log = JsonlLog(out / "log.jsonl", resume_step=self.state.step if resumed else None,
                            enabled=processes.main)
        self.bar = self.tick = None
        self.started = 0.0

    def batches(self, n: int, description: str, lengths: list[int] | None = None):
        """(epoch, global batch) from the step reached to the last, timing each step from here."""
        self.started = time.time() - self.state.seconds
        self.bar = tqdm(total=self.steps, initial=self.state.step, desc=description, unit="step",
                        disable=not self.processes.main)
        for epoch, indices in batches_from(n, self.config.batch_size, self.config.seed, self.state.step, lengths):
            if self.state.step == self.steps:
                break
            self.tick = time.perf_counter()
            yield epoch, indices
        self.bar.close()

    def optimise(self, loss: torch.Tensor, epoch: int, *, share: float, scaler, averaged, clipped, pruner=None,
                 **logged) -> bool:
        """The step every loop takes once it has its loss: a loss that is not finite stops the run (no model
        written); backward, the optimiser's step (with the pruner's where the loop prunes), and the step counted
        and logged with `logged`. True where an evaluation is due (on the main process only)."""
        optimizer, scheduler = self.checkpointed["optimizer"], self.checkpointed["scheduler"]
        stop_if_loss_not_finite(loss, self.state.step, self.out)
        backward_and_step(loss * share, optimizer=optimizer, scheduler=scheduler, scaler=scaler, processes=self.processes,
                          averaged=averaged, clipped=clipped, pruner=pruner, step=self.state.step)
        if pruner is None:
            return self.step_done(epoch, loss, **logged, lr=scheduler.get_last_lr()[0])
        return self.step_done(epoch, loss, {"sparsity": f"{pruner.level:.3f}"}, **logged, lr=scheduler.get_last_lr()[0],
                              sparsity=pruner.level)

    def step_done(self, epoch: int, loss: torch.Tensor, shown: dict | None = None, **logged) -> bool:
        """Counts the step (its time, the bar, a log record of its loss and `logged`); True where an evaluation
        is due (on the main process only)."""
        self.state.step_seconds += time.perf_counter() - self.tick
        self.state.step += 1
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss.item():.4f}", **(shown or {}))
        self.log.write(step=self.state.step, epoch=epoch, loss=loss.item(), **logged)
        return self.processes.main and (self.state.step % self.eval_every == 0 or self.state.step == self.steps)

    def evaluated(self, metrics: dict, main_metric: str, pruner=None, said: str = "") -> None:
        """Records a dev evaluation: the latest and the best, in the log and on screen. Where the loop prunes, the
        sparsity then is recorded beside it, and only evaluations at the target sparsity compete for the best."""
        logged, eligible = {}, True
        if pruner is not None:
            logged, eligible = {"sparsity": pruner.level}, pruner.level >= self.config.sparsity
            said = f" sparsity {pruner.level:.3f}{said}"
        self.state.record_evaluation(metrics, main_metric, eligible)
        self.log.write(step=self.state.step, eval=metrics, **logged)
        self.bar.write(f"step {self.state.step}{said}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    def checkpoint_if_due(self) -> None:
        if self.processes.main and checkpoint_due(self.config, self.state.step, self.steps):
            self.state.seconds = time.time() - self.started
            checkpoint.save(self.out, self.state.step, trainer=self.state.state_dict(), keep=self.config.keep_checkpoints,
                            **self.checkpointed)

    def finish(self) -> dict | None:
        """The run's report on the main process (by the model it ends with; the best evaluation beside it); None
        on the others."""
        if not self.processes.main:
            return None
        self.state.seconds = time.time() - self.started
        self.log.close()
        device = next(self.checkpointed["model"].parameters()).device
        return {**self.state.results(self.steps), "machine": machine_of(device, self.processes.world)}


def machine_of(device: torch.device, processes: int = 1) -> str:
    """Where a run's seconds were measured: the GPU, or the processor (named by family and model: one name can
    cover CPUs of different speeds) and its threads; and the processes, under torchrun."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        from .sparse.calibration import processor

        threads = torch.get_num_threads()
        where = f"{processor()}, {threads} thread{'s' if threads > 1 else ''}"
    return where if processes == 1 else f"{where}, {processes} processes"


def checkpoint_due(config, step: int, steps: int) -> bool:
    return bool(config.save_every) and step % config.save_every == 0 and step < steps


def stop_if_loss_not_finite(loss: torch.Tensor, step: int, out: Path) -> None:
    """A loss that became NaN or infinite ends the run before any model is written, naming the step."""
    if not torch.isfinite(loss):
        ckpt = checkpoint.latest(out)
        where = (f" (its last good checkpoint, {ckpt.name}, would only repeat the run at the same rate on "
                 "--resume)") if ckpt else ""
        raise UserError(f"the loss became {loss.item()} at step {step + 1}; no model was written{where}. "
                        "Run it again with a lower --learning-rate and --overwrite")


def total_steps(config, n_train: int) -> int:
    per_epoch = steps_per_epoch(n_train, config.batch_size)
    return config.max_steps or max(1, math.ceil(config.epochs * per_epoch))


def eval_interval(config, n_train: int) -> int:
    return config.eval_every or steps_per_epoch(n_train, config.batch_size)


def task_loss(task, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if task.is_regression:
        return torch.nn.functional.mse_loss(logits[:, 0], labels)
    return torch.nn.functional.cross_entropy(logits, labels)
