"""Spike coding (paper Table 1): radix (WDT / WDT^-1), parameter transforms (WPT / WPT^-1), rate.

A radix spike train of length T carries a non-negative integer least significant bit first:
``s(t) = floor(X / 2^t) mod 2`` (WDT^-1) and ``X = sum_t 2^t s(t)`` (WDT). Trains are stacked on a
new leading time dimension: ``trains[t]`` is the spike map at step ``t``.

>>> import torch
>>> from radixsnn.core.coding import radix_decode, radix_encode
>>> radix_encode(torch.tensor([5, 6]), 3).T.tolist()   # LSB first: 5 = 1 + 4, 6 = 2 + 4
[[1, 0, 1], [0, 1, 1]]
>>> radix_decode(radix_encode(torch.tensor([5, 6]), 3)).tolist()
[5, 6]
"""
from __future__ import annotations

import torch

from radixsnn.errors import ConfigError


def _check_steps(time_steps: int) -> None:
    if not 1 <= int(time_steps) <= 62:
        raise ConfigError("time_steps", f"must be in 1..62, got {time_steps}")


def radix_encode(x: torch.Tensor, time_steps: int, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """WDT^-1: integers in ``[0, 2^T)`` -> binary trains of shape ``(T, *x.shape)``, LSB first."""
    _check_steps(time_steps)
    xi = torch.as_tensor(x).to(torch.int64)
    if xi.numel() and (int(xi.min()) < 0 or int(xi.max()) >= 1 << time_steps):
        raise ConfigError("x", f"must lie in [0, 2^{time_steps}) to fit {time_steps} steps, got [{int(xi.min())}, {int(xi.max())}]")
    bits = torch.arange(time_steps, device=xi.device).view(-1, *([1] * xi.dim()))
    return ((xi.unsqueeze(0) >> bits) & 1).to(dtype)


def radix_decode(trains: torch.Tensor) -> torch.Tensor:
    """WDT: binary trains ``(T, ...)`` -> integers ``sum_t 2^t s(t)`` (int64)."""
    steps = trains.shape[0]
    _check_steps(steps)
    weights = (torch.ones((), dtype=torch.int64, device=trains.device) << torch.arange(steps, device=trains.device))
    return (trains.to(torch.int64) * weights.view(-1, *([1] * (trains.dim() - 1)))).sum(0)


def wpt(x: torch.Tensor | int, delta_t: int):
    """WPT: integer weight or bias -> real value ``2^-dT x``."""
    return x * 2.0 ** (-delta_t)


def wpt_inverse(x: torch.Tensor | float, delta_t: int):
    """WPT^-1: real weight or bias -> ``2^dT x`` (round it to get the integer parameter)."""
    return x * 2.0 ** delta_t


def radix_quantize(x: torch.Tensor, time_steps: int) -> torch.Tensor:
    """Nearest value in [0, 1] representable by a T-step radix train: ``round(x (2^T-1)) / (2^T-1)``."""
    levels = (1 << time_steps) - 1
    return torch.floor(x.clamp(0, 1) * levels + 0.5) / levels


def rate_encode(x: torch.Tensor, time_steps: int) -> torch.Tensor:
    """Deterministic rate code of values in [0, 1]: ``round(x T)`` spikes spread evenly over T steps.

    Step t fires when ``floor((t+1) x + 1/2) > floor(t x + 1/2)`` (an integrate-and-fire neuron
    with constant input ``x`` and threshold 1 starting at 1/2), so the count is ``round(x T)``.
    """
    _check_rate(time_steps)
    xc = x.clamp(0, 1).unsqueeze(0)
    t = torch.arange(time_steps + 1, device=x.device, dtype=x.dtype).view(-1, *([1] * x.dim()))
    level = torch.floor(t * xc + 0.5)
    return (level[1:] - level[:-1]).to(torch.uint8)


def rate_decode(trains: torch.Tensor) -> torch.Tensor:
    """Rate value: spike count / T."""
    return trains.to(torch.float32).mean(0)


def rate_quantize(x: torch.Tensor, time_steps: int) -> torch.Tensor:
    """Value a T-step rate train represents for ``x`` in [0, 1]: ``round(x T) / T``."""
    _check_rate(time_steps)
    return torch.floor(x.clamp(0, 1) * time_steps + 0.5) / time_steps


def _check_rate(time_steps: int) -> None:
    if int(time_steps) < 1:
        raise ConfigError("time_steps", f"must be >= 1, got {time_steps}")
