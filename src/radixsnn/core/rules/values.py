"""The values a conversion computes with: what a traced tensor *is* for a radix SNN.

The walk over a traced model (:mod:`radixsnn.core.trace`) is an abstract interpretation; every tensor
of the float model is one of these values:

* :class:`Act` -- spike trains: the input, a layer of neurons, a max-pool -- or a view of several: each
  channel is a channel of some spiking node (or zero), so channel concatenation, slices, ``chunk`` /
  ``split``, channel shuffles and option-A shortcuts (stride-2 subsampling plus zero channels) cost
  nothing: a synapse term simply reads the channels it needs (its ``channels`` gather);
* :class:`Pre` -- a pre-activation: a sum of synapse terms from activations plus a bias, not yet through a
  ReLU. BatchNorm, additions, 1x1 convolutions and average pools of it are composed into its terms;
* :class:`PreCat` -- a channel concatenation of pre-activations, kept in parts (a ReLU of a
  concatenation is the concatenation of the parts' ReLUs);
* :class:`Pooled` and :class:`Flat` -- a global average pool and flattened views, which only the
  classifier may read; :class:`Shaped` -- an activation in the middle of a reshape; :class:`Items` -- the
  tuple ``chunk`` / ``split`` return.

A rule receives these values as its arguments and returns one; most rules only pass them on to
:meth:`~radixsnn.core.rules.context.RuleContext.call`. The helpers below cut and rearrange them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from radixsnn.errors import ConversionError


@dataclass
class Act:
    """Spike trains: channel ``i`` is channel ``chans[i][1]`` of spiking node ``chans[i][0]`` (``(None, -1)``:
    a zero channel); ``stride`` > 1 subsamples the sources spatially (an option-A shortcut)."""

    chans: list[tuple[str | None, int]]
    spatial: list[int]
    stride: int = 1

    @property
    def shape(self) -> list[int]:
        return [len(self.chans)] + list(self.spatial)

    def sources(self) -> list[str]:
        return list(dict.fromkeys(n for n, _ in self.chans if n is not None))

    def plain(self, node_channels: dict[str, int]) -> str | None:
        """The node name when this is exactly one spiking node, all its channels in order, unsubsampled."""
        srcs = self.sources()
        if len(srcs) == 1 and self.stride == 1 and self.chans == [(srcs[0], c) for c in range(node_channels[srcs[0]])]:
            return srcs[0]
        return None


@dataclass
class PendingTerm:
    """A synapse term not yet owned by a node: ``op`` (``conv2d``, ``linear``, ``select``) from ``src``."""

    src: str
    op: str
    weight: torch.Tensor
    attrs: dict
    label: str


@dataclass
class Pre:
    """A pending pre-activation: sum of synapse terms plus a bias, not yet through a ReLU."""

    terms: list[PendingTerm]
    bias: torch.Tensor  # (C,)
    shape: list[int]


@dataclass
class PreCat:
    """A channel concatenation of pre-activations and activations, kept in parts."""

    parts: list  # of Pre and Act

    @property
    def shape(self) -> list[int]:
        return [sum(p.shape[0] for p in self.parts)] + list(self.parts[0].shape[1:])


@dataclass
class Pooled:
    """Global average pool of an activation over ``positions`` positions, waiting for flatten + linear."""

    src: Act
    positions: int
    shape: list[int]


@dataclass
class Flat:
    """A flattened activation or global pool."""

    src: object  # Act or Pooled
    shape: list[int]


@dataclass
class Shaped:
    """An activation in the middle of a reshape (a channel shuffle's 5-D view): ``index`` holds, for each
    element of the current shape, its flat position in ``act``."""

    act: Act
    index: torch.Tensor

    @property
    def shape(self) -> list[int]:
        return list(self.index.shape[1:])


@dataclass
class Items:
    """The tuple of values ``chunk`` and ``split`` return."""

    items: list = field(default_factory=list)


def describe(x) -> str:
    """What ``x`` is, in the words of an error message."""
    return {
        Act: "spiking layer",
        Pre: "pre-activation (no ReLU in between)",
        PreCat: "concatenation of pre-activations",
        Pooled: "global average pool",
        Flat: "flattened tensor",
        Shaped: "reshaped tensor",
        Items: "tuple of tensors",
    }.get(type(x), type(x).__name__)


def shape_of(x) -> list[int]:
    return list(x.shape) if hasattr(x, "shape") else []


def spiking(x) -> bool:
    """Whether ``x`` is spike trains (an activation, or a concatenation of activations only)."""
    return isinstance(x, Act) or isinstance(x, PreCat) and all(isinstance(p, Act) for p in x.parts)


def pending(x) -> bool:
    """Whether ``x`` holds a pre-activation not yet through a ReLU."""
    return isinstance(x, (Pre, PreCat)) and not spiking(x)


def parts(x) -> list:
    return x.parts if isinstance(x, PreCat) else [x]


def parts_or_none(x):
    if isinstance(x, (Act, Pre)):
        return [x]
    if isinstance(x, PreCat):
        return list(x.parts)
    return None


def cat_acts(acts: list[Act]) -> Act:
    strides = {a.stride for a in acts}
    if len(strides) != 1:
        raise ConversionError("concatenation of subsampled and full-size activations")
    return Act([c for a in acts for c in a.chans], acts[0].spatial, acts[0].stride)


def split_parts(a, b):
    """Both part lists cut at the union of their channel boundaries (so they can be added part by part)."""
    if a is None or b is None:
        return a, b

    def bounds(ps):
        out, at = [], 0
        for p in ps:
            at += p.shape[0]
            out.append(at)
        return out

    cuts = sorted(set(bounds(a)) | set(bounds(b)))

    def cut(ps):
        out, offset = [], 0
        for p in ps:
            c = p.shape[0]
            inner = [k - offset for k in cuts if offset < k < offset + c]
            edges = [0] + inner + [c]
            for lo, hi in zip(edges[:-1], edges[1:]):
                out.append(p if (lo, hi) == (0, c) else slice_part(p, lo, hi))
            offset += c
        return out

    return cut(a), cut(b)


def slice_part(part, lo: int, hi: int):
    """Channels ``lo:hi`` of an activation or a pre-activation (its terms' output rows)."""
    if isinstance(part, Act):
        return Act(part.chans[lo:hi], part.spatial, part.stride)
    terms = []
    for t in part.terms:
        if t.op == "select":
            chans = t.attrs.get("channels")
            pad = t.attrs["pad"]
            if chans is None:
                c_src = t.weight.shape[0] - pad[0] - pad[1]
                chans = [-1] * pad[0] + list(range(c_src)) + [-1] * pad[1]
            else:
                chans = [-1] * pad[0] + chans + [-1] * pad[1]
            sub = chans[lo:hi]
            if all(c < 0 for c in sub):
                continue
            attrs = {"stride": t.attrs["stride"], "pad": [0, 0], "channels": sub}
            terms.append(PendingTerm(t.src, "select", t.weight[lo:hi], attrs, t.label))
        elif t.op == "conv2d" and t.attrs["groups"] > 1:
            g = t.attrs["groups"]
            per_out = t.weight.shape[0] // g
            if lo % per_out or hi % per_out:
                raise ConversionError("a channel slice that cuts through the groups of a grouped convolution")
            cin = t.weight.shape[1]
            gathered = t.attrs.get("channels")
            first, last = lo // per_out, hi // per_out
            attrs = {**t.attrs, "groups": last - first}
            src = list(range(first * cin, last * cin))
            attrs["channels"] = [gathered[i] for i in src] if gathered is not None else src
            terms.append(PendingTerm(t.src, t.op, t.weight[lo:hi], attrs, t.label))
        else:
            terms.append(PendingTerm(t.src, t.op, t.weight[lo:hi], t.attrs, t.label))
    return Pre(terms, part.bias[lo:hi], [hi - lo] + list(part.shape[1:]))


def select_channels(attrs: dict, src_channels: int) -> list[int]:
    """The source channel of every output channel of a select term (-1: zero)."""
    pad = attrs["pad"]
    chans = attrs.get("channels", list(range(src_channels)))
    return [-1] * pad[0] + list(chans) + [-1] * pad[1]


def select_attrs(channels: list[int], stride: int, src_channels: int) -> dict:
    """A select term's attributes: the legacy ``pad`` form when the channels are the source's, in order,
    between zero channels (identity and option-A shortcuts), else an explicit ``channels`` gather."""
    first = next((i for i, c in enumerate(channels) if c >= 0), len(channels))
    last = len(channels) - next((i for i, c in enumerate(reversed(channels)) if c >= 0), len(channels))
    if channels[first:last] == list(range(src_channels)):
        return {"stride": stride, "pad": [first, len(channels) - last]}
    return {"stride": stride, "pad": [0, 0], "channels": list(channels)}


def dense_conv(w: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped convolution's weight as the equivalent dense one (zeros between the groups)."""
    out, cin = w.shape[0], w.shape[1]
    per = out // groups
    dense = torch.zeros(out, cin * groups, *w.shape[2:])
    for g in range(groups):
        dense[g * per:(g + 1) * per, g * cin:(g + 1) * cin] = w[g * per:(g + 1) * per]
    return dense


def pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def expand(cols: list[int], positions: int) -> list[int]:
    """Weight columns of channels ``cols`` when each channel spans ``positions`` flattened columns."""
    return [c * positions + p for c in cols for p in range(positions)]


def bind(args: tuple, kwargs: dict, names: list[str]) -> dict:
    """A call's positional and keyword arguments by parameter name."""
    out = dict(zip(names, args))
    out.update(kwargs)
    return out
