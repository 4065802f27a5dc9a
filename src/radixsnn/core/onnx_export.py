"""The integer SNN as a standard ONNX model, and onnxruntime as a third exact engine.

:func:`export_onnx` writes the network the integer engine computes -- each layer
``clamp(floor((sum w q + b) / 2^dT), 0, 2^T - 1)`` on uint8 activations -- with ONNX's integer and
quantization operators, so any ONNX runtime computes the integer engine's logits bit for bit. The graph
reads the uint8 image as the SNN does (``pixels``, N x C x H x W) and gives the int64 ``logits``; its
metadata holds the logits' float scale per class (``float logits = logits * scale``), ``T`` per layer and
per channel, the bit widths, the ``.snn`` digest, the radixsnn version and which CPUs it is exact on.

Each neuron layer is lowered one of three ways, chosen per layer from its integers (the conditions are
proved in tests/test_onnx.py):

* ``qlinear`` -- one ``QLinearConv`` does the whole layer: the products, the int32 bias, the shift and
  the saturation. A shortcut (a ``select`` term) rides along as extra input channels whose kernel holds
  its gain at the centre tap, so a residual block's sum is formed before the floor. QLinearConv's
  requantization rounds ``sum * multiplier`` half to even; with the bias lowered by ``2^(dT-1)`` and
  the multiplier ``2^-dT (1 + 2^-23)`` the result is the floor, provided the nudge never carries a sum
  across an integer (:func:`rounding_holds`: about ``dT + T <= 22``, or sums too small to reach the
  saturation). With ``int8_weights="portable"`` (the default) the weights are int8 where
  ``2 (2^T_in - 1) max|w| <= 32767`` (x86 CPUs without VNNI add pairs of uint8 x int8 products in int16,
  with saturation; this holds for 8-bit weights on trains of up to 7 steps and for 7-bit weights on 8),
  otherwise uint8 with zero point 128 (exact for any 8-bit weights, slower); ``"all"`` takes int8
  weights everywhere, for CPUs that add the products in int32 (:func:`pairs_exact`).
* ``two-stage`` -- a residual layer whose shortcut gains exceed 8 bits, in two QLinearConvs
  (:func:`shortcut_split`): the convolution with the low part of each gain on its centre tap, floored
  into a per-channel uint8 window; then a 1x1 QLinearConv adds the window's offset and the high part of
  the gain times the shortcut and floors the rest of the shift.
* ``integer`` -- ``ConvInteger`` / ``MatMulInteger`` of uint8 x uint8 into int32 (exact for any 8-bit
  weights) and the other terms added in int32, then the floor: in float32 where every value stays below
  2^22 (:func:`float_tail_holds`: ``Cast``, ``Add`` of the bias less ``(2^dT - 1) / 2``,
  ``QuantizeLinear`` by ``2^dT``, ``Min`` with ``2^T_c - 1``), else in int32 (``Add`` of the bias,
  ``Max 0``, ``BitShift`` right per channel, ``Min`` with ``2^T_c - 1``). Used for linear layers, for
  shortcuts that neither lowering above can carry, for a per-neuron bias and where the rounding
  condition fails. The readout is lowered this way; its int32 sums plus its bias are the logits.

Tested with onnx 1.23.2 and onnxruntime 1.32.0, opset :data:`OPSET`. onnx and onnxruntime are the
optional extra ``pip install 'radixsnn[onnx]'``.

>>> import torch, radixsnn as rs
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 2))
>>> images = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
>>> snn = rs.convert(model, images, time_steps=4, input_shape=(3, 8, 8), mean=(0.5,) * 3, std=(0.25,) * 3, progress=False)
>>> torch.equal(rs.run(snn, images, engine="onnx").logits, rs.run(snn, images, engine="integer").logits)
True
>>> [layer.lowering for layer in plan(snn)]
['integer', 'readout']
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from radixsnn.core.graph import Node, maxpool_pads, peak_input
from radixsnn.core.snn import IntegerSNN, kept
from radixsnn.errors import ConfigError, ConversionError
from radixsnn.outputs import atomic_write
from radixsnn.version import __version__

#: The ONNX opset the exported models use (and the IR version onnxruntime 1.32 reads).
OPSET = 21
IR_VERSION = 10
#: Largest pair sum of uint8 x int8 products that an int16 lane holds (x86 without VNNI adds pairs).
PAIR_LIMIT = 32767
#: The multiplier's nudge above 2^-dT in the qlinear lowering (the smallest float32 step above 1).
NUDGE = 2.0 ** -23
#: The qlinear lowering's rounding argument needs ``(2 Q + 1) 2^dT`` within this (see :func:`rounding_holds`).
ROUNDING_LIMIT = 1 << 23
#: int32 accumulators: every layer's largest sum must stay below this.
INT32_LIMIT = 1 << 31
#: The float tail of the integer lowering needs every value below this (see :func:`float_tail_holds`).
FLOAT_LIMIT = 1 << 22
INSTALL = "pip install 'radixsnn[onnx]'"


def require_onnx():
    """``(onnx, onnxruntime)``; raises :class:`ConfigError` saying how to install them if they are missing."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise ConfigError(None, f"the onnx engine and export need onnx and onnxruntime: {INSTALL}") from None
    return onnx, onnxruntime


@dataclass(frozen=True)
class Lowering:
    """How one layer becomes ONNX operators: ``lowering`` is ``"qlinear"``, ``"two-stage"``, ``"integer"`` or
    ``"readout"``; ``weights`` the type of its weights in (the first) QLinearConv (``"int8"`` or ``"uint8"``);
    ``split`` the two-stage lowering's :class:`ShortcutSplit` and ``second_weights`` the type of its second
    QLinearConv's; ``tail`` how the integer lowering floors (``"float"`` where :func:`float_tail_holds`,
    else ``"int32"``)."""

    layer: str
    lowering: str
    weights: str
    split: ShortcutSplit | None = None
    tail: str = "int32"
    second_weights: str = "int8"


def _source_channels(snn: IntegerSNN, term) -> int:
    """How many channels a select term's input has before its zero channels are padded in."""
    channels = term.attrs.get("channels")
    return len(channels) if channels is not None else snn.graph[term.src].channels


def _source_peak(snn: IntegerSNN, src: str) -> int:
    return (1 << snn.train_length(src)) - 1


def _shifts(snn: IntegerSNN, node: Node) -> list[int]:
    dt = snn.delta_t[node.name]
    return list(dt) if isinstance(dt, list) else [int(dt)] * node.channels


def _steps(snn: IntegerSNN, node: Node) -> list[int]:
    return snn.channel_time_steps.get(node.name) or [snn.train_length(node.name)] * node.channels


def _centre_tap(term) -> bool:
    """Whether a convolution's centre tap reads the input at the output's position (stride 1, "same" padding)."""
    a, (kh, kw) = term.attrs, term.weight_shape[2:]
    return a["stride"] == [1, 1] and kh % 2 == 1 and kw % 2 == 1 and \
        a["padding"] == [a["dilation"][0] * (kh // 2), a["dilation"][1] * (kw // 2)]


def _one_qlinear_conv(node: Node) -> bool:
    """Whether the layer's terms fit one convolution: one conv term (any groups), or several conv terms of
    one geometry and groups 1, plus shortcuts the centre tap carries."""
    convs = [t for t in node.terms if t.op == "conv2d"]
    if not convs or any(t.op == "linear" for t in node.terms):
        return False
    if len(node.terms) == 1:
        return True
    geometry = {(tuple(t.weight_shape[2:]), str(t.attrs["stride"]), str(t.attrs["padding"]), str(t.attrs["dilation"]))
                for t in convs}
    selects = len(convs) < len(node.terms)
    return len(geometry) == 1 and all(t.attrs["groups"] == 1 for t in convs) and (not selects or _centre_tap(convs[0]))


def rounding_holds(shift: int, steps: int, high: int) -> bool:
    """Whether the qlinear requantization floors exactly every sum up to ``high`` of a channel with shift
    ``dT`` and ``T`` steps: ``(2 Q + 1) 2^dT <= 2^23``, where ``Q = min(2^T - 2, floor(high / 2^dT))`` is the
    largest output below the saturation that such a sum reaches.

    The requantization computes ``round(fl(s 2^-dT (1 + 2^-23)))`` for ``s = sum - 2^(dT-1)``. With
    ``sum = q 2^dT + r``: at ``r = 0`` the product exceeds ``q - 1/2`` by ``(q - 1/2) 2^-23``, at least a
    float32 step, so it rounds to ``q`` (``q <= 0`` saturates to 0); at ``r = 2^dT - 1`` it stays below
    ``q + 1/2`` while ``(q + 1/2) 2^-22 <= 2^-dT``, which the condition gives for every ``q <= Q`` (larger
    ``q`` saturate). Rounding is monotone, so the residues in between follow."""
    q = min((1 << steps) - 2, high >> shift)
    return (2 * max(q, 0) + 1) << shift <= ROUNDING_LIMIT


def channel_ranges(snn: IntegerSNN, node: Node, terms=None) -> tuple[list[int], list[int]]:
    """Each output channel's smallest and largest sum (bias included) of the layer's ``terms`` (default:
    all), from their weights and their sources' values in ``[0, 2^T_src - 1]``."""
    low = high = snn.biases[node.name].reshape(node.channels, -1).to(torch.int64)
    low, high = low.amin(1), high.amax(1)
    for t in node.terms if terms is None else terms:
        w = snn.weights[t.param].to(torch.int64).reshape(snn.weights[t.param].shape[0], -1)
        scale = _source_peak(snn, t.src)
        if t.op == "linear" and t.attrs["mode"] == "sumpool":
            scale *= snn.graph[t.src].shape[1] * snn.graph[t.src].shape[2]
        low = low + w.clamp(max=0).sum(1) * scale
        high = high + w.clamp(min=0).sum(1) * scale
    return low.tolist(), high.tolist()


def constant_channels(snn: IntegerSNN, node: Node, ranges: tuple[list[int], list[int]] | None = None) -> dict[int, int]:
    """The output channels of a neuron layer whose value is the same for every input (their whole range
    of sums, ``ranges`` or :func:`channel_ranges`, floors and saturates to one number), with that value."""
    caps = [(1 << t) - 1 for t in _steps(snn, node)]
    out = {}
    for c, (d, lo, hi, cap) in enumerate(zip(_shifts(snn, node), *(ranges or channel_ranges(snn, node)), caps)):
        a, b = min(max(lo >> d, 0), cap), min(max(hi >> d, 0), cap)
        if a == b:
            out[c] = a
    return out


def _rounding_holds(snn: IntegerSNN, node: Node) -> bool:
    ranges = channel_ranges(snn, node)
    constant = constant_channels(snn, node, ranges)
    return all(c in constant or rounding_holds(d, t, hi) for c, (d, t, hi) in
               enumerate(zip(_shifts(snn, node), _steps(snn, node), ranges[1])))


@dataclass(frozen=True)
class ShortcutSplit:
    """A residual layer in two QLinearConvs, per output channel ``c`` (see :func:`shortcut_split`): the
    shortcut gain ``g = low + high 2^e``; the first stage floors ``(conv + bias + low s) / 2^e`` minus
    ``window`` into uint8, the second floors ``(q + window + high s) / 2^(dT - e)``."""

    shift: list[int]
    low: list[int]
    high: list[int]
    window: list[int]


def _split_channel(g: int, d: int, peak: int, cap: int, lo: int, hi: int) -> tuple[int, int, int, int] | None:
    """``(e, low, high, window)`` for one channel whose shortcut gain is ``g`` on a source of values in
    ``[0, peak]``, with shift ``d``, saturation ``cap`` and conv-plus-bias sums in ``[lo, hi]``; None where
    no split fits. With ``q = floor(u / 2^e)`` for ``u = conv + bias + low s``, the layer's value is
    ``clamp(floor((q + high s) / 2^j), 0, cap)``, ``j = d - e`` (``high s 2^e`` is a multiple of ``2^e``).
    Every ``q`` at or below ``L = 2^j - 1 - max(0, high peak)`` gives 0 and every ``q`` at or above
    ``H = cap 2^j - min(0, high peak)`` gives ``cap`` for every ``s``, and ``q`` stays within
    ``[floor(lo' / 2^e), floor(hi' / 2^e)]`` (``lo'``, ``hi'`` the extremes of ``u``), so the first stage
    may saturate ``q`` minus the window's start to ``[0, 255]`` when the window, the intersection of the
    two ranges, holds at most 256 values. The largest ``e`` that fits is taken."""
    for e in range(d, -1, -1):
        r = g % (1 << e)
        low = r - (1 << e) if 2 * r >= 1 << e else r  # the remainder nearest 0
        if not -128 <= low <= 127:
            continue
        high, j = (g - low) >> e, d - e
        if abs(high) > 127:
            return None
        reached = ((lo + min(0, low * peak)) >> e, (hi + max(0, low * peak)) >> e)
        window = max((1 << j) - 1 - max(0, high * peak), reached[0])
        top = max(min(cap * (1 << j) - min(0, high * peak), reached[1]), window)
        if top - window > 255:
            continue
        first = hi + max(0, low * peak) - (window << e)
        second = 255 + window + max(0, high * peak)
        extreme = max(abs(lo + min(0, low * peak) - (window << e)), abs(first)) + (1 << e)
        if extreme < INT32_LIMIT and rounding_holds(e, 8, first) and rounding_holds(j, cap.bit_length(), second):
            return e, low, high, window
    return None


def shortcut_split(snn: IntegerSNN, node: Node) -> ShortcutSplit | None:
    """The two-stage lowering of a layer with one shortcut (see :func:`_split_channel`), or None where a
    channel does not fit it. The layer's conv terms are one QLinearConv (:func:`_one_qlinear_conv`)."""
    selects = [t for t in node.terms if t.op == "select"]
    if len(selects) != 1:
        return None
    term = selects[0]
    gains = _shortcut_gains(term, np.asarray(snn.weights[term.param].cpu().numpy(), np.int64)).tolist()
    low, high = channel_ranges(snn, node, [t for t in node.terms if t.op == "conv2d"])
    constant = constant_channels(snn, node)
    peak = _source_peak(snn, term.src)
    out = ShortcutSplit([], [], [], [])
    for c, (g, d, t, lo, hi) in enumerate(zip(gains, _shifts(snn, node), _steps(snn, node), low, high)):
        split = (0, 0, 0, 0) if c in constant else _split_channel(g, d, peak, (1 << t) - 1, lo, hi)
        if split is None:
            return None
        for field, value in zip((out.shift, out.low, out.high, out.window), split):
            field.append(value)
    return out


def plan(snn: IntegerSNN, *, int8_weights: str = "portable") -> list[Lowering]:
    """The lowering of every layer (neuron layers and the readout), in graph order; raises
    :class:`ConversionError` naming the layer for what ONNX's 8-bit integer operators cannot hold.

    ``int8_weights="portable"`` (the default) keeps every QLinearConv exact on x86 CPUs without VNNI,
    whose onnxruntime kernels add pairs of uint8 x int8 products in int16 with saturation: weights are
    int8 only where ``2 peak max|w| <= 32767`` (:data:`PAIR_LIMIT`), uint8 with zero point 128 elsewhere.
    ``"all"`` takes int8 weights everywhere, for runtimes that add the products in int32
    (:func:`pairs_exact`): x86 with VNNI or AMX, ARM."""
    limit = {"portable": PAIR_LIMIT, "all": float("inf")}.get(int8_weights)
    if limit is None:
        raise ConfigError("int8_weights", f"must be 'portable' or 'all', got {int8_weights!r}")
    for node in snn.graph.nodes:
        if node.kind != "output" and snn.train_length(node.name) > 8:
            raise ConversionError(f"layer {node.name}: its {snn.train_length(node.name)}-step trains do not fit the uint8 "
                                  "activations of the ONNX export (T <= 8)")
    out = []
    for node in snn.graph.layers:
        split = None
        weights = [snn.weights[t.param] for t in node.terms]
        sums = peak_input(snn.graph, node, weights, lambda s: _source_peak(snn, s))
        bound = sums + int(snn.biases[node.name].abs().max())
        if bound + (1 << max(_shifts(snn, node))) >= INT32_LIMIT:
            raise ConversionError(f"layer {node.name}: its sums can reach {bound}, beyond the int32 accumulators of ONNX's "
                                  "integer operators")
        largest = max(int(w.abs().max()) if w.numel() else 0 for w in weights)
        if any(int(w.abs().max()) > 127 for t, w in zip(node.terms, weights) if t.op != "select" and w.numel()):
            raise ConversionError(f"layer {node.name}: weights beyond 8 bits do not fit ONNX's integer operators")
        peak = max(_source_peak(snn, t.src) for t in node.terms)
        kind = _weight_type(peak, largest, limit)
        if node.kind == "output":
            lowering = "readout"
        elif (_one_qlinear_conv(node) and largest <= 127 and snn.biases[node.name].dim() == 1
              and _rounding_holds(snn, node)):
            lowering = "qlinear"
        elif _one_qlinear_conv(node) and snn.biases[node.name].dim() == 1 and (split := shortcut_split(snn, node)):
            lowering = "two-stage"
            taps = max(int(w.abs().max()) for t, w in zip(node.terms, weights) if t.op == "conv2d")
            kind = _weight_type(peak, max(taps, *(abs(v) for v in split.low)), limit)
        else:
            lowering = "integer"
        tail = "float" if lowering == "integer" and _float_tail_holds(snn, node, sums) else "int32"
        second = _weight_type(255, max(1, *(abs(v) for v in split.high)), limit) if lowering == "two-stage" else "int8"
        out.append(Lowering(node.name, lowering, kind, split if lowering == "two-stage" else None, tail, second))
    return out


def _weight_type(peak: int, largest: int, limit: float) -> str:
    """A QLinearConv's weight type: int8 where no pair of products of inputs up to ``peak`` and weights up
    to ``largest`` in magnitude passes ``limit``, else uint8 with zero point 128."""
    return "int8" if 2 * peak * largest <= limit else "uint8"


class _Builder:
    """An ONNX graph under construction: initializers and nodes with fresh names; ``weights`` the SNN's."""

    def __init__(self, onnx, weights: dict[str, np.ndarray]):
        self.onnx, self.weights = onnx, weights
        self.nodes, self.initializers, self.count = [], [], 0

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, hint: str, array: np.ndarray) -> str:
        name = self.fresh(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, output: str | None = None, **attrs) -> str:
        output = output or self.fresh(hint)
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [output], name=self.fresh(op_type), **attrs))
        return output


def _per_channel(values, node: Node, dtype) -> np.ndarray:
    """A per-output-channel vector shaped to broadcast against the layer's (N, C, ...) values; a scalar
    where every channel has the same value."""
    if len(set(values)) == 1:
        return np.array(values[0], dtype=dtype)
    return np.asarray(values, dtype=dtype).reshape(-1, *([1] * (len(node.shape) - 1)))


def _gather(b: _Builder, term, x: str) -> str:
    channels = term.attrs.get("channels")
    if channels is None:
        return x
    index = b.const("channels", np.maximum(np.asarray(channels, dtype=np.int64), 0))
    return b.op("Gather", [x, index], "gathered", axis=1)


def _conv_attrs(term) -> dict:
    a = term.attrs
    return {"strides": a["stride"], "pads": [*a["padding"], *a["padding"]], "dilations": a["dilation"], "group": a["groups"]}


def _shortcut(b: _Builder, term, node: Node, x: str) -> tuple[str, np.ndarray]:
    """A select term's input at the layer's shape (uint8: its channels, every stride-th position, the
    zero channels padded in) and its gains (0 on zero channels)."""
    x, gains, _ = _shortcut_channels(b, term, node, x)
    before, after = term.attrs["pad"]
    if before or after:
        dims = len(node.shape) - 1
        pads = np.zeros(2 * (dims + 2), np.int64)
        pads[1], pads[dims + 3] = before, after
        x = b.op("Pad", [x, b.const("pads", pads)], "padded")
    return x, gains


def _shortcut_channels(b: _Builder, term, node: Node, x: str) -> tuple[str, np.ndarray, np.ndarray]:
    """A select term's input before its zero channels are padded in (uint8: its channels, every stride-th
    position), its gains per output channel (0 on zero channels) and, per output channel, the input
    channel it reads (-1 for zero channels): a convolution that carries the shortcut on its centre tap
    needs no input channels of zeros."""
    x = _gather(b, term, x)
    stride, dims = term.attrs["stride"], len(node.shape) - 1
    if stride > 1:
        x = b.op("Slice", [x, b.const("starts", np.zeros(dims, np.int64)), b.const("ends", np.full(dims, 1 << 62, np.int64)),
                           b.const("axes", np.arange(2, 2 + dims, dtype=np.int64)), b.const("steps", np.full(dims, stride, np.int64))],
                 "strided")
    gains = _shortcut_gains(term, np.asarray(b.weights[term.param], np.int64))
    before = term.attrs["pad"][0]
    column = np.arange(node.channels) - before
    column[gains == 0] = -1
    return x, gains, column


def _shortcut_gains(term, gains: np.ndarray) -> np.ndarray:
    """A select term's gains per output channel, 0 on the channels that read zeros (channel -1 or padding)."""
    gains = gains.copy()
    channels = term.attrs.get("channels")
    if channels is not None and min(channels) < 0:
        before, after = term.attrs["pad"]
        read = [-1] * before + list(channels) + [-1] * after
        gains[[i for i, c in enumerate(read) if c < 0]] = 0
    return gains


def _uint8_zero_points(b: _Builder) -> list[str]:
    """ConvInteger's / MatMulInteger's zero points: 0 for the uint8 input, 128 for the weights stored as ``w + 128``."""
    return [b.const("x_zero", np.array(0, np.uint8)), b.const("w_zero", np.array(128, np.uint8))]


def _integer_term(b: _Builder, term, node: Node, values: dict[str, str], zero: list[int] = ()) -> str:
    """One synapse term as an int32 tensor of the layer's shape (uint8 x uint8 products: exact for any
    weights), with the output channels ``zero`` left out (their weights 0)."""
    tp = b.onnx.TensorProto
    zero = list(zero)
    if term.op == "select":
        x, gains = _shortcut(b, term, node, values[term.src])
        gains[zero] = 0
        return b.op("Mul", [b.op("Cast", [x], "wide", to=tp.INT32), b.const("gains", _per_channel(gains, node, np.int32))],
                    "shortcut")
    w = np.array(b.weights[term.param], np.int64)
    w[zero] = 0
    x = _gather(b, term, values[term.src])
    if term.op == "conv2d":
        return b.op("ConvInteger", [x, b.const("w", (w + 128).astype(np.uint8)), *_uint8_zero_points(b)], "conv",
                    **_conv_attrs(term))
    if term.attrs["mode"] == "sumpool":  # a global sum pool folded into the classifier: its sums exceed uint8
        total = b.op("ReduceSum", [b.op("Cast", [x], "wide", to=tp.INT32), b.const("axes", np.array([2, 3], np.int64))],
                     "pooled", keepdims=0)
        return b.op("MatMul", [total, b.const("w", w.T.astype(np.int32))], "linear")
    flat = b.op("Flatten", [x], "flat", axis=1)
    return b.op("MatMulInteger", [flat, b.const("w", (w.T + 128).astype(np.uint8)), *_uint8_zero_points(b)], "linear")


def _integer_layer(b: _Builder, snn: IntegerSNN, node: Node, values: dict[str, str], tail: str) -> str:
    """The layer's int32 sums, then for a neuron layer ``min(max(sum + bias, 0) >> dT, 2^T_c - 1)`` as uint8
    (``tail``: ``"float"`` or ``"int32"``, see :func:`float_tail_holds`); the readout's sums plus its bias
    become the int64 ``logits``."""
    tp = b.onnx.TensorProto
    constant = constant_channels(snn, node) if tail == "float" else {}
    acc = None
    for term in node.terms:
        part = _integer_term(b, term, node, values, sorted(constant))
        acc = part if acc is None else b.op("Add", [acc, part], "sum")
    bias = snn.biases[node.name].cpu().numpy().astype(np.int64)
    if node.kind == "output":
        acc = b.op("Add", [acc, b.const("bias", _per_channel_or_map(bias, node, np.int32))], "biased")
        return b.op("Cast", [acc], "logits", output="logits", to=tp.INT64)
    shifts = _shifts(snn, node)
    if tail == "float":  # floor as round-to-nearest of a half-integer that is never a tie: see float_tail_holds
        for c, value in constant.items():
            bias[c] = value << shifts[c]
        offset = (np.array([(1 << d) - 1 for d in shifts], np.float64) / 2).reshape(-1, *([1] * (bias.ndim - 1)))
        acc = b.op("Add", [b.op("Cast", [acc], "float", to=tp.FLOAT),
                           b.const("bias", _per_channel_or_map(bias - offset, node, np.float32))], "biased")
        scale = [float(1 << d) for d in shifts]
        per = {} if len(set(scale)) == 1 else {"axis": 1}
        acc = b.op("QuantizeLinear", [acc, b.const("scale", np.array(scale if per else scale[0], np.float32)),
                                      b.const("zero", np.zeros(len(scale) if per else (), np.uint8))], "floored", **per)
        return _saturate(b, snn, node, acc)
    acc = b.op("Add", [acc, b.const("bias", _per_channel_or_map(bias, node, np.int32))], "biased")
    acc = b.op("Cast", [b.op("Max", [acc, b.const("zero", np.array(0, np.int32))], "rectified")], "unsigned", to=tp.UINT32)
    if max(shifts):
        acc = b.op("BitShift", [acc, b.const("shift", _per_channel(shifts, node, np.uint32))], "shifted", direction="RIGHT")
    caps = [(1 << t) - 1 for t in _steps(snn, node)]
    return b.op("Cast", [b.op("Min", [acc, b.const("cap", _per_channel(caps, node, np.uint32))], "saturated")], node.name,
                to=tp.UINT8)


def _per_channel_or_map(bias: np.ndarray, node: Node, dtype) -> np.ndarray:
    """A bias as :func:`_per_channel` gives it, or its per-neuron map (C, H, W) as it is."""
    return _per_channel(bias.tolist(), node, dtype) if bias.ndim == 1 else bias.astype(dtype)


def float_tail_holds(sums: int, biased: int, bias: int, shift: int) -> bool:
    """Whether a neuron channel may floor in float32 -- ``Cast`` of its int32 sum of terms, ``Add`` of
    ``bias - (2^dT - 1) / 2``, ``QuantizeLinear`` with scale ``2^dT`` (which rounds to nearest and
    saturates to ``[0, 255]``), ``Min`` with ``2^T_c - 1`` -- when its sum of terms, that sum plus the bias
    and the bias stay within ``sums``, ``biased`` and ``bias`` in magnitude. With
    ``sum + bias = q 2^dT + r``, ``0 <= r < 2^dT``, the quotient is ``q - 1/2 + (r + 1/2) / 2^dT``, strictly
    between ``q - 1/2`` and ``q + 1/2``, so it rounds to ``q`` whatever the tie rule; every value is an
    integer or a half-integer below ``2^22`` in magnitude, which float32 holds exactly, and dividing by a
    power of two is exact. About twice as fast as the int32 tail (``Max``, ``BitShift``, ``Min``, casts)."""
    return max(sums, biased, bias) + (1 << shift) < FLOAT_LIMIT


def _float_tail_holds(snn: IntegerSNN, node: Node, sums: int) -> bool:
    """:func:`float_tail_holds` for every channel of a neuron layer but those of one value, whose weights
    the float tail zeroes and whose bias it sets to that value (:func:`constant_channels`)."""
    if node.kind != "neuron":
        return False
    ranges = channel_ranges(snn, node)
    constant = constant_channels(snn, node, ranges)
    bias = snn.biases[node.name].reshape(node.channels, -1).abs().amax(1).tolist()
    return all(c in constant or float_tail_holds(sums, max(-lo, hi), int(b), d) for c, (lo, hi, b, d) in
               enumerate(zip(*ranges, bias, _shifts(snn, node))))


def qlinear_requantization(bias: np.ndarray, shifts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """QLinearConv's int32 bias and per-channel float32 weight scales (with unit input and output scales)
    that make its round-half-even requantization compute ``floor((sum + bias) / 2^dT)``: the bias lowered
    by ``2^(dT-1)``, the scale ``2^-dT (1 + 2^-23)`` (1 where ``dT = 0``)."""
    offset = np.array([(1 << d) >> 1 for d in shifts], np.int64)
    scale = np.array([2.0 ** -d * (1.0 + NUDGE) if d else 1.0 for d in shifts], np.float32)
    return (np.asarray(bias, np.int64) - offset).astype(np.int32), scale


def _qlinear_layer(b: _Builder, snn: IntegerSNN, node: Node, values: dict[str, str], weights: str) -> str:
    """The whole layer in one QLinearConv (see the module docstring), then ``Min`` for trains under 8 steps."""
    convs = [t for t in node.terms if t.op == "conv2d"]
    kh, kw = convs[0].weight_shape[2:]
    inputs, blocks = [], []
    for term in convs:
        inputs.append(_gather(b, term, values[term.src]))
        blocks.append(np.asarray(b.weights[term.param], np.int64))
    for term in node.terms:
        if term.op == "select":  # the shortcut's gains on the centre tap of channels of its own
            x, gains, column = _shortcut_channels(b, term, node, values[term.src])
            inputs.append(x)
            blocks.append(_centre_taps(gains, column, _source_channels(snn, term), kh, kw))
    x = inputs[0] if len(inputs) == 1 else b.op("Concat", inputs, "stacked", axis=1)
    w = np.concatenate(blocks, axis=1)
    bias, shifts = snn.biases[node.name].cpu().numpy().astype(np.int64), _shifts(snn, node)
    for c, value in constant_channels(snn, node).items():  # a channel that never changes: its value as the bias
        w[c], bias[c], shifts[c] = 0, value, 0
    return _saturate(b, snn, node, _qlinear(b, x, w, bias, shifts, weights, node.name, **_conv_attrs(convs[0])))


def _centre_taps(gains, column: np.ndarray, inputs: int, kh: int, kw: int) -> np.ndarray:
    """The ``(C, inputs, kh, kw)`` kernel that gives output channel ``c`` input channel ``column[c]`` times
    ``gains[c]`` at the centre tap (nothing where ``column[c]`` is -1)."""
    block = np.zeros((len(gains), inputs, kh, kw), np.int64)
    rows = np.flatnonzero(column >= 0)
    block[rows, column[rows], kh // 2, kw // 2] = np.asarray(gains, np.int64)[rows]
    return block


def _saturate(b: _Builder, snn: IntegerSNN, node: Node, y: str) -> str:
    """``Min`` of a QLinearConv's uint8 output with ``2^T_c - 1`` where trains are under 8 steps."""
    caps = [(1 << t) - 1 for t in _steps(snn, node)]
    if min(caps) < 255:
        y = b.op("Min", [y, b.const("cap", _per_channel(caps, node, np.uint8))], node.name)
    return y


def _qlinear(b: _Builder, x: str, w: np.ndarray, bias: np.ndarray, shifts: list[int], weights: str, name: str,
             **attrs) -> str:
    """One QLinearConv of uint8 ``x`` with integer weights ``w`` that floors ``(sum + bias) / 2^shift`` per
    output channel and saturates to ``[0, 255]`` (:func:`qlinear_requantization`)."""
    bias, scale = qlinear_requantization(bias, shifts)
    channels = w.shape[0]
    if weights == "int8":
        w_const, w_zero = b.const("w", w.astype(np.int8)), b.const("w_zero", np.zeros(channels, np.int8))
    else:
        w_const, w_zero = b.const("w", (w + 128).astype(np.uint8)), b.const("w_zero", np.array(128, np.uint8))
    return b.op("QLinearConv", [x, b.const("x_scale", np.array(1.0, np.float32)), b.const("x_zero", np.array(0, np.uint8)),
                                w_const, b.const("w_scale", scale), w_zero, b.const("y_scale", np.array(1.0, np.float32)),
                                b.const("y_zero", np.array(0, np.uint8)), b.const("bias", bias)], name, **attrs)


def _two_stage_layer(b: _Builder, snn: IntegerSNN, node: Node, values: dict[str, str], lowering: Lowering) -> str:
    """A residual layer in two QLinearConvs (:func:`shortcut_split`): the convolution with the shortcut's
    low gains on its centre tap, floored by ``2^e`` into a uint8 window; then a 1x1 QLinearConv adds the
    window's offset and the shortcut's high gains and floors by ``2^(dT - e)``; ``Min`` for trains under 8 steps."""
    split = lowering.split
    convs = [t for t in node.terms if t.op == "conv2d"]
    select = next(t for t in node.terms if t.op == "select")
    kh, kw = convs[0].weight_shape[2:]
    n = node.channels
    inputs = [_gather(b, t, values[t.src]) for t in convs]
    blocks = [np.asarray(b.weights[t.param], np.int64) for t in convs]
    shortcut, _, column = _shortcut_channels(b, select, node, values[select.src])
    m = _source_channels(snn, select)
    if any(split.low):
        inputs.append(shortcut)
        blocks.append(_centre_taps(split.low, column, m, kh, kw))
    x = inputs[0] if len(inputs) == 1 else b.op("Concat", inputs, "stacked", axis=1)
    w = np.concatenate(blocks, axis=1)
    bias = snn.biases[node.name].cpu().numpy().astype(np.int64) - (np.array(split.window, np.int64) << np.array(split.shift))
    second_w = np.concatenate([_centre_taps([1] * n, np.arange(n), n, 1, 1), _centre_taps(split.high, column, m, 1, 1)],
                              axis=1)  # the window's channels with tap 1, then the shortcut's with its high gains
    second_bias = np.array(split.window, np.int64)
    second_shift = [d - e for d, e in zip(_shifts(snn, node), split.shift)]
    for c, value in constant_channels(snn, node).items():  # a channel that never changes: its value as the bias
        w[c], bias[c], second_w[c], second_bias[c], second_shift[c] = 0, 0, 0, value, 0
    q = _qlinear(b, x, w, bias, split.shift, lowering.weights, "window", **_conv_attrs(convs[0]))
    return _saturate(b, snn, node, _qlinear(b, b.op("Concat", [q, shortcut], "stacked", axis=1), second_w, second_bias,
                                            second_shift, lowering.second_weights, node.name))


def to_onnx(snn: IntegerSNN, *, batch: int | None = None, int8_weights: str = "portable"):
    """The SNN as an ``onnx.ModelProto`` (see the module docstring); ``batch`` fixes the batch size (default:
    a free dimension ``N``); ``int8_weights`` as :func:`plan` takes it. Raises :class:`ConversionError`
    naming the layer it cannot express."""
    onnx, _ = require_onnx()
    tp, helper = onnx.TensorProto, onnx.helper
    lowerings = {low.layer: low for low in plan(snn, int8_weights=int8_weights)}
    b = _Builder(onnx, {k: v.cpu().numpy() for k, v in snn.weights.items()})
    graph = snn.graph
    pixels = "pixels"
    x = pixels
    if snn.input_bits < 8:
        x = b.op("BitShift", [pixels, b.const("input_shift", np.array(8 - snn.input_bits, np.uint8))], "input",
                 direction="RIGHT")
    values = {graph.input.name: x}
    for node in graph.nodes[1:]:
        if node.kind == "maxpool":
            a = node.attrs
            left, right, top, bottom = maxpool_pads(a)  # ONNX pads with the lowest value: the same on these trains
            values[node.name] = b.op("MaxPool", [values[node.src]], node.name, kernel_shape=a["kernel"], strides=a["stride"],
                                     pads=[top, left, bottom, right])
        elif lowerings[node.name].lowering == "qlinear":
            values[node.name] = _qlinear_layer(b, snn, node, values, lowerings[node.name].weights)
        elif lowerings[node.name].lowering == "two-stage":
            values[node.name] = _two_stage_layer(b, snn, node, values, lowerings[node.name])
        else:
            values[node.name] = _integer_layer(b, snn, node, values, lowerings[node.name].tail)
    n = batch if batch is not None else "N"
    inputs = [helper.make_tensor_value_info(pixels, tp.UINT8, [n, *graph.input.shape])]
    outputs = [helper.make_tensor_value_info("logits", tp.INT64, [n, graph.output.channels])]
    model = helper.make_model(helper.make_graph(b.nodes, "radix_snn", inputs, outputs, b.initializers),
                              opset_imports=[helper.make_opsetid("", OPSET)], producer_name="radixsnn",
                              producer_version=__version__)
    model.ir_version = IR_VERSION
    meta = metadata(snn, lowerings, int8_weights)
    helper.set_model_props(model, {k: json.dumps(v) if not isinstance(v, str) else v for k, v in meta.items()})
    return model


def metadata(snn: IntegerSNN, lowerings: dict[str, Lowering] | None = None, int8_weights: str = "portable") -> dict:
    """What an exported model's metadata holds (JSON-encoded per key): enough to read its logits as floats
    (``logit_scale``), to say which SNN it is and which CPUs compute it exactly (``int8_weights``:
    "portable" for all, "all" for those whose int8 kernels add in int32), without radixsnn."""
    lowerings = lowerings or {low.layer: low for low in plan(snn, int8_weights=int8_weights)}
    neurons = [n.name for n in snn.graph.nodes if n.kind == "neuron"]
    return {
        "radixsnn.version": __version__,
        "radixsnn.snn_digest": snn.digest(),
        "radixsnn.logit_scale": [float(v) for v in snn.scales[snn.graph.output.name].reshape(-1).tolist()],
        "radixsnn.time_steps": snn.time_steps,
        "radixsnn.layer_time_steps": {name: snn.train_length(name) for name in neurons},
        "radixsnn.channel_time_steps": snn.channel_time_steps,
        "radixsnn.weight_bits": {n.name: snn.bits_of(n.name) for n in snn.graph.layers},
        "radixsnn.input_bits": snn.input_bits,
        "radixsnn.delta_t": snn.delta_t,
        "radixsnn.lowering": {name: low.lowering for name, low in lowerings.items()},
        "radixsnn.int8_weights": int8_weights,
        "radixsnn.classes": snn.graph.output.channels,
    }


def export_onnx(snn: IntegerSNN, path: str | os.PathLike, *, check_images: int = 16, int8_weights: str = "portable") -> Path:
    """Write ``snn`` as an ONNX model to ``path`` (atomically), after ``onnx.checker`` (full check) passed
    and onnxruntime's logits equalled the integer logits of the SNN's QANN -- the reference every engine
    equals -- on ``check_images`` random images (0: no run; an SNN without its QANN needs 0).
    ``int8_weights`` as :func:`plan` takes it; ``"all"`` is refused where this machine's onnxruntime
    saturates pairs of products (:func:`pairs_exact`), since the file would be wrong here."""
    onnx, _ = require_onnx()
    if not isinstance(check_images, int) or isinstance(check_images, bool) or check_images < 0:
        raise ConfigError("check_images", f"must be a non-negative integer, got {check_images!r}")
    if int8_weights not in ("portable", "all"):
        raise ConfigError("int8_weights", f"must be 'portable' or 'all', got {int8_weights!r}")
    if int8_weights == "all" and not pairs_exact():
        raise ConfigError("int8_weights", "'all' needs int8 kernels that add products in int32, and this machine's "
                          "onnxruntime adds pairs of them in int16 with saturation (x86 without VNNI): keep 'portable', "
                          "or export on the CPU that will run the model")
    from radixsnn.core.qann import QANN

    qann = QANN.from_snn(snn) if check_images else None
    if check_images and qann is None:
        raise ConfigError("check_images", "needs the QANN an SNN file carries to check against; this SNN has none (use 0)")
    model = to_onnx(snn, int8_weights=int8_weights)
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    if check_images:
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (check_images, *snn.graph.input.shape), dtype=torch.uint8, generator=g)
        got = torch.from_numpy(_session(data).run(None, {"pixels": images.numpy()})[0])
        with torch.no_grad():
            if not torch.equal(got, qann.integer_logits(images)):
                raise ConversionError("the exported ONNX model's logits differ from the QANN's: not written")
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), "out")


def _session(data: bytes, threads: int | None = None):
    _, ort = require_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its notes on unused constants are not the user's business
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    return ort.InferenceSession(data, options, providers=providers)


def run_onnx(snn: IntegerSNN, images: torch.Tensor) -> torch.Tensor:
    """The int64 logits onnxruntime computes for uint8 ``images`` from the SNN's ONNX model (built once and
    :func:`~radixsnn.core.snn.kept` while the SNN, its integers and the thread count stay the same), with
    int8 weights everywhere where this machine's onnxruntime adds int8 products in int32 (:func:`pairs_exact`)."""
    threads = torch.get_num_threads()
    weights = "all" if pairs_exact() else "portable"
    session = kept(snn, "onnx-session", (threads, weights, snn.state_key()),
                   lambda: _session(to_onnx(snn, int8_weights=weights).SerializeToString(), threads))
    logits = session.run(None, {"pixels": images.cpu().contiguous().numpy()})[0]
    return torch.from_numpy(logits).to(images.device)


@functools.cache
def pairs_exact() -> bool:
    """Whether this machine's onnxruntime computes QLinearConv with int8 weights exactly for any 8-bit
    weights and uint8 inputs (checked once per process). x86 CPUs without VNNI add pairs of uint8 x int8
    products in int16 with saturation (``vpmaddubsw``); VNNI, AMX and ARM's dot products add into int32.

    The check runs the kernel families the export uses -- 3x3 convolutions on 3, 16 and 64 channels, a 1x1
    and a depthwise one -- on all-255 inputs against weights of +-127, where every pair of products
    exceeds int16 (``2 x 255 x 127 = 64770``), with a bias that centres the exact sum: a single saturated
    pair moves the output by at least ``32003 / 2^8``, far outside its window."""
    shapes = (3, 16, 3, 1), (16, 16, 3, 1), (64, 64, 3, 1), (32, 16, 1, 1), (32, 32, 3, 32)  # c_in, c_out, k, groups
    return all(_pairs_exact_on(*shape) for shape in shapes)


def _pairs_exact_on(c_in: int, c_out: int, k: int, groups: int) -> bool:
    onnx, _ = require_onnx()
    shift = 8
    sign = np.where(np.arange(c_out) % 2 == 0, 1, -1).reshape(-1, 1, 1, 1)
    w = 127 * sign * np.ones((c_out, c_in // groups, k, k), np.int64)
    exact = 255 * w.reshape(c_out, -1).sum(1)
    bias = 100 * (1 << shift) - exact  # every output exactly 100 when every product is added exactly
    b = _Builder(onnx, {})
    y = _qlinear(b, "x", w, bias, [shift] * c_out, "int8", "y", group=groups)
    tensor = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(b.nodes, "pairs", [tensor("x", onnx.TensorProto.UINT8, [1, c_in, 6, 6])],
                                   [tensor(y, onnx.TensorProto.UINT8, None)], b.initializers)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    got = _session(model.SerializeToString(), 1).run(None, {"x": np.full((1, c_in, 6, 6), 255, np.uint8)})[0]
    return bool((got == 100).all())
