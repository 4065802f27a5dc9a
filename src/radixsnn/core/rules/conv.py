"""Convolutions: synapse maps from spike trains, and 1x1 convolutions composed into pre-activations.

A convolution of an activation is a pre-activation of one ``conv2d`` term per source layer (a grouped
convolution over channels of several layers is cut into runs of groups that read one layer each). A
convolution of a pre-activation has no neurons to read; a 1x1 one (a projection after a pre-activation
sum, a DenseNet transition) is composed into the terms before it instead.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from radixsnn.core.rules.registry import rule
from radixsnn.core.rules.values import Act, PendingTerm, Pre, PreCat, dense_conv, pair, parts, pending, select_channels


@rule(nn.Conv2d)
def conv2d_module(ctx, m: nn.Conv2d, args, kwargs):
    return conv2d(ctx, args[0], m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups, m.padding_mode)


def conv2d(ctx, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """``F.conv2d(x, weight, bias, ...)`` of a value: a pre-activation (a :class:`PreCat` for groups that
    read several layers)."""
    if padding_mode != "zeros" or isinstance(padding, str):
        ctx.fail("only numeric zero padding is supported")
    w = weight.detach().clone()
    b = bias.detach().clone() if bias is not None else torch.zeros(w.shape[0])
    attrs = {"stride": list(pair(stride)), "padding": list(pair(padding)), "dilation": list(pair(dilation)), "groups": int(groups)}
    if pending(x):
        return _compose(ctx, x, w, b, attrs)
    x = ctx.need_act(x, "a convolution")
    shape = ctx.shape
    g = attrs["groups"]
    if g == 1 or len(x.sources()) <= 1:
        return Pre(ctx.act_terms(x, "conv2d", w, attrs), b, shape)
    # groups over channels of several layers: each run of groups that reads one layer is one part
    per_in, per_out = len(x.chans) // g, w.shape[0] // g
    runs: list[list[int]] = []
    keys: list[str | None] = []
    for k in range(g):
        srcs = {src for src, _ in x.chans[k * per_in:(k + 1) * per_in]}
        key = next(iter(srcs)) if len(srcs) == 1 and None not in srcs else None  # None: a mixed group
        if runs and key is not None and keys[-1] == key:
            runs[-1].append(k)
        else:
            runs.append([k])
            keys.append(key)
    out = []
    for run in runs:
        lo, hi = run[0], run[-1] + 1
        sub = Act(x.chans[lo * per_in:hi * per_in], x.spatial, x.stride)
        w_run = w[lo * per_out:hi * per_out]
        if len(sub.sources()) != 1:  # one group reading several layers: a dense map within the group
            terms = ctx.act_terms(sub, "conv2d", w_run, {**attrs, "groups": 1})
        else:
            terms = ctx.act_terms(sub, "conv2d", w_run, {**attrs, "groups": hi - lo})
        out.append(Pre(terms, b[lo * per_out:hi * per_out], [(hi - lo) * per_out] + shape[1:]))
    return PreCat(out)


def _compose(ctx, x, w, b, attrs) -> Pre:
    """A 1x1 convolution of a pre-activation: composed into the pre-activation's terms."""
    if list(w.shape[2:]) != [1, 1] or attrs["padding"] != [0, 0] or attrs["groups"] != 1:
        ctx.fail("a convolution must follow a ReLU (or read the input), but this one reads a pre-activation, "
                 "which no radix neuron emits; only 1x1 convolutions of pre-activations are composed into "
                 "the terms before them")
    mat = w[:, :, 0, 0]
    terms, bias = [], b.clone()
    offset = 0
    for part in parts(x):
        rows = part.shape[0]
        block = mat[:, offset:offset + rows]
        offset += rows
        pre = ctx.as_pre(part) if isinstance(part, Act) else part
        bias = bias + block @ pre.bias
        for t in pre.terms:
            terms.append(_compose_1x1(ctx, t, block, attrs["stride"]))
    return Pre(terms, bias, ctx.shape)


def _compose_1x1(ctx, t: PendingTerm, block: torch.Tensor, stride) -> PendingTerm:
    label = f"{ctx.label}*{t.label}"
    if t.op == "conv2d":
        a = t.attrs
        w = dense_conv(t.weight, a["groups"]) if a["groups"] > 1 else t.weight
        composed = torch.einsum("om,mikl->oikl", block, w)
        attrs = {**a, "groups": 1, "stride": [a["stride"][0] * stride[0], a["stride"][1] * stride[1]]}
        return PendingTerm(t.src, "conv2d", composed, attrs, label)
    if t.op == "select":
        a = t.attrs
        if a["stride"] != 1 and stride != [1, 1] or stride[0] != stride[1]:
            ctx.fail("a strided 1x1 convolution of a subsampled shortcut")
        src_channels = ctx.channels[t.src]
        chans = select_channels(a, src_channels)
        w = torch.zeros(block.shape[0], len(chans), 1, 1)
        for j, c in enumerate(chans):
            if c >= 0:
                w[:, j, 0, 0] = block[:, j] * t.weight[j]
        keep = [j for j, c in enumerate(chans) if c >= 0]
        gathered = [chans[j] for j in keep]
        attrs = {"stride": [a["stride"] * stride[0]] * 2, "padding": [0, 0], "dilation": [1, 1], "groups": 1}
        if gathered != list(range(src_channels)):
            attrs["channels"] = gathered
        return PendingTerm(t.src, "conv2d", w[:, keep], attrs, label)
    ctx.fail("a convolution of a flattened pre-activation")
