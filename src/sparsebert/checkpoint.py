"""Checkpoints that survive a crash: `checkpoint-<step>/` folders written atomically.

Each holds the model and the pruning masks (safetensors), and
`trainer_state.pt` with the optimiser, LR schedule, pruning schedule, RNG state and position in the
data order, read back with `torch.load(weights_only=True)` (no code runs on load). A folder is written
under a temporary name, every file fsynced, then renamed: a killed run leaves either a complete
checkpoint or none, and resuming takes the newest complete one.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import UserError

PATTERN = re.compile(r"^checkpoint-(\d+)$")
PARTIAL = re.compile(r"^\.checkpoint-\d+\.tmp$")  # one a killed run was writing


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tensors(state: dict) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def save(out: Path, step: int, *, model, optimizer, scheduler, trainer: dict, pruner=None,
         extra_modules: dict | None = None, keep: int = 2) -> Path:
    final = out / f"checkpoint-{step}"
    tmp = out / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_tensors(model.state_dict()), str(tmp / "model.safetensors"))
    if pruner is not None:
        pruner.save_masks(tmp / "masks.safetensors")
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "torch_rng": torch.get_rng_state(), "trainer": trainer,
             "modules": {k: m.state_dict() for k, m in (extra_modules or {}).items()}}
    if pruner is not None:
        pruning = pruner.state_dict()
        pruning.pop("masks")
        state["pruner"] = pruning
    torch.save(state, tmp / "trainer_state.pt")
    for f in tmp.iterdir():
        _fsync(f)
    _fsync(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _fsync(out)
    for old in complete_checkpoints(out)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(out: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := PATTERN.match(p.name))
             and (p / "trainer_state.pt").is_file()]
    return [p for _, p in sorted(found)]


def remove_all(out: Path) -> None:
    """For a job that has handed over its finished model (each checkpoint holds the optimiser's state too,
    3-4x the model), and for an overwritten run, whose checkpoints a later --resume would take."""
    for path in out.iterdir():
        if path.is_dir() and (PATTERN.match(path.name) or PARTIAL.match(path.name)):
            shutil.rmtree(path, ignore_errors=True)


def latest(out: Path) -> Path | None:
    found = complete_checkpoints(out) if out.is_dir() else []
    return found[-1] if found else None


def read(path: Path, pruned: bool) -> dict:
    """Every file of a checkpoint, read before anything is restored, so that an unreadable one (a disk that
    filled, a file cut short) changes nothing. Raises OSError, SafetensorError or RuntimeError."""
    files = {"state": torch.load(path / "trainer_state.pt", weights_only=True),
             "model": load_file(str(path / "model.safetensors"))}
    if pruned:
        files["masks"] = load_file(str(path / "masks.safetensors"))
    return files


def load_latest(out: Path, *, model, optimizer, scheduler, pruner=None, extra_modules: dict | None = None):
    """Restores the newest checkpoint that reads whole, in place, saying which ones it passed over;
    returns the trainer dict it was saved with, or None where there is none."""
    for path in reversed(complete_checkpoints(out) if out.is_dir() else []):
        try:
            files = read(path, pruner is not None)
            model.load_state_dict(files["model"], strict=False)
        except (OSError, RuntimeError, SafetensorError, KeyError, pickle.UnpicklingError) as e:
            print(f"{path.name}: unreadable ({type(e).__name__}), passed over; trying the one before", flush=True)
            continue
        state = files["state"]
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        for name, module in (extra_modules or {}).items():
            module.load_state_dict(state["modules"][name])
        if pruner is not None:
            masks = files["masks"]
            pruner.load_state_dict({**state["pruner"], "masks": {k: masks[f"{k}.weight"] for k in pruner.targets}})
        return state["trainer"]
    if out.is_dir() and complete_checkpoints(out):
        raise UserError(f"{out}: no checkpoint there reads whole; start the run again without --resume "
                        "(with --overwrite)")
    return None


def check_free_space(out: Path, model, checkpoints: int) -> None:
    """Room for `checkpoints` checkpoints (model, Adam's two moments, masks) and the final model."""
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    need = param_bytes * (4 * checkpoints + 1) + 50 * 2**20  # + tokenizer, logs, masks
    free = shutil.disk_usage(out).free
    if free < need:
        raise UserError(f"{out}: {free / 2**30:.2f} GiB free but this run needs about {need / 2**30:.2f} GiB "
                        f"({checkpoints} checkpoints and the final model); free some space or lower "
                        "--keep-checkpoints")
