"""What a conversion rule sees: the SNN graph being built and the call it converts.

A :class:`RuleContext` lives for one conversion. Rules read the current call through :attr:`~RuleContext.name`,
:attr:`~RuleContext.label` and :attr:`~RuleContext.shape`, refuse it with :meth:`~RuleContext.fail`,
and convert other operations with :meth:`~RuleContext.call` (the way a user's rule rebuilds its block
from operations radixsnn knows). The remaining methods are the building blocks the built-in rules share:
a layer of neurons from a pre-activation, the synapse terms by which a map reads an activation.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, NoReturn

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.node import map_aggregate

from radixsnn.core.graph import Node, Term, numel
from radixsnn.core.rules.registry import Rules
from radixsnn.core.rules.values import Act, PendingTerm, Pre, PreCat, cat_acts, describe, expand, select_attrs, spiking
from radixsnn.errors import ConversionError


@dataclass
class _Frame:
    name: str  # the traced node (errors name it; neurons without a label take it)
    label: str  # names the neurons a synapse map feeds: the module's path, else the node name
    what: str  # the operation, as errors name it
    shape: Callable[[], list[int]]  # the call's output shape (one image), computed on demand


class RuleContext:
    """The state of one conversion and the call being converted (see the module's docstring)."""

    def __init__(self, gm: fx.GraphModule, rules: Rules):
        self.rules = rules
        self.modules = dict(gm.named_modules())
        self._paths = {id(m): name for name, m in self.modules.items()}
        self.nodes: list[Node] = []
        self.channels: dict[str, int] = {}
        self.shapes: dict[str, list[int]] = {}
        self.params: dict[str, torch.Tensor] = {}
        self.names: set[str] = set()
        self.pools: dict[tuple, str] = {}
        self._frames: list[_Frame] = []

    # -- the call being converted -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The traced node being converted (a rule's nested calls keep their node's name)."""
        return self._frames[-1].name

    @property
    def label(self) -> str:
        """The name the current call gives the neurons it feeds: its module's path, else the node name."""
        return self._frames[-1].label

    @property
    def shape(self) -> list[int]:
        """The output shape of the current call for one image (``[C, H, W]``, ``[F]``)."""
        return self._frames[-1].shape()

    def fail(self, why: str | None = None) -> NoReturn:
        """Refuse the current call: a :class:`ConversionError` naming the operation, its node and ``why``."""
        frame = self._frames[-1]
        msg = f"unsupported operation {frame.what} at node {frame.name}"
        raise ConversionError(msg + (f": {why}" if why else ""))

    @contextlib.contextmanager
    def at(self, node: fx.Node):
        """Make the traced ``node`` the current call."""
        module = node.op == "call_module"
        target = self.modules[node.target] if module else node.target
        label = node.target if module else node.name
        self._frames.append(_Frame(node.name, label, _what(target, label), lambda: list(node.meta["tensor_meta"].shape[1:])))
        try:
            yield
        finally:
            self._frames.pop()

    def call(self, target, *args, **kwargs):
        """Convert ``target(*args, **kwargs)`` with its rule: ``target`` is a module (a submodule of the
        model, or one made on the spot), a function or a tensor method name (``args[0]`` is the tensor)."""
        parent = self._frames[-1]
        if isinstance(target, nn.Module):
            label = self._paths.get(id(target)) or f"{parent.label}.{type(target).__name__}"
        else:
            label = parent.label
        frame = _Frame(parent.name, label, _what(target, label), lambda: _evaluate_shape(target, args, kwargs))
        self._frames.append(frame)
        try:
            return self.apply(target, args, kwargs)
        finally:
            self._frames.pop()

    def apply(self, target, args: tuple, kwargs: dict):
        """Run the rule of ``target`` on the current call (no rule: the call is refused)."""
        handler = self.rules.lookup(target)
        if handler is None:
            self.fail()
        return handler(self, target, tuple(args), dict(kwargs))

    # -- building the graph -----------------------------------------------------------------------------
    def add_node(self, node: Node) -> None:
        self.nodes.append(node)
        self.names.add(node.name)
        self.channels[node.name] = node.shape[0]
        self.shapes[node.name] = list(node.shape)

    def unique(self, name: str) -> str:
        base, i = name.replace(".", "_"), 1
        while name.replace(".", "_") in self.names:
            i += 1
            name = f"{base}_{i}"
        name = name.replace(".", "_")
        self.names.add(name)
        return name

    def neuron(self, pre: Pre, clip: float | None = None, kind: str = "neuron", name: str | None = None) -> Act:
        """A layer of radix neurons (``kind="output"``: the readout) computing ``pre``; their spike trains.
        The layer is named after its main synapse map, else ``name``, else the current node."""
        main = next((t for t in pre.terms if t.op != "select"), pre.terms[0])
        fallback = name or self.name
        node_name = self.unique(main.label if kind == "neuron" and main.label != "shortcut" else fallback)
        terms = []
        for i, t in enumerate(pre.terms):
            key = f"{node_name}.t{i}"
            self.params[key] = t.weight.float()
            terms.append(Term(t.src, t.op, key, list(t.weight.shape), dict(t.attrs)))
        self.params[f"{node_name}.bias"] = pre.bias.float()
        attrs = {"label": "+".join(dict.fromkeys(t.label for t in pre.terms))}
        if clip is not None:
            if not (math.isfinite(clip) and clip > 0):
                raise ConversionError(f"a clip at {clip} at node {fallback}: the clip must be a positive constant")
            attrs["clip"] = clip
        self.add_node(Node(node_name, kind, list(pre.shape), terms, attrs=attrs))
        return Act([(node_name, c) for c in range(pre.shape[0])], list(pre.shape[1:]))

    def act_terms(self, x: Act, op: str, weight: torch.Tensor, attrs: dict, label: str | None = None) -> list[PendingTerm]:
        """The terms by which a synapse map with ``weight`` over the channels of ``x`` reads their sources.

        ``weight``'s input axis (dim 1) runs over ``x``'s channels (``op`` conv2d: ``(O, C/g, k, k)``;
        linear: ``(O, C * positions)`` flattened channel-major, or ``(O, C)`` for a sum-pool)."""
        label = self.label if label is None else label
        if x.stride != 1:
            self.fail("only a shortcut addition may read a subsampled (option-A) activation")
        plain = x.plain(self.channels)
        if plain is not None:
            return [PendingTerm(plain, op, weight, dict(attrs), label)]
        groups = attrs.get("groups", 1) if op == "conv2d" else 1
        positions = numel(x.spatial) if op == "linear" and attrs["mode"] == "flatten" else 1
        terms = []
        for src in x.sources():
            cols = [i for i, (s, _) in enumerate(x.chans) if s == src]
            if groups > 1 and len(cols) != len(x.chans):
                self.fail("a grouped convolution over channels of several layers or zero channels")
            picked = weight[:, expand(cols, positions)] if groups == 1 else weight
            read = [x.chans[i][1] for i in cols]
            gathered = {} if read == list(range(self.channels[src])) else {"channels": read}
            terms.append(PendingTerm(src, op, picked, {**attrs, **gathered}, label))
        return terms

    def as_pre(self, x: Act) -> Pre:
        """An activation as a pre-activation: one ``select`` term per source with unit gains."""
        terms = []
        for src in x.sources():
            channels = [c if s == src else -1 for s, c in x.chans]
            gain = torch.tensor([1.0 if s == src else 0.0 for s, _ in x.chans])
            terms.append(PendingTerm(src, "select", gain, select_attrs(channels, x.stride, self.channels[src]), "shortcut"))
        return Pre(terms, torch.zeros(len(x.chans)), x.shape)

    def need_act(self, x, what: str) -> Act:
        """``x`` as spike trains, or a refusal saying that ``what`` must read spikes."""
        if isinstance(x, PreCat) and spiking(x):
            x = cat_acts(x.parts)
        if not isinstance(x, Act):
            self.fail(f"{what} must follow a ReLU (or read the input); got a {describe(x)}")
        return x


def _what(target, label: str) -> str:
    """The operation as errors name it: ``Conv2d (layer1.0.conv1)``, ``relu``, ``view``."""
    if isinstance(target, nn.Module):
        return f"{type(target).__name__} ({label})"
    return target if isinstance(target, str) else getattr(target, "__name__", repr(target))


def _evaluate_shape(target, args: tuple, kwargs: dict) -> list[int]:
    """The output shape of ``target`` on zero tensors of its arguments' shapes (a rule's nested call)."""
    def zeros(v):
        return torch.zeros(1, *v.shape) if hasattr(v, "shape") and not isinstance(v, torch.Tensor) else v

    args, kwargs = map_aggregate(args, zeros), map_aggregate(kwargs, zeros)
    with torch.no_grad():
        if isinstance(target, str):
            out = getattr(args[0], target)(*args[1:], **kwargs)
        else:
            out = target(*args, **kwargs)
    return list(out.shape[1:])
