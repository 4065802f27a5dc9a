"""BatchNorm folding and the other per-channel affine maps (``x * c``, ``x / c`` for constants ``c``).

An affine map of a pre-activation scales its terms' weights and its bias; of spike trains, it first
views them as a pre-activation of unit ``select`` terms (a scaled shortcut).
"""
from __future__ import annotations

import math
import operator

import torch
import torch.nn as nn

from radixsnn.core.rules.refusals import WHY
from radixsnn.core.rules.registry import rule
from radixsnn.core.rules.values import Act, PendingTerm, Pre, PreCat, describe


@rule(nn.BatchNorm1d, nn.BatchNorm2d)
def batchnorm_module(ctx, m, args, kwargs):
    """Inference BatchNorm: ``y = (x - mean) / sqrt(var + eps) * weight + bias``, folded into the terms."""
    if not m.track_running_stats or m.running_mean is None:
        ctx.fail("BatchNorm without running statistics cannot be folded into the weights")
    scale = m.weight.detach() / torch.sqrt(m.running_var + m.eps) if m.affine else 1 / torch.sqrt(m.running_var + m.eps)
    shift = (m.bias.detach() if m.affine else 0) - m.running_mean * scale
    return affine(ctx, args[0], scale, shift)


def affine(ctx, x, scale: torch.Tensor, shift: torch.Tensor):
    """``x * scale + shift`` per channel, for a pre-activation, an activation or a concatenation."""
    scale, shift = scale.detach().float(), shift.detach().float()
    if isinstance(x, PreCat):
        out, offset = [], 0
        for part in x.parts:
            c = part.shape[0]
            out.append(affine(ctx, part, scale[offset:offset + c], shift[offset:offset + c]))
            offset += c
        return PreCat(out)
    if isinstance(x, Act):
        x = ctx.as_pre(x)
    if not isinstance(x, Pre):
        ctx.fail(f"BatchNorm applied to a {describe(x)}")
    terms = []
    for t in x.terms:
        view = (-1,) + (1,) * (t.weight.dim() - 1)
        terms.append(PendingTerm(t.src, t.op, t.weight * scale.view(view), t.attrs, t.label))
    return Pre(terms, x.bias * scale + shift, x.shape)


@rule(operator.mul, operator.imul, torch.mul, "mul", "mul_")
def multiply(ctx, target, args, kwargs):
    return scalar(ctx, args[0], args[1], divide=False)


@rule(operator.truediv, torch.div, "div", "div_")
def divide(ctx, target, args, kwargs):
    return scalar(ctx, args[0], args[1], divide=True)


multiply.scales_by_constants = divide.scales_by_constants = True  # a product of two tensors is refused up front


def scalar(ctx, a, b, divide: bool):
    """``a * b`` or ``a / b`` where one side is a finite constant: an affine map."""
    if isinstance(a, (int, float)) and not divide:
        a, b = b, a
    if not isinstance(b, (int, float)) or isinstance(b, bool) or not math.isfinite(b) or (divide and b == 0):
        ctx.fail(WHY["product"])
    c = 1.0 / b if divide else float(b)
    channels = a.shape[0] if hasattr(a, "shape") else None
    if channels is None:
        ctx.fail(f"scaling a {describe(a)}")
    return affine(ctx, a, torch.full((channels,), c), torch.zeros(channels))
