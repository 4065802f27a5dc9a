"""Counting a network's multiply-accumulates (MACs) and synaptic connections, layer by layer.

Only convolutions and linear layers do multiply-accumulates; they are the layers that become
synapses in the spiking network. BatchNorm (folded into the preceding convolution at conversion),
ReLU, pooling, flatten, dropout and residual additions are **not** counted: they are not MACs.
Biases are not counted either (in the spiking network a bias is the initial membrane potential,
not a per-step operation).

Two counts are kept per layer:

``macs``
    ``fan_in * neurons``: every output neuron times its full fan-in ``N`` (``C_in/groups * k_h *
    k_w`` for a convolution, ``in_features`` for a linear layer). This is the usual MAC count (the
    one profilers and papers quote) and the ``N * M`` of the paper's Eq. 24. For a padded
    convolution it includes the taps that fall on the zero padding.
``synapses``
    the number of real input -> output connections: the same count without the padding taps. It is
    what a spiking network with every input neuron firing once actually performs, and it equals
    ``fanout_map(...).sum()``. For a linear layer or an unpadded convolution it equals ``macs``.

:func:`fanout_map` gives, for every input position, how many output neurons it feeds (fewer near
a padded border); the spike engine multiplies it by the spike counts to count synaptic operations
(:func:`radixsnn.cost.synaptic_ops`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from radixsnn.errors import RadixSNNError


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
                raise RadixSNNError(f"only explicit zero padding is supported, got {module.padding!r}/{module.padding_mode}")
            return cls("conv", module.in_channels, module.out_channels, tuple(module.kernel_size),
                       tuple(module.stride), tuple(module.padding), tuple(module.dilation), module.groups)
        if isinstance(module, nn.Linear):
            return cls("linear", module.in_features, module.out_features)
        raise RadixSNNError(f"no synapses in a {type(module).__name__}; expected Conv2d or Linear")

    @classmethod
    def from_mapping(cls, spec: Mapping) -> "LayerGeometry":
        """Build from a dict such as ``{"kind": "conv", "in_channels": 3, "out_channels": 16,
        "kernel_size": 3, "stride": 1, "padding": 1}`` (ints or pairs; missing keys default)."""
        kind = spec.get("kind", spec.get("type"))
        if kind not in ("conv", "linear"):
            raise RadixSNNError(f"layer kind must be 'conv' or 'linear', got {kind!r}")
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
        return self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        out = []
        for size, k, s, p, d in zip((h, w), self.kernel_size, self.stride, self.padding, self.dilation):
            out.append((size + 2 * p - d * (k - 1) - 1) // s + 1)
        return out[0], out[1]

    def synapses(self, input_shape: Sequence[int]) -> int:
        """Real input -> output connections for one sample of ``input_shape`` (C, H, W) or (F,)."""
        if self.kind == "linear":
            return self.in_channels * self.out_channels * _leading(input_shape)
        _, h, w = input_shape
        valid = []
        for size, k, s, p, d in zip((h, w), self.kernel_size, self.stride, self.padding, self.dilation):
            n_out = (size + 2 * p - d * (k - 1) - 1) // s + 1
            # (output index, kernel tap) pairs whose input index o*s - p + t*d lies inside the map
            valid.append(sum(1 for o in range(n_out) for t in range(k) if 0 <= o * s - p + t * d < size))
        return self.out_channels * (self.in_channels // self.groups) * valid[0] * valid[1]


def _leading(input_shape: Sequence[int]) -> int:
    """Number of feature vectors a linear layer sees in one sample (1 for a flat input)."""
    n = 1
    for s in input_shape[:-1]:
        n *= int(s)
    return n


def _geometry(layer) -> LayerGeometry:
    if isinstance(layer, LayerGeometry):
        return layer
    if isinstance(layer, LayerMacs):
        return layer.geometry
    if isinstance(layer, nn.Module):
        return LayerGeometry.from_module(layer)
    if isinstance(layer, Mapping):
        return LayerGeometry.from_mapping(layer)
    raise RadixSNNError(f"cannot read a layer's geometry from a {type(layer).__name__}")


def fanout_map(layer, input_shape: Sequence[int]) -> torch.Tensor:
    """Fan-out of every input position: how many output neurons each input neuron feeds.

    ``layer`` is an ``nn.Conv2d`` / ``nn.Linear``, a :class:`LayerGeometry`, a :class:`LayerMacs`
    or a mapping accepted by :meth:`LayerGeometry.from_mapping`. ``input_shape`` is one sample's
    shape, (C, H, W) for a convolution, (F,) (or (..., F)) for a linear layer. Returns an int64
    tensor of that shape. For a convolution it is the gradient of ``sum(conv(x, ones))`` with
    respect to ``x`` -- exactly the number of (output neuron, kernel tap) pairs that read each
    input -- so input neurons near a padded border get the smaller fan-out they really have.
    ``fanout_map(layer, shape).sum()`` equals the layer's :attr:`LayerMacs.synapses`.
    """
    geo = _geometry(layer)
    shape = tuple(int(s) for s in input_shape)
    if geo.kind == "linear":
        if shape[-1] != geo.in_channels:
            raise RadixSNNError(f"linear layer expects {geo.in_channels} input features, got shape {shape}")
        return torch.full(shape, geo.out_channels, dtype=torch.int64)
    if len(shape) != 3 or shape[0] != geo.in_channels:
        raise RadixSNNError(f"convolution expects input shape ({geo.in_channels}, H, W), got {shape}")
    x = torch.zeros((1,) + shape, dtype=torch.float64, requires_grad=True)
    ones = torch.ones(geo.out_channels, geo.in_channels // geo.groups, *geo.kernel_size, dtype=torch.float64)
    y = F.conv2d(x, ones, None, geo.stride, geo.padding, geo.dilation, geo.groups)
    (grad,) = torch.autograd.grad(y.sum(), x)
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
        raise RadixSNNError(f"input shape must be (N, C, H, W) or (C, H, W), got {tuple(input_shape)}")
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
