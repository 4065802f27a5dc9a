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
    option-A shortcut). Any term may read only some source channels, in any order: ``channels`` lists
    them (concatenations, slices, channel shuffles; ``-1`` is a zero channel in a select term). ``param``
    names the term's weight tensor in the QANN and the SNN file.
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
    attrs hold ``label``, the source modules' names, and a neuron layer's ``clip`` the value its output
    never exceeds (``ReLU6``: 6).
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
        """Rebuild a graph from :meth:`to_dict`'s form, checking every field (it may come from a file)."""
        if not isinstance(d, dict) or set(d) != {"nodes"} or not isinstance(d["nodes"], list):
            raise ConfigError("graph", "must be a mapping with a list of nodes")
        if not 2 <= len(d["nodes"]) <= MAX_NODES:
            raise ConfigError("graph", f"must have 2..{MAX_NODES} nodes, got {len(d['nodes'])}")
        nodes = []
        for nd in d["nodes"]:
            _check_keys(nd, NODE_FIELDS, {"name", "kind", "shape"}, "node")
            terms = nd.get("terms", [])
            if not isinstance(terms, list):
                raise ConfigError("graph", f"node {nd['name']!r}: terms must be a list")
            for t in terms:
                _check_keys(t, TERM_FIELDS, TERM_FIELDS, f"a term of node {nd['name']!r}")
            nodes.append(Node(**{**nd, "terms": [Term(**t) for t in terms]}))
        graph = cls(nodes)
        graph.validate()
        return graph

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def validate(self) -> None:
        """Raise :class:`ConfigError` unless the graph is well formed: ``input`` first and ``output`` last,
        every node reading earlier spiking nodes through known ops with consistent shapes, sizes within
        :data:`MAX_NEURONS` per layer and :data:`MAX_CLASSES` outputs."""
        if not self.nodes or self.nodes[0].kind != "input" or self.nodes[-1].kind != "output":
            raise ConfigError("graph", "must start with an input node and end with an output node")
        seen: set[str] = set()
        for node in self.nodes:
            where = f"node {node.name!r}"
            if not isinstance(node.name, str) or not 0 < len(node.name) <= 200:
                raise ConfigError("graph", f"node names must be strings of 1..200 characters, got {node.name!r}")
            if node.kind not in KINDS:
                raise ConfigError("graph", f"{where}: unknown kind {node.kind!r}")
            if node.kind == "input" and node is not self.nodes[0] or node.kind == "output" and node is not self.nodes[-1]:
                raise ConfigError("graph", f"{where}: only the first node may be the input, the last the output")
            if not _is_shape(node.shape) or numel(node.shape) > MAX_NEURONS:
                raise ConfigError("graph", f"{where}: shape must be 1 to 3 positive sizes with at most {MAX_NEURONS} neurons, got {node.shape!r}")
            if not isinstance(node.attrs, dict):
                raise ConfigError("graph", f"{where}: attrs must be a mapping")
            clip = node.attrs.get("clip")
            if clip is not None and (node.kind != "neuron" or isinstance(clip, bool) or not isinstance(clip, (int, float))
                                     or not 0 < clip < 1e30):
                raise ConfigError("graph", f"{where}: a clip must be a positive number on a neuron layer, got {clip!r}")
            if node.kind in ("neuron", "output") and not node.terms:
                raise ConfigError("graph", f"{where}: a {node.kind} needs at least one synapse term")
            if node.kind in ("input", "maxpool") and node.terms or (node.src is not None) != (node.kind == "maxpool"):
                raise ConfigError("graph", f"{where}: a {node.kind} takes {'one source' if node.kind == 'maxpool' else 'no input'}")
            for s in node.sources:
                if s not in seen or self[s].kind not in SPIKING:
                    raise ConfigError("graph", f"{where} reads {s!r}, which is not an earlier spiking node")
            if node.kind == "input":
                _check_input(node)
            elif node.kind == "maxpool":
                _check_shape(node.shape, _maxpool_shape(node.attrs, self[node.src].shape, where), where)
            else:
                for t in node.terms:
                    if t.op not in OPS:
                        raise ConfigError("graph", f"{where}: unknown synapse op {t.op!r}")
                    if not isinstance(t.param, str) or not t.param:
                        raise ConfigError("graph", f"{where}: a term needs a parameter name")
                    _check_shape(node.shape, term_output_shape(t, self[t.src].shape, where), where)
            seen.add(node.name)
        params = [t.param for n in self.nodes for t in n.terms]
        if len(set(params)) != len(params):
            raise ConfigError("graph", "has terms sharing a parameter name")
        if self.output.channels > MAX_CLASSES or len(self.output.shape) != 1:
            raise ConfigError("graph", f"the output must be 1..{MAX_CLASSES} logits, got shape {self.output.shape}")


#: Sanity limits for graphs read from files: node count, neurons per layer, classes.
MAX_NODES = 10_000
MAX_NEURONS = 1 << 22
#: Largest kernel, stride and dilation of a convolution or max-pool read from a file.
MAX_WINDOW = 64
MAX_CLASSES = 100_000
NODE_FIELDS = {"name", "kind", "shape", "terms", "src", "attrs"}
TERM_FIELDS = {"src", "op", "param", "weight_shape", "attrs"}


def _check_keys(d, allowed: set, required: set, what: str) -> None:
    if not isinstance(d, dict):
        raise ConfigError("graph", f"{what} must be a mapping")
    unknown, missing = set(d) - allowed, required - set(d)
    if unknown or missing:
        raise ConfigError("graph", f"{what}: unknown fields {sorted(unknown)}, missing {sorted(missing)}")


def _is_int(v, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _is_shape(shape) -> bool:
    return isinstance(shape, list) and 1 <= len(shape) <= 3 and all(_is_int(d, 1, 1 << 16) for d in shape)


def numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _pairs(attrs: dict, keys, lo: int, hi: int, where: str) -> list[list[int]]:
    out = []
    for k in keys:
        v = attrs.get(k)
        if not (isinstance(v, list) and len(v) == 2 and all(_is_int(x, lo, hi) for x in v)):
            raise ConfigError("graph", f"{where}: {k} must be two integers in {lo}..{hi}, got {v!r}")
        out.append(v)
    return out


def _check_shape(shape, expected, where: str) -> None:
    if list(shape) != list(expected):
        raise ConfigError("graph", f"{where}: shape {shape} does not match its inputs (expected {list(expected)})")


def _check_input(node: Node) -> None:
    a = node.attrs
    if len(node.shape) != 3 or set(a) != {"mean", "std"}:
        raise ConfigError("graph", "the input node needs a (C, H, W) shape and exactly mean and std")
    c = node.shape[0]
    for key in ("mean", "std"):
        v = a[key]
        if not (isinstance(v, list) and len(v) == c and all(isinstance(x, (int, float)) and abs(x) < 1e6 for x in v)):
            raise ConfigError("graph", f"the input's {key} must be {c} finite numbers, got {v!r}")
    if not all(x > 0 for x in a["std"]):
        raise ConfigError("graph", f"the input's std must be positive, got {a['std']!r}")


def maxpool_pads(attrs: dict) -> tuple[int, int, int, int]:
    """A ``maxpool`` node's zero padding ``(left, right, top, bottom)``: ``padding`` on every side, plus
    ``pad_end`` (optional) after the right and bottom edges -- PyTorch's ``ceil_mode`` windows. Zeros pad
    exactly: pooled trains carry non-negative numbers, and every window holds at least one of them."""
    (ph, pw), (eh, ew) = attrs["padding"], attrs.get("pad_end", [0, 0])
    return pw, pw + ew, ph, ph + eh


def max_pool_integers(x: torch.Tensor, attrs: dict) -> torch.Tensor:
    """Max-pooling of non-negative integers ``(N, C, H, W)`` by a ``maxpool`` node's ``attrs`` (its zero
    padding: :func:`maxpool_pads`)."""
    return F.max_pool2d(F.pad(x, maxpool_pads(attrs)), attrs["kernel"], attrs["stride"])


def _maxpool_shape(attrs: dict, src: list[int], where: str) -> list[int]:
    if set(attrs) - {"pad_end"} != {"kernel", "stride", "padding"} or len(src) != 3:
        raise ConfigError("graph", f"{where}: a max-pool needs kernel, stride and padding (and optionally pad_end) on a (C, H, W) source")
    (kh, kw), (sh, sw), (ph, pw) = _pairs(attrs, ("kernel", "stride"), 1, MAX_WINDOW, where) + _pairs(attrs, ("padding",), 0, MAX_WINDOW, where)
    (eh, ew), = _pairs({"pad_end": attrs.get("pad_end", [0, 0])}, ("pad_end",), 0, MAX_WINDOW, where)
    if ph > kh // 2 or pw > kw // 2:
        raise ConfigError("graph", f"{where}: max-pool padding must be at most half the kernel")
    if eh >= sh or ew >= sw:
        raise ConfigError("graph", f"{where}: max-pool pad_end must be less than the stride (one more window at most)")
    h, w = (src[1] + 2 * ph + eh - kh) // sh + 1, (src[2] + 2 * pw + ew - kw) // sw + 1
    if h < 1 or w < 1:
        raise ConfigError("graph", f"{where}: a max-pool window larger than its padded source")
    return [src[0], h, w]


def term_output_shape(term: Term, src: list[int], where: str = "term") -> list[int]:
    """The output shape ``term``'s synapse map gives a source of shape ``src``, after checking the term's
    weight shape and attributes against it (raises :class:`ConfigError`)."""
    a, w = term.attrs, term.weight_shape
    if not isinstance(a, dict) or not (isinstance(w, list) and all(_is_int(d, 1, 1 << 24) for d in w)):
        raise ConfigError("graph", f"{where}: a term needs attrs and a positive weight shape")
    if "channels" in a:
        chans = a["channels"]
        lowest = -1 if term.op == "select" else 0
        if not (isinstance(chans, list) and chans and all(_is_int(c, lowest, src[0] - 1) for c in chans)):
            raise ConfigError("graph", f"{where}: channels must list source channels in {lowest}..{src[0] - 1}")
        src = [len(chans)] + list(src[1:])
        a = {k: v for k, v in a.items() if k != "channels"}
    if term.op == "conv2d":
        if set(a) != {"stride", "padding", "dilation", "groups"} or len(src) != 3 or len(w) != 4:
            raise ConfigError("graph", f"{where}: a convolution needs stride, padding, dilation, groups and a (C, H, W) source")
        (sh, sw), (dh, dw) = _pairs(a, ("stride", "dilation"), 1, MAX_WINDOW, where)
        ((ph, pw),) = _pairs(a, ("padding",), 0, MAX_WINDOW * MAX_WINDOW, where)
        g = a["groups"]
        if w[2] > MAX_WINDOW or w[3] > MAX_WINDOW or ph > dh * (w[2] - 1) or pw > dw * (w[3] - 1):
            raise ConfigError("graph", f"{where}: kernel {w[2:]} / padding {[ph, pw]} beyond a convolution's useful range")
        if not (_is_int(g, 1, src[0]) and src[0] % g == 0 and w[0] % g == 0 and w[1] * g == src[0]):
            raise ConfigError("graph", f"{where}: weight {w} and groups {g!r} do not fit {src[0]} input channels")
        h = (src[1] + 2 * ph - dh * (w[2] - 1) - 1) // sh + 1
        wd = (src[2] + 2 * pw - dw * (w[3] - 1) - 1) // sw + 1
        if h < 1 or wd < 1:
            raise ConfigError("graph", f"{where}: the kernel does not fit the {src[1]}x{src[2]} input")
        return [w[0], h, wd]
    if term.op == "linear":
        mode = a.get("mode")
        if set(a) != {"mode"} or mode not in ("flatten", "sumpool") or len(w) != 2:
            raise ConfigError("graph", f"{where}: a linear term needs mode 'flatten' or 'sumpool' and a 2-D weight")
        fan_in = src[0] if mode == "sumpool" else numel(src)
        if mode == "sumpool" and len(src) != 3 or w[1] != fan_in:
            raise ConfigError("graph", f"{where}: weight {w} does not fit a source of shape {src}")
        return [w[0]]
    if term.op == "select":
        pad = a.get("pad")
        if set(a) != {"stride", "pad"} or not _is_int(a.get("stride"), 1, MAX_WINDOW) or len(w) != 1 \
                or not (isinstance(pad, list) and len(pad) == 2 and all(_is_int(p, 0, 1 << 16) for p in pad)):
            raise ConfigError("graph", f"{where}: a select term needs stride, pad = [before, after] and one gain per channel")
        if w[0] != src[0] + pad[0] + pad[1]:
            raise ConfigError("graph", f"{where}: {w[0]} gains do not fit {src[0]} channels padded by {pad}")
        s = a["stride"]
        return [w[0]] + [(d + s - 1) // s for d in src[1:]]
    raise ConfigError("graph", f"{where}: unknown synapse op {term.op!r}")


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


def gather(term: Term, x: torch.Tensor) -> torch.Tensor:
    """The source channels a term reads, in its order: ``x[:, channels]`` (``-1``: a zero channel)."""
    channels = term.attrs.get("channels")
    if channels is None:
        return x
    index = torch.tensor(channels, device=x.device)
    picked = x.index_select(1, index.clamp_min(0))
    if min(channels) < 0:
        keep = (index >= 0).to(x.dtype).view(1, -1, *([1] * (x.dim() - 2)))
        picked = picked * keep
    return picked


def synapse(term: Term, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Apply a term's linear synapse map with ``weight`` to a batch ``x`` of source activations.

    The term first reads its ``channels`` of the source (all of them, in order, by default).
    ``bias`` (per output channel, conv2d and linear only) is added by the same kernel.
    """
    a = term.attrs
    if term.op == "select":
        if bias is not None:
            raise ConfigError("bias", "is not taken by select terms")
        x = selected(term, x)
        return x * weight.view(1, -1, *([1] * (x.dim() - 2)))
    x = gather(term, x)
    if term.op == "conv2d":
        return F.conv2d(x, weight, bias, a["stride"], a["padding"], a["dilation"], a["groups"])
    if term.op == "linear":
        x = x.sum(dim=(2, 3)) if a["mode"] == "sumpool" else x.flatten(1)
        return F.linear(x, weight, bias)
    raise ConfigError("term", f"has an unknown synapse op {term.op!r}")


def selected(term: Term, x: torch.Tensor) -> torch.Tensor:
    """What a ``select`` term multiplies by its gains: its channels of ``x``, every ``stride``-th
    position, zero channels padded before and after."""
    a = term.attrs
    x = gather(term, x)
    s = a["stride"]
    if s > 1:
        x = x[:, :, ::s, ::s]
    before, after = a["pad"]
    if before or after:
        x = F.pad(x, (0, 0, 0, 0, before, after)) if x.dim() == 4 else F.pad(x, (before, after))
    return x


#: float32 adds, multiplies and convolves integers exactly while every partial sum stays below 2^24.
F32_EXACT = 1 << 24


def peak_input(graph: "Graph", node: Node, weights, source_peak) -> int:
    """Largest ``|sum of node's synapse terms|`` of any of its neurons, from the integer ``weights`` (one
    per term) when every value of source ``s`` lies in ``[0, source_peak(s)]``.
    """
    return sum(term_gain(graph, t, w) * int(source_peak(t.src)) for t, w in zip(node.terms, weights))


def term_gain(graph: "Graph", term: Term, weight: torch.Tensor) -> int:
    """Largest ``|term's synaptic input|`` of any neuron per unit of its source's values: the largest
    ``sum |w|`` of an output (times the pooled positions of a sum-pool)."""
    gain = int(weight.abs().reshape(weight.shape[0], -1).sum(1).max()) if weight.dim() > 1 else int(weight.abs().max())
    if term.op == "linear" and term.attrs["mode"] == "sumpool":
        src = graph[term.src].shape
        gain *= src[1] * src[2]
    return gain


def exact_dtype(bound: int, device) -> torch.dtype:
    """float32 when integer sums bounded by ``bound`` are exact in it (on CPU), float64 otherwise (always
    on CUDA, where TF32 and FFT convolution algorithms could round)."""
    return torch.float32 if torch.device(device).type == "cpu" and bound < F32_EXACT else torch.float64


def input_channel_index(term: Term, src_shape: list[int]) -> torch.Tensor:
    """For each weight element's input axis, the source channel it reads (to apply per-channel scales).

    Returns a long tensor broadcastable against the weight: conv ``(C_out, C_in/g, 1, 1)`` indices,
    linear-flatten ``(1, C*H*W)``, linear-sumpool ``(1, C)``, select ``(C_out,)`` (-1 for a zero channel).
    """
    channels = term.attrs.get("channels")
    read = torch.tensor(channels) if channels is not None else torch.arange(src_shape[0])
    if term.op == "conv2d":
        g = term.attrs["groups"]
        cin_g = term.weight_shape[1]
        cout = term.weight_shape[0]
        # out channel o reads the gathered channels (o // (cout/g)) * cin_g + j
        grp = torch.arange(cout) // (cout // g)
        idx = grp.view(-1, 1) * cin_g + torch.arange(cin_g).view(1, -1)
        return read[idx].view(cout, cin_g, 1, 1)
    if term.op == "linear":
        if term.attrs["mode"] == "sumpool" or len(src_shape) == 1:
            return read.view(1, -1)
        hw = int(torch.tensor(src_shape[1:]).prod())
        return read.repeat_interleave(hw).view(1, -1)
    before, after = term.attrs["pad"]
    return torch.cat([torch.full((before,), -1), read, torch.full((after,), -1)])


def output_channel_view(term: Term) -> tuple[int, ...]:
    """Shape that broadcasts a per-output-channel vector against the term's weight."""
    n = len(term.weight_shape)
    return (-1,) + (1,) * (n - 1)
