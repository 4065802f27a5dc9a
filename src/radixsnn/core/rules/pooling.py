"""Pooling: max pools (spiking nodes of their own), average pools (pooling neurons, or composed into a
pre-activation), adaptive average pools and global means (read by the classifier as a sum-pool).

A max-pool of spike trains is exact on radix codes only per channel, so each source layer is pooled by
one ``maxpool`` node, shared by every reader. An average pool of spikes is a layer of pooling neurons
(their own T-bit output); a global one is left for the classifier to read as a sum-pool. An average
pool of a pre-activation is composed into its terms (a strided, enlarged kernel).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from radixsnn.core.graph import Node, numel
from radixsnn.core.rules.registry import rule
from radixsnn.core.rules.values import Act, PendingTerm, Pooled, Pre, PreCat, bind, pair, parts, pending, select_channels, shape_of


@rule(nn.MaxPool2d)
def max_pool2d_module(ctx, m: nn.MaxPool2d, args, kwargs):
    if m.return_indices:
        ctx.fail("max_pool2d with return_indices")
    return max_pool2d(ctx, args[0], m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)


@rule(F.max_pool2d)
def max_pool2d_function(ctx, f, args, kwargs):
    p = bind(args, kwargs, ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"])
    if p.get("return_indices"):
        ctx.fail("max_pool2d with return_indices")
    k = p["kernel_size"]
    return max_pool2d(ctx, args[0], k, p.get("stride") or k, p.get("padding", 0), p.get("dilation", 1), p.get("ceil_mode", False))


@rule(nn.AvgPool2d)
def avg_pool2d_module(ctx, m: nn.AvgPool2d, args, kwargs):
    return avg_pool2d(ctx, args[0], m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override)


@rule(F.avg_pool2d)
def avg_pool2d_function(ctx, f, args, kwargs):
    p = bind(args, kwargs, ["input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"])
    k = p["kernel_size"]
    return avg_pool2d(ctx, args[0], k, p.get("stride") or k, p.get("padding", 0), p.get("ceil_mode", False),
                      p.get("count_include_pad", True), p.get("divisor_override"))


@rule(nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d)
def adaptive_avg_pool2d(ctx, target, args, kwargs):
    """An adaptive average pool to a size that divides the input: an average pool."""
    x, shape = args[0], ctx.shape
    src = shape_of(x)
    if len(src) != 3 or src[1] % shape[1] or src[2] % shape[2]:
        ctx.fail("adaptive average pooling to a size that does not divide the input")
    k = (src[1] // shape[1], src[2] // shape[2])
    return avg_pool2d(ctx, x, k, k, 0, False, True, None)


@rule(torch.mean, "mean")
def mean(ctx, target, args, kwargs):
    """The mean over the spatial dimensions: a global average pool."""
    dim = bind(args, kwargs, ["input", "dim", "keepdim"]).get("dim")
    dims = sorted(d % 4 for d in (dim if isinstance(dim, (tuple, list)) else [dim])) if dim is not None else None
    if dims != [2, 3]:
        ctx.fail("only the mean over the spatial dimensions (2, 3) is supported")
    x = ctx.need_act(args[0], "a global average pool")
    return Pooled(x, numel(x.spatial), ctx.shape)


def max_pool2d(ctx, x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False) -> Act:
    """``F.max_pool2d`` of spike trains: one ``maxpool`` node per source layer (shared by its readers)."""
    x = ctx.need_act(x, "max-pooling")
    if "input" in x.sources():
        ctx.fail("max-pooling of the input image")
    if pair(dilation) != (1, 1) or x.stride != 1:
        ctx.fail("max-pooling with dilation or of a subsampled shortcut")
    attrs = {"kernel": list(pair(kernel)), "stride": list(pair(stride or kernel)), "padding": list(pair(padding))}
    shape = ctx.shape
    if ceil_mode:  # the extra windows PyTorch's ceil_mode adds: zero padding after the right and bottom edges
        ends = [(out - 1) * s + k - (size + 2 * p) for out, s, k, p, size in
                zip(shape[1:], attrs["stride"], attrs["kernel"], attrs["padding"], x.spatial)]
        if any(e > 0 for e in ends):
            attrs["pad_end"] = [max(e, 0) for e in ends]
    pooled = {}
    for src in x.sources():  # max-pooling is per channel: pool each source node once
        key = (src, tuple(attrs["kernel"]), tuple(attrs["stride"]), tuple(attrs["padding"]), tuple(attrs.get("pad_end", ())))
        if key not in ctx.pools:
            name = ctx.unique(ctx.label)
            ctx.add_node(Node(name, "maxpool", [ctx.channels[src]] + shape[1:], src=src, attrs=attrs))
            ctx.pools[key] = name
        pooled[src] = ctx.pools[key]
    return Act([(pooled[s], c) if s is not None else (None, -1) for s, c in x.chans], shape[1:])


def avg_pool2d(ctx, x, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    """``F.avg_pool2d``: pooling neurons for spikes, a global pool for the classifier, or composed terms."""
    shape = ctx.shape
    kh, kw = pair(kernel)
    sh, sw = pair(stride or kernel)
    ph, pw = pair(padding)
    if ceil_mode or divisor_override or ((ph or pw) and not count_include_pad):
        ctx.fail("average pooling with ceil_mode, divisor_override or count_include_pad=False "
                 "(its divisor varies with the position)")
    if pending(x):
        return _compose(ctx, x, (kh, kw), (sh, sw), (ph, pw))
    x = ctx.need_act(x, "average pooling")
    if shape[1:] == [1, 1] and (ph, pw) == (0, 0) and x.spatial == [kh, kw]:
        return Pooled(x, x.spatial[0] * x.spatial[1], [len(x.chans), 1, 1])
    c = len(x.chans)
    w = torch.full((c, 1, kh, kw), 1.0 / (kh * kw))
    attrs = {"stride": [sh, sw], "padding": [ph, pw], "dilation": [1, 1], "groups": c}
    layers = []
    for src in x.sources():  # a layer of pooling neurons (their own T-bit output) per source
        cols = [i for i, (s, _) in enumerate(x.chans) if s == src]
        sub = Act([x.chans[i] for i in cols], x.spatial, x.stride)
        terms = ctx.act_terms(sub, "conv2d", w[: len(cols)], {**attrs, "groups": len(cols)})
        layers.append((cols, ctx.neuron(Pre(terms, torch.zeros(len(cols)), [len(cols)] + shape[1:]))))
    chans: list = [(None, -1)] * c
    for cols, act in layers:
        for i, ch in zip(cols, act.chans):
            chans[i] = ch
    return Act(chans, shape[1:])


def _compose(ctx, x, kernel, stride, padding):
    """Average pooling of a pre-activation (a DenseNet transition): composed into its terms."""
    if padding != (0, 0):
        ctx.fail("average pooling with padding of a pre-activation")
    (kh, kw), (sh, sw) = kernel, stride
    shape = ctx.shape
    label = ctx.label
    out = []
    for part in parts(x):
        if isinstance(part, Act):  # pooled spikes: a layer of pooling neurons
            out.append(avg_pool2d(ctx, part, kernel, stride, padding))
            continue
        terms = []
        for t in part.terms:
            a = t.attrs
            if t.op == "conv2d" and a["dilation"] == [1, 1]:
                (s1h, s1w) = a["stride"]
                k1h, k1w = t.weight.shape[2:]
                w = torch.zeros(*t.weight.shape[:2], k1h + (kh - 1) * s1h, k1w + (kw - 1) * s1w)
                for i in range(kh):
                    for j in range(kw):
                        w[:, :, i * s1h:i * s1h + k1h, j * s1w:j * s1w + k1w] += t.weight / (kh * kw)
                attrs = {**a, "stride": [s1h * sh, s1w * sw]}
            elif t.op == "select" and all(c >= 0 for c in select_channels(a, ctx.channels[t.src])):
                chans = select_channels(a, ctx.channels[t.src])
                s = a["stride"]
                w = (t.weight / (kh * kw)).view(-1, 1, 1, 1).expand(-1, 1, kh, kw).clone()
                attrs = {"stride": [s * sh, s * sw], "padding": [0, 0], "dilation": [s, s], "groups": len(chans)}
                if chans != list(range(ctx.channels[t.src])):
                    attrs["channels"] = chans
            else:
                ctx.fail("average pooling of a pre-activation with dilated or zero-padded terms")
            terms.append(PendingTerm(t.src, "conv2d", w, attrs, f"{label}*{t.label}"))
        out.append(Pre(terms, part.bias, [part.shape[0]] + shape[1:]))
    return out[0] if len(out) == 1 else PreCat(out)
