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
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

SPIKING = ("input", "neuron", "maxpool")


@dataclass
class Term:
    src: str  # name of a spiking node
    op: str  # "conv2d" | "linear" | "select"
    param: str  # key of this term's weight
    weight_shape: list[int]
    attrs: dict = field(default_factory=dict)
    # conv2d: stride, padding, dilation, groups
    # linear: mode = "flatten" (input flattened) | "sumpool" (input summed over its spatial positions)
    # select: stride (spatial subsampling), pad = [channels before, channels after]; weight = gain per out channel


@dataclass
class Node:
    name: str
    kind: str  # "input" | "neuron" | "maxpool" | "output"
    shape: list[int]  # per-image output shape, e.g. [C, H, W] or [C]
    terms: list[Term] = field(default_factory=list)
    src: str | None = None  # maxpool source
    attrs: dict = field(default_factory=dict)
    # input: mean, std (per channel); maxpool: kernel, stride, padding; neuron/output: label (source modules)

    @property
    def channels(self) -> int:
        return self.shape[0]


@dataclass
class Graph:
    nodes: list[Node]

    def __post_init__(self):
        self._by_name = {n.name: n for n in self.nodes}
        if len(self._by_name) != len(self.nodes):
            raise ValueError("duplicate node names in graph")

    def __getitem__(self, name: str) -> Node:
        return self._by_name[name]

    @property
    def input(self) -> Node:
        return self.nodes[0]

    @property
    def output(self) -> Node:
        return self.nodes[-1]

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
        if not self.nodes or self.nodes[0].kind != "input" or self.nodes[-1].kind != "output":
            raise ValueError("a graph starts with an input node and ends with an output node")
        seen: set[str] = set()
        for node in self.nodes:
            if node.kind not in ("input", "neuron", "maxpool", "output"):
                raise ValueError(f"node {node.name}: unknown kind {node.kind!r}")
            sources = [t.src for t in node.terms] + ([node.src] if node.src else [])
            for s in sources:
                if s not in seen or self[s].kind not in SPIKING:
                    raise ValueError(f"node {node.name} reads {s!r}, which is not an earlier spiking node")
            for t in node.terms:
                if t.op not in ("conv2d", "linear", "select"):
                    raise ValueError(f"node {node.name}: unknown synapse op {t.op!r}")
            seen.add(node.name)

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes if n.src == name or any(t.src == name for t in n.terms)]


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
            raise ValueError("select terms take no bias")
        s = a["stride"]
        if s > 1:
            x = x[:, :, ::s, ::s]
        before, after = a["pad"]
        if before or after:
            x = F.pad(x, (0, 0, 0, 0, before, after)) if x.dim() == 4 else F.pad(x, (before, after))
        return x * weight.view(1, -1, *([1] * (x.dim() - 2)))
    raise ValueError(f"unknown synapse op {term.op!r}")


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


def fanout_map(term: Term, src_shape: list[int]) -> torch.Tensor:
    """Synapses leaving each source neuron through ``term`` (shape ``src_shape``).

    Border-aware for convolutions (a neuron near the border feeds fewer outputs); for a dense input
    ``sum(fanout)`` equals the term's multiply-accumulate count. Computed as the gradient of the
    synapse map with all-ones weights, so it holds for every op the graph supports.
    """
    x = torch.ones(1, *src_shape, dtype=torch.float64, requires_grad=True)
    w = torch.ones(term.weight_shape, dtype=torch.float64)
    synapse(term, x, w).sum().backward()
    return x.grad[0].detach()
