"""Linear layers: the classifier (and hidden fully connected layers) over flattened or pooled spikes.

A linear layer reads a flattened activation (one synapse per channel and position) or a global average
pool (a ``sumpool`` term: each weight divided by the number of positions pooled); a linear layer of a
1-D pre-activation (two linear layers in a row) is one composed map.
"""
from __future__ import annotations

import torch.nn as nn

from radixsnn.core.rules.registry import rule
from radixsnn.core.rules.values import Act, Flat, PendingTerm, Pooled, Pre, describe


@rule(nn.Linear)
def linear_module(ctx, m: nn.Linear, args, kwargs):
    return linear(ctx, args[0], m.weight, m.bias)


def linear(ctx, x, weight, bias=None) -> Pre:
    """``F.linear(x, weight, bias)`` of a flattened activation, a pooled one or a 1-D pre-activation."""
    w = weight.detach().clone()
    b = bias.detach().clone() if bias is not None else w.new_zeros(w.shape[0])
    if isinstance(x, Pooled) or isinstance(x, Flat) and isinstance(x.src, Pooled):
        pooled = x if isinstance(x, Pooled) else x.src
        terms = ctx.act_terms(pooled.src, "linear", w / pooled.positions, {"mode": "sumpool"})
    elif isinstance(x, Flat) or (isinstance(x, Act) and not x.spatial):
        src = x.src if isinstance(x, Flat) else x
        terms = ctx.act_terms(src, "linear", w, {"mode": "flatten"})
    elif isinstance(x, Pre) and len(x.shape) == 1:
        return _compose(ctx, x, w, b)
    else:
        ctx.fail(f"linear layer input must be a flattened spiking layer; got a {describe(x)}")
    return Pre(terms, b, ctx.shape)


def _compose(ctx, x: Pre, w, b) -> Pre:
    """A linear layer of a 1-D pre-activation (two linear layers in a row): one composed linear map."""
    terms = []
    for t in x.terms:
        if t.op != "linear":
            ctx.fail("a linear layer of a pre-activation with shortcut terms")
        terms.append(PendingTerm(t.src, "linear", w @ t.weight, dict(t.attrs), f"{ctx.label}*{t.label}"))
    return Pre(terms, w @ x.bias + b, ctx.shape)
