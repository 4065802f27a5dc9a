"""Channel layout: reshapes, flattening, channel shuffles, slices, ``chunk`` / ``split``, concatenation,
channel padding, and the operations that do nothing at inference (identity, dropout, ``contiguous``).

None of these costs a neuron: an activation's channels are references to channels of spiking nodes,
so a rearrangement only rewrites the references (a synapse term then gathers the channels it reads).
Reshapes are interpreted on an index tensor of the activation's positions: a view that comes back to a
channel permutation (a ShuffleNet shuffle) is an activation again.
"""
from __future__ import annotations

import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from radixsnn.core.graph import numel
from radixsnn.core.rules.registry import rule
from radixsnn.core.rules.values import (Act, Flat, Items, PendingTerm, Pooled, Pre, PreCat, Shaped, bind, cat_acts, dense_conv,
                                        describe, parts, parts_or_none, pending, select_channels, shape_of, slice_part, spiking)

_IDENTITIES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
               F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout, F.feature_alpha_dropout)


@rule(*_IDENTITIES)
def identity(ctx, target, args, kwargs):
    return args[0]


@rule("contiguous", "clone", "detach")
def pass_through(ctx, target, args, kwargs):
    x = args[0]
    return Shaped(x.act, x.index.contiguous()) if isinstance(x, Shaped) else x


@rule(nn.Flatten)
def flatten_module(ctx, m: nn.Flatten, args, kwargs):
    return reshape(ctx, args[0], lambda t: t.flatten(m.start_dim, m.end_dim))


@rule(torch.reshape, torch.permute, torch.transpose, torch.flatten)
def reshape_function(ctx, f, args, kwargs):
    return reshape(ctx, args[0], lambda t: f(t, *args[1:], **kwargs))


@rule("view", "reshape", "permute", "transpose", "flatten")
def reshape_method(ctx, name, args, kwargs):
    return reshape(ctx, args[0], lambda t: getattr(t, name)(*args[1:], **kwargs))


def reshape(ctx, x, op):
    """view / reshape / flatten / permute / transpose (``op`` on a tensor), interpreted on the positions
    of an activation."""
    if isinstance(x, (Pooled, Flat)):
        if len(ctx.shape) != 1:
            ctx.fail("only flattening a pooled tensor")
        return x if isinstance(x, Flat) else Flat(x, ctx.shape)
    if isinstance(x, Pre) and len(ctx.shape) == 1 and len(x.shape) == 1:
        return x
    if isinstance(x, Pre) and len(ctx.shape) == 1 and x.shape[1:] == [1, 1]:
        return _flatten_pre(ctx, x)
    if isinstance(x, PreCat) and spiking(x):
        x = cat_acts(x.parts)
    if isinstance(x, Act):
        index = torch.arange(numel(x.shape)).view(1, *x.shape)
        act = x
    elif isinstance(x, Shaped):
        index, act = x.index, x.act
    else:
        ctx.fail(f"reshape of a {describe(x)} (only activations may be reshaped)")
    try:
        out = op(index)
    except Exception as exc:
        ctx.fail(f"cannot reshape ({exc})")
    return _resolve(ctx, act, out)


def _flatten_pre(ctx, x: Pre) -> Pre:
    """A pre-activation of one position per channel (a pooled sum before the classifier) as a 1-D
    pre-activation: each term becomes a linear map over its source, its kernel cut to the taps that
    read the image (the others read zero padding)."""
    terms = []
    for t in x.terms:
        src = ctx.shapes[t.src]
        a = t.attrs
        if t.op == "conv2d":
            w = dense_conv(t.weight, a["groups"]) if a["groups"] > 1 else t.weight
            (ph, pw), (dh, dw) = a["padding"], a["dilation"]
            lin = torch.zeros(w.shape[0], w.shape[1], src[1], src[2])
            for u in range(w.shape[2]):
                for v in range(w.shape[3]):
                    h, wd = u * dh - ph, v * dw - pw
                    if 0 <= h < src[1] and 0 <= wd < src[2]:
                        lin[:, :, h, wd] += w[:, :, u, v]
            attrs = {"mode": "flatten", **({"channels": a["channels"]} if "channels" in a else {})}
            terms.append(PendingTerm(t.src, "linear", lin.flatten(1), attrs, t.label))
        elif t.op == "select" and src[1:] == [1, 1]:
            chans = select_channels(a, src[0])
            keep = [j for j, c in enumerate(chans) if c >= 0]
            lin = torch.zeros(len(chans), len(keep))
            for col, j in enumerate(keep):
                lin[j, col] = t.weight[j]
            read = [chans[j] for j in keep]
            attrs = {"mode": "flatten", **({} if read == list(range(src[0])) else {"channels": read})}
            terms.append(PendingTerm(t.src, "linear", lin, attrs, t.label))
        else:
            ctx.fail("flattening a pre-activation with this kind of term")
    return Pre(terms, x.bias, [x.shape[0]])


def _resolve(ctx, act: Act, index: torch.Tensor):
    """An activation again when ``index`` is a channel permutation of ``act`` in (C, H, W) layout, a
    flattened activation when it is ``act`` flattened in order, else still in the middle of a reshape."""
    positions = numel(act.spatial)
    if index.dim() == 2 and index.shape[1] == numel(act.shape):
        if torch.equal(index[0], torch.arange(index.shape[1])):
            return Flat(act, [index.shape[1]])
        ctx.fail("a flatten that reorders an activation")
    if index.dim() == len(act.shape) + 1 and list(index.shape[2:]) == list(act.spatial) and positions:
        per = index[0].reshape(index.shape[1], positions)
        chan = per[:, 0] // positions
        if torch.equal(per, chan.view(-1, 1) * positions + torch.arange(positions)):
            return Act([act.chans[int(c)] for c in chan], act.spatial, act.stride)
    return Shaped(act, index)


@rule(operator.getitem)
def getitem_rule(ctx, f, args, kwargs):
    return getitem(ctx, args[0], args[1])


def getitem(ctx, x, index):
    """``x[index]``: an item of a tuple, a channel slice, or ``x[:, :, ::s, ::s]`` subsampling."""
    if isinstance(x, (Items, tuple, list)):
        items = x.items if isinstance(x, Items) else list(x)
        return items[index]
    if not isinstance(index, tuple):
        index = (index,)
    full = slice(None)
    cut = list(index) + [full] * (4 - len(index))
    if len(cut) != 4 or cut[0] != full or not all(isinstance(p, slice) for p in cut):
        ctx.fail("only slices of channels (x[:, a:b]) and subsampling (x[:, :, ::s, ::s]) are supported")
    channel, sh, sw = cut[1], cut[2], cut[3]
    if pending(x):
        if (sh, sw) != (full, full):
            ctx.fail("subsampling a pre-activation")
        return _slice_pre(ctx, x, range(*channel.indices(x.shape[0])))
    x = ctx.need_act(x, "slicing")
    chans = x.chans[channel]
    if (sh, sw) == (full, full):
        return Act(chans, x.spatial, x.stride)
    if not (sh.start in (None, 0) and sw.start in (None, 0) and sh.stop is None and sw.stop is None
            and (sh.step or 1) == (sw.step or 1)) or x.stride != 1:
        ctx.fail("only x[:, :, ::s, ::s] subsampling (once) is supported")
    s = sh.step or 1
    return Act(chans, [(d + s - 1) // s for d in x.spatial], s)


def _slice_pre(ctx, x, rows):
    rows = list(rows)
    if rows != list(range(rows[0], rows[-1] + 1)) if rows else True:
        ctx.fail("only contiguous channel slices of a pre-activation")
    lo, hi = rows[0], rows[-1] + 1
    out, offset = [], 0
    for part in parts(x):
        c = part.shape[0]
        a, b = max(lo, offset) - offset, min(hi, offset + c) - offset
        if a < b:
            out.append(slice_part(part, a, b))
        offset += c
    return out[0] if len(out) == 1 else PreCat(out)


@rule(torch.chunk, torch.split, torch.tensor_split, "chunk", "split", "tensor_split")
def split(ctx, target, args, kwargs):
    """``chunk`` / ``split`` along the channels: a tuple of channel slices."""
    how = target if isinstance(target, str) else target.__name__
    x, arg = args[0], args[1]
    dim = bind(args, kwargs, ["input", "sizes", "dim"]).get("dim", 0)
    if dim not in (1, -3):
        ctx.fail(f"{how} along a dimension other than the channels")
    c = shape_of(x)[0]
    if how == "chunk":
        size = -(-c // arg)
        bounds = [(i, min(i + size, c)) for i in range(0, c, size)]
    elif how == "split" and isinstance(arg, int):
        bounds = [(i, min(i + arg, c)) for i in range(0, c, arg)]
    elif how == "split":
        starts = [sum(arg[:i]) for i in range(len(arg))]
        bounds = [(s, s + k) for s, k in zip(starts, arg)]
    else:
        ctx.fail("tensor_split")
    return Items([getitem(ctx, x, (slice(None), slice(a, b))) for a, b in bounds])


@rule(torch.cat)
def cat(ctx, f, args, kwargs):
    """``torch.cat`` along the channels: one activation, or a concatenation kept in parts."""
    p = bind(args, kwargs, ["tensors", "dim"])
    if p.get("dim", 0) not in (1, -3):
        ctx.fail("concatenation along a dimension other than the channels")
    pieces = []
    for item in p["tensors"]:
        got = parts_or_none(item)
        if got is None:
            ctx.fail(f"concatenation of a {describe(item)}")
        pieces.extend(got)
    spatial = [q.shape[1:] for q in pieces]
    if any(s != spatial[0] for s in spatial):
        ctx.fail(f"concatenation of shapes {[q.shape for q in pieces]}")
    if all(isinstance(q, Act) for q in pieces):
        return cat_acts(pieces)
    return PreCat(pieces)


@rule(F.pad)
def pad(ctx, f, args, kwargs):
    """Zero channels around spike trains (an option-A shortcut's padding)."""
    p = bind(args, kwargs, ["input", "pad", "mode", "value"])
    x = ctx.need_act(args[0], "padding")
    widths = list(p["pad"])
    if p.get("mode", "constant") != "constant" or (p.get("value") or 0) != 0:
        ctx.fail("only zero padding of a spiking layer's channels is supported")
    if len(widths) != 6 or any(widths[:4]) or min(widths) < 0:
        ctx.fail("only channel padding F.pad(x, (0, 0, 0, 0, a, b)) is supported")
    zeros = [(None, -1)]
    return Act(zeros * widths[4] + x.chans + zeros * widths[5], x.spatial, x.stride)
