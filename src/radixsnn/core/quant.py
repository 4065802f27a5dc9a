"""Quantizers for the QANN: straight-through-estimator ops and the radix grids.

The only rescale a radix neuron applies is ``2^-dT``, so a layer with output scale ``s_out`` whose
inputs have scale ``s_in`` uses integer weights ``w = round(W s_in / s_out 2^dT)``: the weight grid is
``s_out / (s_in 2^dT)`` and follows from the activation scales and ``dT``. ``dT`` is the largest
shift that keeps every ``|w|`` within the signed ``b``-bit range.

The quantizers are small frozen specs:

>>> from radixsnn.core.quant import ActQuant, WeightQuant
>>> WeightQuant(3).qmax, ActQuant(4).qmax
(3, 15)
>>> WeightQuant(8).delta_t(max_ratio=0.9)   # 0.9 * 2^7 = 115.2 <= 127 < 0.9 * 2^8
7
>>> import torch
>>> ActQuant(2).from_sum(torch.tensor([-5.0, 3.0, 9.0, 40.0]), delta_t=1).tolist()  # clamp(floor(x / 2), 0, 3)
[0.0, 1.0, 3.0, 3.0]

and so is the calibration rule that picks each layer's clip value:

>>> Calibration.parse("percentile:99.9")
Calibration(method='percentile', percentile=99.9)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from radixsnn.errors import ConfigError

#: Largest time-step count (train length) the converter, the QANN and the engines accept.
MAX_TIME_STEPS = 16
#: Largest shift ``dT`` a layer may use.
MAX_DELTA_T = 30


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
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 16:
            raise ConfigError("weight_bits", f"must be an integer in 2..16, got {self.bits!r}")

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    def delta_t(self, max_ratio: float, minimum: int = 0, maximum: int = MAX_DELTA_T) -> int:
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

    def quantize_gain(self, x: torch.Tensor, max_delay: int | torch.Tensor = MAX_DELTA_T) -> torch.Tensor:
        """The nearest ``m 2^k`` to ``x`` with ``|m| <= qmax`` and ``0 <= k <= max_delay`` (straight-through
        gradient): a ``b``-bit synapse whose spikes arrive ``k`` steps late, which multiplies their weight by
        ``2^k``. ``max_delay`` broadcasts against ``x`` (one per output channel).

        >>> WeightQuant(3).quantize_gain(torch.tensor([1.0, 5.0, 7.0, 33.0, -40.0, 100.0]), max_delay=4).tolist()
        [1.0, 6.0, 6.0, 32.0, -32.0, 48.0]
        """
        target = x.detach()
        top = torch.as_tensor(max_delay, dtype=target.dtype, device=target.device)
        low = torch.floor(torch.log2(target.abs().clamp_min(1) / self.qmax)).clamp(min=0)
        best = None
        for k in (torch.minimum(low, top), torch.minimum(low + 1, top)):
            step = 2.0**k
            v = self.quantize(target / step, 0) * step
            best = v if best is None else torch.where((v - target).abs() < (best - target).abs(), v, best)
        return x + (best - x).detach()

    def split_gain(self, gain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m, k)`` with ``gain = m 2^k``, ``|m| <= qmax`` and ``k`` the least such delay (int64 tensors);
        raises ``ValueError`` for a gain that has no such form.

        >>> [t.tolist() for t in WeightQuant(3).split_gain(torch.tensor([0, -3, 6, 8, 48]))]
        [[0, -3, 3, 2, 3], [0, 0, 1, 2, 4]]
        """
        g = gain.to(torch.int64)
        k = torch.zeros_like(g)
        while True:
            big = g.abs() > (self.qmax << k)
            if not bool(big.any()):
                break
            k = k + big.to(torch.int64)
            if int(k.max()) > 62:
                raise ValueError("gain out of range")
        m = torch.div(g, 1 << k, rounding_mode="floor")
        if not torch.equal(m << k, g):
            raise ValueError(f"a gain is not a {self.bits}-bit weight times a power of two")
        return m, k

@dataclass(frozen=True)
class ActQuant:
    """Unsigned ``T``-bit activations: the value of a ``T``-step radix train, ``0 .. 2^T - 1``."""

    time_steps: int

    def __post_init__(self):
        if not isinstance(self.time_steps, int) or not 1 <= self.time_steps <= MAX_TIME_STEPS:
            raise ConfigError("time_steps", f"must be an integer in 1..{MAX_TIME_STEPS}, got {self.time_steps!r}")

    @property
    def qmax(self) -> int:
        return (1 << self.time_steps) - 1

    def from_sum(self, acc: torch.Tensor, delta_t: int | torch.Tensor) -> torch.Tensor:
        """The neuron's output for integer sum ``acc``: ``clamp(floor(acc / 2^dT), 0, 2^T - 1)`` (STE);
        a tensor ``delta_t`` (broadcast against ``acc``) is a shift per neuron."""
        return torch.clamp(floor_ste(acc * 2.0**-delta_t), 0, self.qmax)


def check_each(value, spec) -> None:
    """Build ``spec`` (:class:`ActQuant`, :class:`WeightQuant`) from one value, or from every value of a
    per-layer assignment ``{"default": v, layer: v or [v, ...], ...}``, so that a bad one fails before any work.

    >>> check_each({"default": 4, "conv1": 17}, ActQuant)
    Traceback (most recent call last):
    ...
    radixsnn.errors.ConfigError: time_steps must be an integer in 1..16, got 17
    """
    for v in (value.values() if isinstance(value, dict) else [value]):
        for one in (v if isinstance(v, list) else [v]):  # a list: one value per output channel
            spec(one)


def rounding_offset(delta_t: int | torch.Tensor):
    """Integer added to the bias so that the neuron's floor becomes round-half-up: ``2^(dT-1)``."""
    if isinstance(delta_t, torch.Tensor):
        return torch.where(delta_t > 0, 2.0 ** (delta_t - 1), torch.zeros_like(delta_t, dtype=torch.float64))
    return (1 << (delta_t - 1)) if delta_t > 0 else 0


@dataclass(frozen=True)
class Calibration:
    """How a layer's clip value (``scale x (2^T - 1)``) is chosen from its float activations.

    ``"mse"``: the clip that minimizes the mean squared ``T``-bit quantization error (50 candidates up to
    the maximum). ``"percentile:P"``: the ``P``-th percentile of the positive activations, ``0 < P <= 100``.
    """

    method: str = "mse"
    percentile: float | None = None

    @classmethod
    def parse(cls, text: str) -> "Calibration":
        """``"mse"`` or ``"percentile:P"`` (``"percentile"`` alone means 99.99)."""
        if not isinstance(text, str):
            raise ConfigError("calib", f"must be 'mse' or 'percentile:P', got {text!r}")
        if text == "mse":
            return cls("mse")
        name, sep, value = text.partition(":")
        if name != "percentile" or (sep and not value):
            raise ConfigError("calib", f"must be 'mse' or 'percentile:P' (e.g. percentile:99.99), got {text!r}")
        try:
            p = float(value) if sep else 99.99
        except ValueError:
            raise ConfigError("calib", f"percentile must be a number, got {value!r}") from None
        if not (math.isfinite(p) and 0 < p <= 100):
            raise ConfigError("calib", f"percentile must lie in (0, 100], got {value}")
        return cls("percentile", p)

    def clip(self, values: torch.Tensor, qmax: int) -> torch.Tensor:
        """Clip value for non-negative activations ``values`` quantized to ``qmax + 1`` levels."""
        top = values.max()
        if top <= 0:
            return torch.tensor(1.0)
        if self.method == "percentile":
            return positive_percentile(values, self.percentile).clamp_min(1e-8)
        clips = top * torch.linspace(0.02, 1.0, 50, dtype=values.dtype)
        errors = torch.cat([quant_mse(values, chunk, qmax) for chunk in clips.split(10)])
        return clips[int(errors.argmin())]


def positive_percentile(values: torch.Tensor, percentile: float) -> torch.Tensor:
    """The ``percentile`` (0..100] of the positive entries of ``values`` (the k-th smallest, k rounded).

    Zeros are left out, as in Rueckauer et al. (2017): a ReLU layer is mostly zeros, and those say nothing
    about the range to cover. ``values`` must hold at least one positive entry.

    >>> positive_percentile(torch.tensor([0.0, 0.0, 1.0, 2.0, 3.0, 4.0]), 50).item()
    2.0
    """
    v = values[values > 0]
    k = max(1, min(v.numel(), int(round(percentile / 100.0 * v.numel()))))
    return v.kthvalue(k).values


def quant_mse(values: torch.Tensor, clips: torch.Tensor, qmax: int) -> torch.Tensor:
    """Mean squared T-bit quantization error of ``values`` for each candidate clip (vectorized)."""
    s = (clips / qmax).view(-1, 1)
    q = torch.clamp(torch.floor(values.view(1, -1) / s + 0.5), 0, qmax) * s
    return ((q - values.view(1, -1)) ** 2).mean(dim=1)
