"""Conversion of a trained float CNN into a radix SNN, read top to bottom:

1. :func:`quantize` -- trace the model (:func:`~radixsnn.core.trace.trace_graph`: torch.fx on a copy,
   BatchNorm folded, ReLUs -> neuron layers) and wrap graph and float parameters in a
   :class:`~radixsnn.core.qann.QANN`: T-bit activations, b-bit weights, scales still 1;
2. ``qann.calibrate(images)`` -- activation scales from the float network's activations (and optionally
   quantization-aware fine-tuning, :mod:`radixsnn.training`);
3. ``qann.to_snn()`` -- the integer weights, biases and shifts of the
   :class:`~radixsnn.core.snn.IntegerSNN`, which the engines run.

:func:`convert` does all three in one call. The user's model is never modified.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from radixsnn.core.inputs import model_input_shape, model_normalization
from radixsnn.core.qann import DEFAULT_ACT_SCALE, DEFAULT_GAINS, DEFAULT_SHIFT, DEFAULT_WEIGHT_GRID, QANN
from radixsnn.core.snn import IntegerSNN
from radixsnn.core.trace import trace_graph
from radixsnn.errors import ConfigError


def quantize(
    model: nn.Module,
    time_steps: int,
    *,
    weight_bits: int = 8,
    act_scale: str = DEFAULT_ACT_SCALE,
    shift: str = DEFAULT_SHIFT,
    weight_grid: str = DEFAULT_WEIGHT_GRID,
    gains: str = DEFAULT_GAINS,
    input_bits: int = 8,
    input_shape: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> QANN:
    """The QANN of ``model`` with ``time_steps``-bit activations and ``weight_bits``-bit weights.

    ``act_scale`` is ``"channel"`` (one activation scale per output channel), ``"layer"`` or ``"auto"``
    (per channel when ``time_steps < weight_bits``, see :func:`~radixsnn.core.qann.resolve_act_scale`); ``shift="channel"``
    gives every output channel its own shift ``dT`` (its weights use their whole b-bit range; the neurons'
    trains are delayed to stay aligned), ``"layer"`` one shift per layer. ``weight_grid="mse"`` picks each
    shift by the least squared weight error (clipping the largest weights), ``"max"`` as the largest
    that clips none; ``gains="delayed"`` makes shortcut gains b-bit weights on delayed spikes (``m 2^k``),
    ``"plain"`` plain b-bit weights (see :class:`~radixsnn.core.qann.QANN`).
    Traced with torch.fx; ``model`` is not modified. ``mean`` / ``std`` (the input normalization, per
    channel) and ``input_shape`` (one image's ``(C, H, W)``) default to the model's registry config
    (:func:`radixsnn.create_model`); ``mean`` and ``std`` are required for any other model. The activation
    scales start at 1: call :meth:`QANN.calibrate` next.

    >>> import radixsnn as rs
    >>> qann = rs.quantize(rs.create_model("resnet20"), time_steps=4)
    >>> qann.time_steps, qann.weight_bits, len(qann.graph.nodes)
    (4, 8, 21)
    """
    if not isinstance(model, nn.Module):
        raise ConfigError("model", f"must be a torch.nn.Module, got a {type(model).__name__}")
    mean, std = model_normalization(model, mean, std)
    shape = model_input_shape(model, input_shape)
    if len(mean) != shape[0]:
        raise ConfigError("mean", f"has {len(mean)} channels but the input has {shape[0]}")
    graph, params = trace_graph(model, shape, mean, std)
    qann = QANN(graph, time_steps, weight_bits=weight_bits, input_bits=input_bits, act_scale=act_scale, shift=shift,
                weight_grid=weight_grid, gains=gains)
    qann.load_float_params(params)
    return qann


def convert(
    model: nn.Module,
    calib_images: torch.Tensor,
    time_steps: int,
    *,
    calib: str = "mse",
    progress: bool = True,
    metadata: dict | None = None,
    **quantize_options,
) -> IntegerSNN:
    """Quantize ``model``, calibrate it on ``calib_images`` (uint8, N x C x H x W; training images, never
    the test set) and convert it: the integer SNN, in one call.

    ``quantize_options`` are those of :func:`quantize`; ``calib`` is ``"mse"`` or ``"percentile:P"``;
    ``metadata`` is recorded in the SNN (and its file).

    >>> import torch, radixsnn as rs
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 2))
    >>> images = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    >>> snn = rs.convert(model, images, time_steps=4, input_shape=(3, 8, 8), mean=(0.5,) * 3, std=(0.25,) * 3, progress=False)
    >>> snn.time_steps, sorted(snn.delta_t) == sorted(n.name for n in snn.graph.layers)
    (4, True)
    """
    qann = quantize(model, time_steps, **quantize_options)
    device = next(model.parameters(), torch.empty(0)).device
    qann.to(device)
    qann.calibrate(calib_images.to(device), method=calib, progress=progress)
    return qann.to_snn(metadata)
