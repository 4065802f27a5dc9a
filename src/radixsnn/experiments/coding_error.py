r"""How well radix and rate spike trains represent a network's real activations (paper Fig. 3).

Each ReLU layer's outputs are divided by a per-layer scale (its maximum over the images, or a high
percentile of its non-zero outputs; values above the scale are clipped to 1) so that they lie in
``[0, 1]``. Every value ``x`` is then coded with ``T`` steps and the residual ``q(x) - x`` of the
represented value ``q(x)`` is accumulated over all activations of all layers:

* ``radix``: ``q(x) = round(x (2^T - 1)) / (2^T - 1)`` -- a ``T``-step radix train holds an integer
  ``0 .. 2^T - 1``, so the top of the range, 1, is representable (:func:`radixsnn.core.coding.radix_quantize`);
* ``radix_pow2``: ``q(x) = min(round(x 2^T), 2^T - 1) / 2^T`` -- the same integers read with the
  paper's normalization "by 2^T": the grid step is ``2^-T`` but 1 itself is not representable, so
  values within half a step of 1 are off by up to ``2^-T``;
* ``rate``: ``q(x) = round(x T) / T`` -- ``T`` steps hold a spike count ``0 .. T``
  (:func:`radixsnn.core.coding.rate_quantize`).

For each coding and ``T`` the result holds the RMSE and the smallest and largest residual. Exact
zeros (about half of all ReLU outputs) are coded exactly by every scheme; they count in the RMSE
with residual 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from tqdm import tqdm

from radixsnn.core.coding import radix_quantize, rate_quantize
from radixsnn.core.inputs import model_normalization
from radixsnn.errors import ConfigError
from radixsnn.outputs import write_text
from radixsnn.experiments.activations import activation_scales, iter_relu_activations

CODINGS = ("radix", "radix_pow2", "rate")


def radix_pow2_quantize(x: torch.Tensor, time_steps: int) -> torch.Tensor:
    """The radix integer for ``x`` in [0, 1] read as ``X / 2^T``: ``min(round(x 2^T), 2^T - 1) / 2^T``."""
    top = float(1 << time_steps)
    return torch.clamp(torch.floor(x.clamp(0, 1) * top + 0.5), max=top - 1) / top


_QUANTIZERS = {"radix": radix_quantize, "radix_pow2": radix_pow2_quantize, "rate": rate_quantize}


@dataclass
class _Accumulator:
    """Running sum of squared residuals, count and extremes for one (coding, T)."""

    sum_sq: float = 0.0
    count: int = 0
    min_res: float = 0.0
    max_res: float = 0.0

    def add(self, residual: torch.Tensor, zeros: int) -> None:
        self.count += residual.numel() + zeros
        if residual.numel():
            self.sum_sq += float(torch.sum(residual.double() ** 2))
            self.min_res = min(self.min_res, float(residual.min()))
            self.max_res = max(self.max_res, float(residual.max()))

    @property
    def rmse(self) -> float:
        return math.sqrt(self.sum_sq / self.count) if self.count else float("nan")


@dataclass
class CodingErrorReport:
    """Result of :func:`coding_error`: one row per (coding, T), plus how the data were normalized."""

    rows: list[dict] = field(default_factory=list)
    scales: dict[str, float] = field(default_factory=dict)
    percentile: float = 100.0
    images: int = 0
    activations: int = 0
    zero_fraction: float = 0.0
    clipped_fraction: float = 0.0

    def rmse(self, coding: str, time_steps: int) -> float:
        for row in self.rows:
            if row["coding"] == coding and row["time_steps"] == time_steps:
                return row["rmse"]
        raise KeyError(f"no {coding} row for T={time_steps}")

    def matching_rate_steps(self, radix_steps: int) -> int | None:
        """Smallest rate ``T`` whose RMSE is at most the radix RMSE at ``radix_steps`` (None: no such T)."""
        target = self.rmse("radix", radix_steps)
        rates = sorted((r["time_steps"], r["rmse"]) for r in self.rows if r["coding"] == "rate")
        return next((t for t, e in rates if e <= target), None)

    def claims(self) -> dict:
        """The paper's two Fig. 3 statements, measured (None where a needed T was not computed)."""
        out: dict = {}
        try:
            radix8, rate8 = self.rmse("radix", 8), self.rmse("rate", 8)
            out["radix_vs_rate_T8_reduction"] = 1.0 - radix8 / rate8
        except KeyError:
            out["radix_vs_rate_T8_reduction"] = None
        try:
            out["radix_T16_over_rate_T256"] = self.rmse("radix", 16) / self.rmse("rate", 256)
        except KeyError:
            out["radix_T16_over_rate_T256"] = None
        for t in (8, 16):
            try:
                out[f"rate_steps_matching_radix_T{t}"] = self.matching_rate_steps(t)
            except KeyError:
                out[f"rate_steps_matching_radix_T{t}"] = None
        return out

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "activations": self.activations,
            "zero_fraction": self.zero_fraction,
            "clipped_fraction": self.clipped_fraction,
            "percentile": self.percentile,
            "scales": self.scales,
            "claims": self.claims(),
            "rows": self.rows,
        }


def _check_steps(steps, coding: str, upper: int | None) -> list[int]:
    steps = sorted(set(int(t) for t in steps))
    if not steps or steps[0] < 1 or (upper is not None and steps[-1] > upper):
        bound = f"1..{upper}" if upper else ">= 1"
        raise ConfigError(f"{coding}_steps", f"must be in {bound}, got {steps}")
    return steps


@torch.no_grad()
def coding_error(
    model: nn.Module,
    images: torch.Tensor,
    radix_steps=range(1, 17),
    rate_steps=range(1, 257),
    percentile: float = 100.0,
    batch_size: int = 100,
    progress: bool = True,
    mean=None,
    std=None,
) -> CodingErrorReport:
    """Residuals of radix, radix-read-by-2^T and rate coding on ``model``'s ReLU outputs over ``images``.

    Two passes over the images: the first finds each layer's scale (``percentile`` of its non-zero
    outputs, 100 = maximum), the second codes every normalized activation with every ``T``.
    ``mean`` / ``std`` normalize the pixels (default: the model's registry config).
    """
    radix_steps = _check_steps(radix_steps, "radix", 24)
    rate_steps = _check_steps(rate_steps, "rate", None)
    if len(images) == 0:
        raise ConfigError("images", "holds no images to measure the coding error on")
    mean, std = model_normalization(model, mean, std)
    scales = activation_scales(model, images, percentile=percentile, batch_size=batch_size, mean=mean, std=std)
    plan = [("radix", t) for t in radix_steps] + [("radix_pow2", t) for t in radix_steps]
    plan += [("rate", t) for t in rate_steps]
    acc = {key: _Accumulator() for key in plan}
    total = zeros = clipped = 0
    batches = iter_relu_activations(model, images, batch_size, mean, std)
    bar = tqdm(total=len(images), desc="coding error", unit="img", disable=not progress)
    for start, acts in zip(range(0, len(images), batch_size), batches):
        for name, act in acts.items():
            x = act.flatten().float() / scales[name]
            nonzero = x[x > 0]
            total += x.numel()
            zeros += x.numel() - nonzero.numel()
            clipped += int((nonzero > 1).sum())
            nonzero = nonzero.clamp(max=1.0)
            n_zero = x.numel() - nonzero.numel()
            for coding, t in plan:
                acc[(coding, t)].add(_QUANTIZERS[coding](nonzero, t) - nonzero, n_zero)
        bar.update(min(batch_size, len(images) - start))
    bar.close()
    rows = [
        {"coding": c, "time_steps": t, "rmse": a.rmse, "min_residual": a.min_res, "max_residual": a.max_res}
        for (c, t), a in acc.items()
    ]
    return CodingErrorReport(
        rows=rows,
        scales=scales,
        percentile=percentile,
        images=len(images),
        activations=total,
        zero_fraction=zeros / total,
        clipped_fraction=clipped / total,
    )


def write_csv(report: CodingErrorReport, path) -> None:
    """One line per (coding, T): ``coding,time_steps,rmse,min_residual,max_residual``."""
    cols = ("coding", "time_steps", "rmse", "min_residual", "max_residual")
    lines = [",".join(cols)]
    for row in report.rows:
        lines.append(",".join(f"{row[c]:.6e}" if isinstance(row[c], float) else str(row[c]) for c in cols))
    write_text(path, "\n".join(lines) + "\n", "out")
