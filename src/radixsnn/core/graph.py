"""The network graph shared by the QANN, the integer SNN and both engines.

A graph is a list of nodes in execution order. Spiking nodes produce radix trains:

* ``input``   -- image pixels, ``bits``-step trains (8 = the exact uint8 pixels);
* ``neuron``  -- a layer of Algorithm-1 neurons; its potential integrates one or more *terms*
  (synapse maps from earlier spiking nodes: a convolution, a linear layer, or a ``select`` map for
  identity / option-A shortcuts) plus a bias;
* ``maxpool`` -- exact max-pooling of trains;

and the last node, ``output``, is a non-spiking readout whose integer potentials are the logits.

A term's synapse map is linear; :func:`synapse` applies it to a batch of activations (real values in
the float QANN, integers in the integer network, one time step of spikes in the spike engine).
:func:`walk` is the one traversal of a graph: the QANN's forward passes and both engines are
:func:`walk` with their own layer and max-pool functions.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Callable, TypeVar

import torch
import torch.nn.functional as F

from radixsnn.errors import ConfigError

SPIKING = ("input", "neuron", "maxpool")
KINDS = ("input", "neuron", "maxpool", "output")
OPS = ("conv2d", "linear", "select")

V = TypeVar("V")


@dataclass
class Term:
    """One synapse map into a neuron layer (or the readout) from an earlier spiking node.

    ``op`` is ``"conv2d"`` (attrs: stride, padding, dilation, groups), ``"linear"`` (attrs: mode =
    ``"flatten"``, the source flattened, or ``"sumpool"``, the source summed over its positions: a global
    average pool folded into the classifier) or ``"select"`` (attrs: stride = spatial subsampling, pad =
    [channels before, channels after]; the weight is one gain per output channel: an identity or
    option-A shortcut). ``param`` names the term's weight tensor in the QANN and the SNN file.
    """

    src: str
    op: str
    param: str
    weight_shape: list[int]
    attrs: dict = field(default_factory=dict)


@dataclass
class Node:
    """A layer of the graph: ``kind`` is one of :data:`KINDS`; ``shape`` is one image's output shape.

    Neuron and output nodes integrate ``terms``; a max-pool reads ``src`` (attrs: kernel, stride,
    padding); the input node's attrs hold the float model's ``mean`` and ``std``; neuron and output
    attrs hold ``label``, the source modules' names.
    """

    name: str
    kind: str
    shape: list[int]
    terms: list[Term] = field(default_factory=list)
    src: str | None = None
    attrs: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def sources(self) -> list[str]:
        """Names of the nodes this one reads, in term order (a node read twice appears twice)."""
        return [t.src for t in self.terms] + ([self.src] if self.src else [])


@dataclass
class Graph:
    """The nodes of a radix network in execution order: ``input`` first, ``output`` last."""

    nodes: list[Node]

    def __post_init__(self):
        self._by_name = {n.name: n for n in self.nodes}
        if len(self._by_name) != len(self.nodes):
            raise ConfigError("graph", "has duplicate node names")

    def __getitem__(self, name: str) -> Node:
        return self._by_name[name]

    @property
    def input(self) -> Node:
        return self.nodes[0]

    @property
    def output(self) -> Node:
        return self.nodes[-1]

    @property
    def layers(self) -> list[Node]:
        """The nodes with synapses and a bias: neuron layers and the readout."""
        return [n for n in self.nodes if n.kind in ("neuron", "output")]

    def to_dict(self) -> dict:
        return {"nodes": [asdict(n) for n in self.nodes]}

    @classmethod
    def from_dict(cls, d: dict) -> "Graph":
        nodes = []
        for nd in d["nodes"]:
            nd = dict(nd)
            nd["terms"] = [Term(**t) for t in nd.get("terms", [])]
            nodes.append(Node(**nd))
        graph = cls(nodes)
        graph.validate()
        return graph

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def validate(self) -> None:
        """Raise :class:`ConfigError` unless every node reads earlier spiking nodes with known ops."""
        if not self.nodes or self.nodes[0].kind != "input" or self.nodes[-1].kind != "output":
            raise ConfigError("graph", "must start with an input node and end with an output node")
        seen: set[str] = set()
        for node in self.nodes:
            if node.kind not in KINDS:
                raise ConfigError("graph", f"node {node.name}: unknown kind {node.kind!r}")
            if node.kind in ("neuron", "output") and not node.terms:
                raise ConfigError("graph", f"node {node.name}: a {node.kind} needs at least one synapse term")
            if node.kind == "output" and node is not self.nodes[-1]:
                raise ConfigError("graph", f"node {node.name}: only the last node may be the output")
            for s in node.sources:
                if s not in seen or self[s].kind not in SPIKING:
                    raise ConfigError("graph", f"node {node.name} reads {s!r}, which is not an earlier spiking node")
            for t in node.terms:
                if t.op not in OPS:
                    raise ConfigError("graph", f"node {node.name}: unknown synapse op {t.op!r}")
            seen.add(node.name)


def walk(
    graph: Graph,
    inputs: V,
    layer: Callable[[Node, dict[str, V]], V],
    maxpool: Callable[[Node, V], V],
) -> V:
    """Run ``graph`` on ``inputs`` (the input node's value) and return the output node's value.

    ``layer(node, values)`` computes a neuron layer or the readout from the values of earlier nodes
    (``values[term.src]``); ``maxpool(node, value)`` pools its source's value. Values are dropped as
    soon as no later node reads them, so memory holds only the live layers.
    """
    last_read = {}
    for i, node in enumerate(graph.nodes):
        for s in node.sources:
            last_read[s] = i
    values: dict[str, V] = {graph.input.name: inputs}
    for i, node in enumerate(graph.nodes[1:], start=1):
        out = maxpool(node, values[node.src]) if node.kind == "maxpool" else layer(node, values)
        if node.kind == "output":
            return out
        values[node.name] = out
        for s in set(node.sources):
            if last_read[s] == i:
                del values[s]
    raise ConfigError("graph", "has no output node")


def synapse(term: Term, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Apply a term's linear synapse map with ``weight`` to a batch ``x`` of source activations.

    ``bias`` (per output channel, conv2d and linear only) is added by the same kernel.
    """
    a = term.attrs
    if term.op == "conv2d":
        return F.conv2d(x, weight, bias, a["stride"], a["padding"], a["dilation"], a["groups"])
    if term.op == "linear":
        x = x.sum(dim=(2, 3)) if a["mode"] == "sumpool" else x.flatten(1)
        return F.linear(x, weight, bias)
    if term.op == "select":
        if bias is not None:
            raise ConfigError("bias", "is not taken by select terms")
        s = a["stride"]
        if s > 1:
            x = x[:, :, ::s, ::s]
        before, after = a["pad"]
        if before or after:
            x = F.pad(x, (0, 0, 0, 0, before, after)) if x.dim() == 4 else F.pad(x, (before, after))
        return x * weight.view(1, -1, *([1] * (x.dim() - 2)))
    raise ConfigError("term", f"has an unknown synapse op {term.op!r}")


def input_channel_index(term: Term, src_shape: list[int]) -> torch.Tensor:
    """For each weight element's input axis, the source channel it reads (to apply per-channel scales).

    Returns a long tensor broadcastable against the weight: conv ``(1, C_in/g, 1, 1)`` indices,
    linear-flatten ``(1, C*H*W)``, linear-sumpool ``(1, C)``, select ``(C_out,)`` (-1 for padding).
    """
    c = src_shape[0]
    if term.op == "conv2d":
        g = term.attrs["groups"]
        cin_g = term.weight_shape[1]
        cout = term.weight_shape[0]
        # out channel o reads channels (o // (cout/g)) * cin_g + j
        grp = torch.arange(cout) // (cout // g)
        idx = grp.view(-1, 1) * cin_g + torch.arange(cin_g).view(1, -1)
        return idx.view(cout, cin_g, 1, 1)
    if term.op == "linear":
        if term.attrs["mode"] == "sumpool" or len(src_shape) == 1:
            return torch.arange(c).view(1, -1)
        hw = int(torch.tensor(src_shape[1:]).prod())
        return torch.arange(c).repeat_interleave(hw).view(1, -1)
    before, _ = term.attrs["pad"]
    idx = torch.arange(term.weight_shape[0]) - before
    return torch.where((idx >= 0) & (idx < c), idx, torch.full_like(idx, -1))


def output_channel_view(term: Term) -> tuple[int, ...]:
    """Shape that broadcasts a per-output-channel vector against the term's weight."""
    n = len(term.weight_shape)
    return (-1,) + (1,) * (n - 1)
