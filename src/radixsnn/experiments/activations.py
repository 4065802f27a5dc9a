"""The ReLU activations of a float network: find them in its torch.fx graph and record them.

Every activation that a spiking network turns into spike trains is the output of a ReLU. This
module traces a model with :mod:`torch.fx` (without changing it), names each ReLU node, and runs
the network on CIFAR images while handing those outputs to the caller one batch at a time.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from radixsnn.core.inputs import model_normalization, normalize
from radixsnn.core.quant import positive_percentile
from radixsnn.errors import ConfigError, ConversionError

_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_}
_RELU_METHODS = {"relu", "relu_"}


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` with a one-line error for models fx cannot trace."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for untraceable control flow
        raise ConversionError(f"cannot trace {type(model).__name__} with torch.fx: {str(exc).splitlines()[0]}") from None


def is_relu(node: fx.Node, gm: fx.GraphModule) -> bool:
    """Whether ``node`` computes a ReLU (function, tensor method or ``nn.ReLU`` module)."""
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    if node.op == "call_method":
        return node.target in _RELU_METHODS
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), nn.ReLU)
    return False


def relu_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    """The ReLU nodes of a traced model, in execution order."""
    return [n for n in gm.graph.nodes if is_relu(n, gm)]


class _Recorder(fx.Interpreter):
    """Runs a traced model and keeps the output of each ReLU node."""

    def __init__(self, gm: fx.GraphModule, names: set[str]):
        super().__init__(gm)
        self.names = names
        self.recorded: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n.name in self.names:
            self.recorded[n.name] = out
        return out


@torch.no_grad()
def iter_relu_activations(
    model: nn.Module, images: torch.Tensor, batch_size: int = 100, mean=None, std=None
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield, per batch of ``images`` (uint8 pixels), ``{relu node name: its output}`` in graph order.

    ``mean`` / ``std`` normalize the pixels (default: the model's registry config).
    """
    mean, std = model_normalization(model, mean, std)
    gm = trace(model.eval())
    names = [n.name for n in relu_nodes(gm)]
    if not names:
        raise ConversionError(f"{type(model).__name__} has no ReLU activations to record")
    for start in range(0, len(images), batch_size):
        rec = _Recorder(gm, set(names))
        rec.run(normalize(images[start : start + batch_size], mean, std))
        yield {name: rec.recorded[name] for name in names}


@torch.no_grad()
def activation_scales(
    model: nn.Module,
    images: torch.Tensor,
    percentile: float = 100.0,
    batch_size: int = 100,
    max_values: int = 1 << 22,
    seed: int = 0,
    mean=None,
    std=None,
) -> dict[str, float]:
    """Per-ReLU scale: the ``percentile`` of its non-zero outputs over ``images`` (100 = the maximum).

    Zeros are left out, as in Rueckauer et al. (2017) and the SNN toolbox: a ReLU layer is mostly
    zeros and those say nothing about the range to cover. The maximum is exact; other percentiles are
    exact while a layer has at most ``max_values`` non-zero outputs in all, otherwise they come from
    a uniform random subsample of about that many values (drawn with ``seed``). A layer that is
    zero on every image gets scale 1. ``mean`` / ``std``: as in :func:`iter_relu_activations`.
    """
    if not 0.0 < percentile <= 100.0:
        raise ConfigError("percentile", f"must be in (0, 100], got {percentile}")
    gen = torch.Generator().manual_seed(seed)
    maxima: dict[str, float] = {}
    kept: dict[str, list[torch.Tensor]] = {}
    total = len(images)
    for start, acts in zip(range(0, total, batch_size), iter_relu_activations(model, images, batch_size, mean, std)):
        share = min(batch_size, total - start) / total
        for name, act in acts.items():
            maxima[name] = max(maxima.get(name, 0.0), float(act.max()))
            if percentile < 100.0:
                nz = act[act > 0]
                budget = max(1, int(max_values * share))
                if nz.numel() > budget:
                    nz = nz[torch.randint(nz.numel(), (budget,), generator=gen)]
                kept.setdefault(name, []).append(nz.float())
    scales = {}
    for name, peak in maxima.items():
        if peak <= 0:
            scales[name] = 1.0
        elif percentile >= 100.0:
            scales[name] = peak
        else:
            scales[name] = float(positive_percentile(torch.cat(kept[name]), percentile))
    return scales
