"""Several processes through torchrun: gloo on CPUs, NCCL on GPUs.

Every rank takes its share of each global batch (`--batch-size` stays the global batch), gradients
are averaged with one all-reduce per step, so every rank applies the same update and computes the
same masks; rank 0 broadcasts the masks anyway, so they cannot drift. Only rank 0 logs, evaluates
and writes.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from .errors import UserError


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, indices: list[int]) -> tuple[list[int], float]:
        """This rank's examples of a global batch, and the factor that makes the mean of the ranks'
        mean losses equal the global batch's mean loss."""
        local = indices[self.rank::self.world]
        return local, len(local) * self.world / len(indices)


def pick_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu")
    return torch.device(name)


def start(device_name: str | None, precision: str = "fp32") -> tuple[Processes, torch.device]:
    device = pick_device(device_name)
    if precision == "fp16" and device.type != "cuda":  # CPU autocast in fp16 is slow and its gradients underflow
        raise UserError(f"--precision fp16 needs a GPU; this run is on the {device.type}: use --precision bf16 or fp32")
    processes, device = join(device)
    if precision == "bf16" and device.type == "cpu" and processes.main and not native_bf16():
        print("note: this CPU has no bfloat16 instructions (AVX512_BF16 or AMX), so --precision bf16 runs emulated, "
              "several times slower than fp32; --precision fp32 is faster here", file=sys.stderr)
    return processes, device


def join(device: torch.device) -> tuple[Processes, torch.device]:
    """This process's place among those torchrun started (one alone without it), and its device: under torchrun
    on GPUs, the one of its local rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Processes(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size()), device


def native_bf16() -> bool:
    """Whether the CPU multiplies in bfloat16 itself; without it PyTorch converts every operand and bf16 autocast
    costs more than it saves."""
    from .sparse.calibration import instruction_sets

    return bool({"avx512_bf16", "amx_bf16"} & set(instruction_sets()))


def average_gradients(parameters, processes: Processes) -> None:
    if processes.world == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= processes.world
    for grad, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        grad.copy_(synced)


def broadcast_masks(pruner, processes: Processes) -> None:
    if processes.world == 1:
        return
    for name, mask in pruner.masks.items():
        as_bytes = mask.to(torch.uint8)
        dist.broadcast(as_bytes, src=0)
        pruner.masks[name] = as_bytes.bool()
    pruner.apply()


def finish(processes: Processes) -> None:
    if processes.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def autocast(device: torch.device, precision: str):
    """bf16/fp16 autocast; fp32 does nothing. fp16 runs on GPUs only (start refuses it elsewhere before
    anything is written)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
