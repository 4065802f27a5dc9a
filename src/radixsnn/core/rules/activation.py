"""ReLU and clips at a constant: what turns a pre-activation into a layer of radix neurons.

A radix neuron rectifies its sum and saturates it at ``2^T - 1`` (the top of its activation scale), so a
ReLU of a pre-activation is a layer of neurons, and a clip at ``c`` (``ReLU6``, ``Hardtanh(0, c)``,
``clamp(0, c)``) a layer whose saturation is at most ``c``. A ReLU of spikes is the spikes themselves;
a clip of spikes needs neurons of its own (spikes above the clip must be cut).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from radixsnn.core.rules.refusals import WHY
from radixsnn.core.rules.registry import rule
from radixsnn.core.rules.values import Act, Pre, PreCat, bind, cat_acts, describe


@rule(nn.ReLU, F.relu, torch.relu, torch.relu_, "relu", "relu_")
def relu_rule(ctx, target, args, kwargs):
    return relu(ctx, args[0])


@rule(nn.ReLU6, F.relu6)
def relu6_rule(ctx, target, args, kwargs):
    return relu(ctx, args[0], clip=6.0)


@rule(nn.Hardtanh)
def hardtanh_module(ctx, m: nn.Hardtanh, args, kwargs):
    return hardtanh(ctx, args[0], m.min_val, m.max_val)


@rule(F.hardtanh)
def hardtanh_function(ctx, f, args, kwargs):
    p = bind(args, kwargs, ["input", "min_val", "max_val", "inplace"])
    return hardtanh(ctx, args[0], p.get("min_val", -1.0), p.get("max_val", 1.0))


@rule(torch.clamp, torch.clip, torch.clamp_min, "clamp", "clamp_", "clip", "clamp_min", "clamp_min_")
def clamp_rule(ctx, target, args, kwargs):
    p = bind(args, kwargs, ["input", "min", "max"])
    return clamp(ctx, args[0], p.get("min"), p.get("max"))


def relu(ctx, x, clip: float | None = None):
    """``relu(x)``, or ``clamp(x, 0, clip)``: a layer of radix neurons for a pre-activation."""
    if isinstance(x, PreCat):
        return cat_acts([relu(ctx, p, clip) for p in x.parts])
    if isinstance(x, Act):
        if clip is None:
            return x  # already non-negative
        return ctx.neuron(ctx.as_pre(x), clip=clip)  # spikes above the clip need neurons of their own
    if not isinstance(x, Pre):
        ctx.fail(f"ReLU applied to a {describe(x)}")
    return ctx.neuron(x, clip=clip)


def hardtanh(ctx, x, lo, hi):
    if lo != 0:
        ctx.fail(f"Hardtanh({lo}, {hi}): {WHY['activation']} (the lower bound must be 0)")
    return relu(ctx, x, clip=float(hi))


def clamp(ctx, x, lo, hi):
    if lo is None or lo != 0 or (hi is not None and not (isinstance(hi, (int, float)) and hi > 0)):
        ctx.fail(f"clamp({lo}, {hi}): {WHY['activation']} (min must be 0, max a positive constant)")
    return relu(ctx, x, clip=None if hi is None else float(hi))
