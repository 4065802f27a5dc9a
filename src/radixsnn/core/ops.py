"""Every operation count of radixsnn, each defined once.

Counts of the float network (``nn.Module``), per image:

``macs``
    multiply-accumulates of the convolutions and linear layers, ``fan_in x neurons`` (``N x M``),
    padding taps included: the usual MAC count (:func:`count_macs`; ``torch.utils.flop_counter`` counts
    2 FLOPs for each). BatchNorm, ReLU, pooling, flatten, dropout and residual additions are not MACs,
    nor are biases (in the SNN a bias is the initial membrane potential, not a per-step operation).
``synapses``
    real input -> output connections, the same without the padding taps: the sum of the layer's
    :func:`fanout_map`. For a linear layer or an unpadded convolution it equals ``macs``.
``ann_ops``
    the paper's ANN "effective operations", :data:`ANN_OPS_PER_MAC` x ``macs`` (Table 2's ANN rows).

Counts of a radix SNN, per image -- two readings of the paper's Eq. 24, ``sum N M T``:

``ops_table``
    the rule of the paper's Tables 2 and 3: ``macs x T`` (:func:`table_ops`), every MAC of the float
    network repeated at each of the ``T`` steps.
``ops_graph``
    Eq. 24 over the SNN's actual synapse terms (:func:`graph_ops`): each term's fan-in ``N`` times its
    neurons ``M`` times the length ``T_src`` of the trains it reads. It differs from ``ops_table`` where
    the SNN differs from the float layer list: the first layer reads 8-step pixel trains (``T_src = 8``,
    not ``T``), shortcut synapses (identity / option-A) are synapses too (``N = 1``), and a global average
    pool folded into the classifier makes every position of the last feature map a synapse of the readout.
``sops``
    measured synaptic operations: ``sum over spikes of the emitting neuron's fan-out``
    (:func:`synaptic_ops`, per layer :func:`layer_sops`) -- what a given input really costs, against the
    dense upper bound ``ops_graph``.

>>> import torch.nn as nn
>>> count_macs(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()), (3, 4, 4)).total   # 27 x 8 x 16
3456
>>> table_ops(3456, time_steps=4), ann_ops(3456)
(13824, 228096)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from radixsnn.core.graph import Graph, Term, input_channel_index, synapse
from radixsnn.core.steps import channel_lengths, train_lengths
from radixsnn.core.quant import ActQuant
from radixsnn.errors import ConfigError

#: Effective ANN operations per multiply-accumulate, read off the paper's Table 2 (docs/notebook.md
#: shows that 66 is the only integer consistent with its printed cells).
ANN_OPS_PER_MAC = 66


# ---------------------------------------------------------------------------------------- float network
@dataclass(frozen=True)
class LayerGeometry:
    """How a convolution or linear layer connects its inputs to its outputs (no weights)."""

    kind: str  # "conv" or "linear"
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    @classmethod
    def from_module(cls, module: nn.Module) -> "LayerGeometry":
        if isinstance(module, nn.Conv2d):
            if module.padding_mode != "zeros" or isinstance(module.padding, str):
                raise ConfigError("layer", f"must use explicit zero padding, got {module.padding!r}/{module.padding_mode}")
            return cls("conv", module.in_channels, module.out_channels, tuple(module.kernel_size),
                       tuple(module.stride), tuple(module.padding), tuple(module.dilation), module.groups)
        if isinstance(module, nn.Linear):
            return cls("linear", module.in_features, module.out_features)
        raise ConfigError("layer", f"must be a Conv2d or Linear, got a {type(module).__name__} (no synapses)")

    @classmethod
    def from_mapping(cls, spec: Mapping) -> "LayerGeometry":
        """Build from a dict such as ``{"kind": "conv", "in_channels": 3, "out_channels": 16,
        "kernel_size": 3, "stride": 1, "padding": 1}`` (ints or pairs; missing keys default)."""
        kind = spec.get("kind", spec.get("type"))
        if kind not in ("conv", "linear"):
            raise ConfigError("layer", f"kind must be 'conv' or 'linear', got {kind!r}")
        pair = lambda v: (int(v), int(v)) if isinstance(v, (int, float)) else tuple(int(i) for i in v)  # noqa: E731
        if kind == "linear":
            return cls("linear", int(spec.get("in_features", spec.get("in_channels"))),
                       int(spec.get("out_features", spec.get("out_channels"))))
        return cls("conv", int(spec["in_channels"]), int(spec["out_channels"]), pair(spec.get("kernel_size", 1)),
                   pair(spec.get("stride", 1)), pair(spec.get("padding", 0)), pair(spec.get("dilation", 1)),
                   int(spec.get("groups", 1)))

    @property
    def fan_in(self) -> int:
        """Inputs per output neuron (``N`` of Eq. 24), padding taps included."""
        if self.kind == "linear":
            return self.in_channels
        return term_fan_in(self.term())

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        out = []
        for size, k, s, p, d in zip((h, w), self.kernel_size, self.stride, self.padding, self.dilation):
            out.append((size + 2 * p - d * (k - 1) - 1) // s + 1)
        return out[0], out[1]

    def synapses(self, input_shape: Sequence[int]) -> int:
        """Real input -> output connections for one sample of ``input_shape`` (C, H, W) or (F,):
        ``fanout_map(self, input_shape).sum()`` (padding taps excluded)."""
        return int(fanout_map(self, input_shape).sum())

    def term(self) -> Term:
        """This convolution as a graph :class:`~radixsnn.core.graph.Term` (its synapse map)."""
        if self.kind != "conv":
            raise ConfigError("layer", "only a convolution has a term form here")
        shape = [self.out_channels, self.in_channels // self.groups, *self.kernel_size]
        attrs = {"stride": list(self.stride), "padding": list(self.padding), "dilation": list(self.dilation),
                 "groups": self.groups}
        return Term("", "conv2d", "", shape, attrs)


def _geometry(layer) -> LayerGeometry:
    if isinstance(layer, LayerGeometry):
        return layer
    if isinstance(layer, LayerMacs):
        return layer.geometry
    if isinstance(layer, nn.Module):
        return LayerGeometry.from_module(layer)
    if isinstance(layer, Mapping):
        return LayerGeometry.from_mapping(layer)
    raise ConfigError("layer", f"has no synapse geometry: a {type(layer).__name__}")


def fanout_map(layer, input_shape: Sequence[int]) -> torch.Tensor:
    """Fan-out of every input neuron: how many output neurons it feeds (int64, shape ``input_shape``).

    ``layer`` is a graph :class:`~radixsnn.core.graph.Term`, an ``nn.Conv2d`` / ``nn.Linear``, a
    :class:`LayerGeometry`, a :class:`LayerMacs` or a mapping accepted by
    :meth:`LayerGeometry.from_mapping`; ``input_shape`` is one sample's shape. It is the gradient of the
    synapse map's output sum with all-ones weights with respect to its input -- exactly the number of
    (output neuron, tap) pairs that read each input -- so neurons near a padded border get the smaller
    fan-out they really have, and it holds for every op a graph supports. Its sum is the layer's
    ``synapses``.
    """
    shape = tuple(int(s) for s in input_shape)
    if not isinstance(layer, Term):
        geo = _geometry(layer)
        if geo.kind == "linear":
            if shape[-1] != geo.in_channels:
                raise ConfigError("input_shape", f"must end with the linear layer's {geo.in_channels} input features, got {shape}")
            return torch.full(shape, geo.out_channels, dtype=torch.int64)
        if len(shape) != 3 or shape[0] != geo.in_channels:
            raise ConfigError("input_shape", f"must be ({geo.in_channels}, H, W) for this convolution, got {shape}")
        layer = geo.term()
    with torch.enable_grad():
        x = torch.ones(1, *shape, dtype=torch.float64, requires_grad=True)
        w = torch.ones(layer.weight_shape, dtype=torch.float64)
        (grad,) = torch.autograd.grad(synapse(layer, x, w).sum(), x)
    return grad[0].round().to(torch.int64)


@dataclass(frozen=True)
class LayerMacs:
    """One convolution or linear layer: where it is, its shapes and its counts for one image."""

    name: str
    geometry: LayerGeometry
    in_shape: tuple[int, ...]  # one sample, e.g. (C, H, W)
    out_shape: tuple[int, ...]
    fan_in: int  # N of Eq. 24
    neurons: int  # M of Eq. 24: output neurons
    macs: int  # fan_in * neurons
    synapses: int  # real connections, padding taps excluded

    @property
    def kind(self) -> str:
        return self.geometry.kind

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "in_shape": list(self.in_shape),
                "out_shape": list(self.out_shape), "fan_in": self.fan_in, "neurons": self.neurons,
                "macs": self.macs, "synapses": self.synapses}


@dataclass(frozen=True)
class MacCount:
    """Per-layer counts in execution order, plus totals."""

    layers: list[LayerMacs] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def synapses(self) -> int:
        return sum(layer.synapses for layer in self.layers)

    def total_of(self, kind: str) -> int:
        """MACs of the ``"conv"`` or ``"linear"`` layers only."""
        return sum(layer.macs for layer in self.layers if layer.kind == kind)


def count_macs(model: nn.Module, input_shape: Sequence[int] = (1, 3, 32, 32)) -> MacCount:
    """Count the MACs of every ``nn.Conv2d`` / ``nn.Linear`` (subclasses included) the model runs
    on one input of ``input_shape`` ((N, C, H, W) or (C, H, W); counts are per sample).

    The model runs once on zeros in eval mode under ``torch.no_grad`` (its training flag is
    restored); a layer that runs twice is listed twice.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1,) + shape
    if len(shape) != 4 or min(shape) < 1:
        raise ConfigError("input_shape", f"must be (N, C, H, W) or (C, H, W), got {tuple(input_shape)}")
    batch = shape[0]
    layers: list[LayerMacs] = []
    names = {module: name for name, module in model.named_modules()}

    def hook(module, inputs, output):
        geo = LayerGeometry.from_module(module)
        in_shape = tuple(inputs[0].shape[1:])
        out_shape = tuple(output.shape[1:])
        neurons = output.numel() // batch
        layers.append(LayerMacs(names.get(module, type(module).__name__), geo, in_shape, out_shape,
                                geo.fan_in, neurons, geo.fan_in * neurons, geo.synapses(in_shape)))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        param = next(model.parameters(), None)
        x = torch.zeros(shape, device=param.device if param is not None else "cpu")
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return MacCount(layers)


def ann_ops(macs: int) -> int:
    """The ANN's effective operations: :data:`ANN_OPS_PER_MAC` x MACs."""
    return ANN_OPS_PER_MAC * int(macs)


# ------------------------------------------------------------------------------------------ radix SNN
def table_ops(macs: int, time_steps: int) -> int:
    """``ops_table``: Eq. 24 by the rule of the paper's tables, MACs x T (any ``T >= 1``: the tables also
    cost rate-coded SNNs of hundreds of steps by this rule)."""
    if not isinstance(time_steps, int) or time_steps < 1:
        raise ConfigError("time_steps", f"must be an integer >= 1, got {time_steps!r}")
    return int(macs) * time_steps


def term_fan_in(term: Term, src_shape: Sequence[int] | None = None) -> int:
    """Synapses per output neuron of ``term`` (the ``N`` of Eq. 24), padding taps included.

    ``src_shape`` (the source's ``(C, H, W)``) is needed for a ``sumpool`` readout, whose every source
    position is a synapse.
    """
    if term.op == "conv2d":
        w = term.weight_shape
        return w[1] * w[2] * w[3]
    if term.op == "linear":
        if term.attrs["mode"] == "sumpool":
            return term.weight_shape[1] * src_shape[1] * src_shape[2]
        return term.weight_shape[1]
    return 1


def graph_ops(graph: Graph, time_steps: int, input_bits: int = 8, layer_time_steps: dict[str, int] | None = None,
              channel_time_steps: dict[str, list[int]] | None = None) -> int:
    """``ops_graph``: Eq. 24 over the synapse terms of ``graph``, ``sum N M T_src``.

    ``T_src`` is the length of the trains the term reads: ``input_bits`` for the pixels, the source
    layer's own T (``layer_time_steps``, else ``time_steps``); a ``select`` term (shortcut) has ``N = 1``
    and counts only the output neurons it does not zero-pad. Where a source's channels have their own T
    (``channel_time_steps``), each synapse counts the T of the channel it reads: ``N T_src`` becomes the
    sum over a neuron's synapses of their source channels' T.
    """
    ActQuant(time_steps)  # a radix SNN's T range
    lengths = train_lengths(graph, time_steps, layer_time_steps or {}, input_bits)
    per_channel = channel_lengths(graph, channel_time_steps or {})
    total = 0
    for node in graph.layers:
        m = 1
        for d in node.shape:
            m *= d
        for t in node.terms:
            steps = lengths[t.src]
            if t.src in per_channel:
                total += _channel_term_ops(t, graph[t.src].shape, m, per_channel[t.src])
            elif t.op == "select":  # one synapse per output neuron that reads a source channel
                chans = t.attrs.get("channels")
                read = node.shape[0] - sum(t.attrs["pad"]) if chans is None else sum(c >= 0 for c in chans)
                total += m * read // node.shape[0] * steps
            else:
                total += term_fan_in(t, graph[t.src].shape) * m * steps
    return total


def _channel_term_ops(term: Term, src_shape: Sequence[int], neurons: int, steps: list[int]) -> int:
    """``sum N T_src`` over a term's ``neurons`` when its source channels have their own T (``steps``):
    every output channel's synapses, each weighted by the T of the source channel it reads, times the
    positions per output channel (taps per source channel: the kernel for a convolution, the positions
    for a ``sumpool`` readout)."""
    index = input_channel_index(term, list(src_shape))
    t = torch.tensor([0, *steps], dtype=torch.int64)[index.reshape(-1) + 1]  # a zero-padded channel (-1) reads nothing
    out_channels = term.weight_shape[0]
    if term.op == "conv2d":
        taps = term.weight_shape[2] * term.weight_shape[3]
    elif term.op == "linear" and term.attrs["mode"] == "sumpool":
        taps = src_shape[1] * src_shape[2]
    else:
        taps = 1
    if term.op == "linear":
        out_channels = 1  # one index row for every output neuron
    return neurons // out_channels * taps * int(t.sum())


def synaptic_ops(fanout: torch.Tensor, spikes: torch.Tensor) -> int:
    """Synaptic operations caused by ``spikes``: ``sum(spikes x fan-out)``.

    ``fanout`` is :func:`fanout_map` of the synapses that carry the spikes (shape of one input sample);
    ``spikes`` holds spike counts per input neuron with the same trailing shape, optionally with leading
    batch / time dimensions, which are summed. For a dense input (every neuron spikes once) the result is
    the synapse count.
    """
    if tuple(spikes.shape[spikes.dim() - fanout.dim():]) != tuple(fanout.shape):
        raise ConfigError("spikes", f"shape {tuple(spikes.shape)} does not end with the fan-out shape {tuple(fanout.shape)}")
    if spikes.dtype.is_floating_point:
        return int(round(float((spikes.double() * fanout.double()).sum())))
    return int((spikes.long() * fanout.long()).sum())


def layer_sops(graph: Graph, spike_maps: dict[str, torch.Tensor]) -> dict[str, int]:
    """``sops`` per receiving layer: the spikes of every source (``spike_maps``: node -> spikes per neuron)
    times the fan-out of each synapse term that reads it."""
    out = {}
    for node in graph.layers:
        out[node.name] = sum(synaptic_ops(fanout_map(t, graph[t.src].shape), spike_maps[t.src]) for t in node.terms)
    return out
