"""Quantizers for the QANN: straight-through-estimator ops and the radix grids.

The only rescale a radix neuron applies is ``2^-dT``, so a layer with output scale ``s_out`` whose
inputs have scale ``s_in`` uses integer weights ``w = round(W s_in / s_out 2^dT)``: the weight grid is
``s_out / (s_in 2^dT)`` and follows from the activation scales and ``dT``. ``dT`` is the largest
shift that keeps every ``|w|`` within the signed ``b``-bit range.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class _FloorSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.floor(x + 0.5)

    @staticmethod
    def backward(ctx, grad):
        return grad


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """``floor(x)`` forward (exact), identity gradient."""
    return _FloorSTE.apply(x)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``floor(x + 1/2)`` (round half up, as the neuron's bias offset does) forward, identity gradient."""
    return _RoundSTE.apply(x)


@dataclass(frozen=True)
class WeightQuant:
    """Signed ``bits``-bit integer weights, symmetric: ``[-(2^(b-1) - 1), 2^(b-1) - 1]``."""

    bits: int = 8

    def __post_init__(self):
        if not 2 <= self.bits <= 16:
            raise ValueError(f"weight bits must be in 2..16, got {self.bits}")

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    def delta_t(self, max_ratio: float, minimum: int = 0, maximum: int = 30) -> int:
        """Largest ``dT`` with ``max_ratio 2^dT <= qmax`` (``max_ratio = max |W s_in / s_out|``), clipped."""
        if not math.isfinite(max_ratio) or max_ratio <= 0:
            return max(minimum, 0)
        dt = math.floor(math.log2(self.qmax / max_ratio))
        # guard against log2 rounding at exact powers of two
        while dt > minimum and max_ratio * 2.0**dt > self.qmax:
            dt -= 1
        return int(min(max(dt, minimum), maximum))

    def quantize(self, ratio: torch.Tensor, delta_t: int) -> torch.Tensor:
        """Integer-valued (float) weights ``clamp(round(ratio 2^dT))`` with a straight-through gradient."""
        return torch.clamp(round_ste(ratio * 2.0**delta_t), -self.qmax, self.qmax)


@dataclass(frozen=True)
class ActQuant:
    """Unsigned ``T``-bit activations: the value of a ``T``-step radix train, ``0 .. 2^T - 1``."""

    time_steps: int

    def __post_init__(self):
        if not 1 <= self.time_steps <= 16:
            raise ValueError(f"time steps must be in 1..16, got {self.time_steps}")

    @property
    def qmax(self) -> int:
        return (1 << self.time_steps) - 1

    def from_sum(self, acc: torch.Tensor, delta_t: int) -> torch.Tensor:
        """The neuron's output for integer sum ``acc``: ``clamp(floor(acc / 2^dT), 0, 2^T - 1)`` (STE)."""
        return torch.clamp(floor_ste(acc * 2.0**-delta_t), 0, self.qmax)


def rounding_offset(delta_t: int) -> int:
    """Integer added to the bias so that the neuron's floor becomes round-half-up: ``2^(dT-1)``."""
    return (1 << (delta_t - 1)) if delta_t > 0 else 0
