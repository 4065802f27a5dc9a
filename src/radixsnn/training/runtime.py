"""Where a training process runs: its device and, under ``torchrun``, its place in the process group.

``torchrun`` (``python -m torch.distributed.run``) sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
when they are present the process joins a group (NCCL on CUDA, Gloo on CPU) and takes GPU
``LOCAL_RANK``. Without them the run is a single process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from radixsnn.errors import ConfigError


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` -> the first GPU when CUDA is available, else the CPU; ``cpu``; ``cuda`` / ``cuda:i``."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError("device", f"{spec!r} is not a device; use auto, cpu, cuda or cuda:INDEX") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device", f"{spec}: CUDA is not available on this machine (use cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError("device", f"{spec}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type != "cpu":
        raise ConfigError("device", f"{spec!r} is not supported; use auto, cpu, cuda or cuda:INDEX")
    return device


@dataclass(frozen=True)
class Runtime:
    """The device of this process and its rank among ``world_size`` training processes."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes files and shows progress."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all processes (float64, so counts stay exact)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def all_reduce_sum_(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over all processes, in place (through this process's device, as the backend needs)."""
        if not self.distributed:
            return t
        on = t.to(self.device)
        dist.all_reduce(on)
        return on if on is t else t.copy_(on)


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def start_runtime(device_spec: str = "auto") -> Runtime:
    """The :class:`Runtime` of this process, joining the process group when launched by ``torchrun``."""
    if not launched_by_torchrun():
        return Runtime(resolve_device(device_spec))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device_spec == "auto":
        device_spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = resolve_device(device_spec)
    if device.type == "cuda":
        if device.index is not None and world_size > 1:
            raise ConfigError("device", "must be cuda, not cuda:INDEX, under torchrun (each process takes GPU LOCAL_RANK)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, rank, world_size, local_rank)


def stop_runtime(runtime: Runtime) -> None:
    """Leave the process group (if this process joined one)."""
    if launched_by_torchrun() and dist.is_initialized():
        dist.destroy_process_group()


R = TypeVar("R")


def run_in_group(device_spec: str, work: Callable[[Runtime], R]) -> R:
    """``work(runtime)`` with this process's :class:`Runtime`; under ``torchrun`` the group is left only once
    every process has finished (a barrier on the normal path only, so a failing process cannot hang the
    others; Gloo can abort a process whose peer has already gone)."""
    runtime = start_runtime(device_spec)
    try:
        result = work(runtime)
        runtime.barrier()
        return result
    finally:
        stop_runtime(runtime)


#: The autocast dtypes of ``--amp``.
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(amp: str | None, device: torch.device) -> None:
    """``amp`` must be ``None``, ``"bf16"`` (any device) or ``"fp16"`` (CUDA only)."""
    if amp is None:
        return
    if amp not in AMP_DTYPES:
        raise ConfigError("amp", f"must be one of {', '.join(AMP_DTYPES)}, got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp", "fp16 needs a CUDA device (its loss scaling is CUDA's); on the CPU use bf16")

