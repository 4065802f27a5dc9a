"""Two engines that run an :class:`~radixsnn.core.snn.IntegerSNN` on images, with one answer.

* :func:`run_spikes` simulates every time step of every neuron: input pixels become radix trains,
  each layer's synaptic currents are computed per step (batched over images and time), the
  Algorithm-1 neurons of :mod:`radixsnn.core.neuron` integrate, fire and leak, max-pools act on the trains,
  and the readout accumulates the logits. It counts the spikes of every layer.
* :func:`run_integer` computes each layer in one integer pass: ``clamp((sum w q + b) >> dT, 0, 2^T-1)``.

Both must give the same integer logits as the QANN. The integer engine computes a layer as int8 matrix
products summed in int32 (:mod:`radixsnn.core.int8`) where its inputs, weights and sums fit and this
CPU's int8 kernel is exact; otherwise as float convolutions of integer-valued tensors, exact in float32
while every partial sum stays below 2^24 (checked per layer from the weights; otherwise as float32
products of bit pieces of the inputs summed in float64, and in float64 on CUDA, where TF32 and FFT
algorithms could round).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from radixsnn.core.coding import radix_encode
from radixsnn.core.graph import F32_EXACT, Node, exact_dtype, max_pool_integers, maxpool_pads, peak_input, synapse, term_gain, walk
from radixsnn.core.inputs import pixel_integers
from radixsnn.core.int8 import INT32_EXACT, gains_int32, int8_kernels, synapse_int8, takes_int8, unrows, weight_matrix
from radixsnn.core.neuron import radix_lif, radix_lif_fused, radix_readout
from radixsnn.core.snn import IntegerSNN, kept
from radixsnn.errors import ConfigError

ENGINES = ("spikes", "integer", "onnx")


@dataclass
class EngineResult:
    """What an engine computed for a batch of images.

    ``logits``: int64 ``(N, classes)``, the readout's integer potentials. The spike engine also fills
    ``spikes`` (spiking node -> spikes emitted over all images and steps) and ``spike_maps`` (node ->
    spikes per neuron, summed over images and steps, shape of one image's layer); the integer engine
    leaves both empty.
    """

    logits: torch.Tensor
    spikes: dict[str, int] = field(default_factory=dict)
    spike_maps: dict[str, torch.Tensor] = field(default_factory=dict)


def run(snn: IntegerSNN, images: torch.Tensor, engine: str = "spikes") -> EngineResult:
    """Run ``snn`` on uint8 ``images`` (N, C, H, W) with the ``"spikes"``, the ``"integer"`` or the ``"onnx"``
    engine (the integer network exported to ONNX, run by onnxruntime: :mod:`radixsnn.core.onnx_export`).

    >>> import torch, radixsnn as rs
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 2))
    >>> images = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    >>> snn = rs.convert(model, images, time_steps=3, input_shape=(3, 8, 8), mean=(0.5,) * 3, std=(0.25,) * 3, progress=False)
    >>> result = rs.run(snn, images)
    >>> result.logits.dtype, torch.equal(result.logits, rs.run(snn, images, engine="integer").logits)
    (torch.int64, True)
    >>> sorted(result.spikes)    # spikes of the pixel trains and of the neurons after module "0"
    ['0', 'input']
    """
    if engine == "spikes":
        return run_spikes(snn, images)
    if engine == "integer":
        return run_integer(snn, images)
    if engine == "onnx":
        from radixsnn.core.onnx_export import run_onnx  # onnxruntime is an optional extra

        _check_images(snn, images)
        return EngineResult(run_onnx(snn, images))
    raise ConfigError("engine", f"must be one of {', '.join(ENGINES)}, got {engine!r}")


def _check_images(snn: IntegerSNN, images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise ConfigError("images", f"must be a uint8 tensor of pixels, got {getattr(images, 'dtype', type(images).__name__)}")
    if images.dim() != 4 or list(images.shape[1:]) != list(snn.graph.input.shape):
        raise ConfigError("images", f"must have shape (N, {', '.join(map(str, snn.graph.input.shape))}), got {tuple(images.shape)}")


def _peak_current(snn: IntegerSNN, node: Node, spikes: bool) -> int:
    """Largest ``|synaptic input|`` of any neuron of ``node`` in one step (``spikes``: 0/1 inputs) or in
    one integer pass (inputs up to ``2^T_src - 1``), from the weights."""
    weights = [snn.weights[t.param] for t in node.terms]
    return peak_input(snn.graph, node, weights, lambda src: 1 if spikes else (1 << snn.train_length(src)) - 1)


def _carrier(snn: IntegerSNN, node: Node, device) -> torch.dtype:
    """float32 when every partial sum of the layer, bias included, is provably below 2^24 (on CPU)."""
    return exact_dtype(int(snn.biases[node.name].abs().max()) + _peak_current(snn, node, spikes=False), device)


def _state_dtype(snn: IntegerSNN, node: Node) -> torch.dtype:
    """int32 membranes when ``|b| + 2 max|I| + 2`` provably stays below 2^30 (max|I| from the weights)."""
    bound = int(snn.biases[node.name].abs().max()) + 2 * _peak_current(snn, node, spikes=True) + 2
    return torch.int32 if bound < (1 << 30) else torch.int64


def _bias(snn: IntegerSNN, node: Node, device) -> torch.Tensor:
    b = snn.biases[node.name].to(device)
    return b.view(-1, *([1] * (len(node.shape) - 1))) if b.dim() == 1 else b


def _int8_weights(snn: IntegerSNN, node: Node, device) -> dict[str, torch.Tensor] | None:
    """The int8 weight matrices of a layer that runs exactly in int32 (:mod:`radixsnn.core.int8`): on a
    CPU whose int8 kernel is exact, every term an int8 product or a gain, every sum bounded below 2^31."""
    if torch.device(device).type != "cpu" or not int8_kernels():
        return None
    bound = int(snn.biases[node.name].abs().max()) + _peak_current(snn, node, spikes=False)
    if bound >= INT32_EXACT:
        return None
    matrices = {}
    for t in node.terms:
        if t.op == "select":
            continue
        w = snn.weights[t.param]
        if not takes_int8(t, w, snn.train_length(t.src)):
            return None
        matrices[t.param] = weight_matrix(t, w.to(device))
    return matrices


def _int8_plan(snn: IntegerSNN, device) -> dict[str, dict[str, torch.Tensor] | None]:
    """:func:`_int8_weights` of every layer, :func:`~radixsnn.core.snn.kept` between batches while nothing
    they depend on changes: the device, the kernel check and the SNN's :meth:`~IntegerSNN.state_key`."""
    return kept(snn, "int8-plan", (str(device), int8_kernels(), snn.state_key()),
                lambda: {node.name: _int8_weights(snn, node, device) for node in snn.graph.layers})


def _int8_layer(snn: IntegerSNN, node: Node, values: dict, matrices: dict, device) -> torch.Tensor:
    """A layer in int32, on channels-last :func:`~radixsnn.core.int8.rows` matrices (every elementwise
    step runs along memory): int8 products and integer gains summed, bias added, shifted, saturated."""
    acc = None
    for t in node.terms:
        if t.op == "select":
            y = gains_int32(t, values[t.src], snn.weights[t.param].to(device))
        else:
            y = synapse_int8(t, values[t.src], matrices[t.param], shifted=snn.train_length(t.src) == 8)
        acc = y if acc is None else acc.add_(y)
    bias = snn.biases[node.name].to(device=device, dtype=torch.int32)
    if bias.dim() > 1:  # a per-neuron map (C, H, W)
        acc.view(-1, bias[0].numel(), bias.shape[0]).add_(bias.flatten(1).t())
    else:
        acc.add_(bias)
    if node.kind == "output":
        return acc.to(torch.int64)
    shift = snn.shift(node.name, device)  # per-channel shifts as int32: an int64 operand is ~80x slower
    q = _saturate(snn, node, acc.bitwise_right_shift_(shift if isinstance(shift, int) else shift.reshape(-1).to(torch.int32)),
                  device, channels_last=True)
    return unrows(q.to(torch.uint8 if snn.train_length(node.name) <= 8 else torch.float32), node.shape)


def _saturate(snn: IntegerSNN, node: Node, q: torch.Tensor, device, channels_last: bool = False) -> torch.Tensor:
    """``q`` clamped to ``[0, 2^T - 1]``, and to ``2^T_c - 1`` in channels whose trains are shorter than the
    layer's; ``channels_last``: ``q`` is a :func:`~radixsnn.core.int8.rows` matrix."""
    q = q.clamp_(0, (1 << snn.train_length(node.name)) - 1)
    own = snn.channel_steps(node.name, device)
    if own is not None:
        q = torch.minimum(q, (2 ** (own.reshape(-1) if channels_last else own) - 1).to(q.dtype))
    return q


def _float32_pieces(snn: IntegerSNN, term, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A term whose sums can pass 2^24, exactly, in float64, from float32 products where possible: its
    source values split into pieces of ``b`` bits, ``x = sum_j x_j 2^(j b)``, with ``b`` the most bits for
    which ``sum |w| (2^b - 1)`` stays below 2^24, so that each piece's float32 product is exact (float64
    products, 6-8x slower per convolution on the CPU, only where not even one bit fits)."""
    gain, steps = term_gain(snn.graph, term, w), snn.train_length(term.src)
    bits = min(steps, ((F32_EXACT - 1) // max(gain, 1) + 1).bit_length() - 1)
    if bits < 1:
        return synapse(term, x.to(torch.float64), w.to(torch.float64))
    w32, q, total = w.to(torch.float32), x.to(torch.int32), None
    for j in range(0, steps, bits):
        piece = ((q >> j) & ((1 << bits) - 1)).to(torch.float32)
        y = synapse(term, piece, w32).to(torch.float64)
        total = y if total is None else total.add_(y.mul_(2.0 ** j))
    return total


@torch.no_grad()
def run_integer(snn: IntegerSNN, images: torch.Tensor) -> EngineResult:
    """Each layer in one integer pass: ``clamp((sum w q + b) >> dT, 0, 2^T - 1)``; the readout's sums are
    the logits. Layers run as int8 products summed in int32 where that is exact
    (:mod:`radixsnn.core.int8`), else as float convolutions (see the module's docstring)."""
    _check_images(snn, images)
    device = images.device

    plan = _int8_plan(snn, device)

    def layer(node: Node, values: dict) -> torch.Tensor:
        matrices = plan[node.name]
        if matrices is not None:
            return _int8_layer(snn, node, values, matrices, device)
        dtype = _carrier(snn, node, device)
        bias = _bias(snn, node, device).to(dtype)
        acc = None
        for t in node.terms:
            if dtype == torch.float64 and torch.device(device).type == "cpu" and t.op != "select":
                y = _float32_pieces(snn, t, values[t.src], snn.weights[t.param].to(device))
                acc = y if acc is None else acc.add_(y)
                continue
            w = snn.weights[t.param].to(device=device, dtype=dtype)
            # a per-channel bias rides along in the first convolution / linear map
            fused = acc is None and bias.dim() == len(node.shape) and bias.numel() == node.shape[0] and t.op != "select"
            y = synapse(t, values[t.src].to(dtype), w, bias.reshape(-1) if fused else None)
            acc = y if acc is None else acc.add_(y)
            if fused:
                bias = None
        if bias is not None:
            acc = acc.add_(bias)
        if node.kind == "output":
            return acc.round().to(torch.int64)
        # exact: multiplying by 2^-dT and flooring integer-valued floats loses nothing
        return _saturate(snn, node, acc.mul_(2.0 ** -snn.shift(node.name, device)).floor_(), device).to(torch.float32)

    def maxpool(node: Node, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:  # torch 2.13's uint8 max-pooling fails on large channels-last inputs
            return max_pool_integers(x.float(), node.attrs).to(torch.uint8)  # (float is also faster)
        return max_pool_integers(x, node.attrs)

    return EngineResult(walk(snn.graph, pixel_integers(images, snn.input_bits), layer, maxpool))


def _currents(snn: IntegerSNN, node: Node, trains: dict[str, torch.Tensor], device) -> torch.Tensor:
    """Synaptic input per time step ``(T_in, N, ...)`` (integer-valued float32) of a neuron/readout."""
    parts = []
    for t in node.terms:
        s = trains[t.src]
        w, delay = snn.weights[t.param], None
        if t.op == "select":  # gains m 2^k: weights m on spikes that arrive k steps late
            w, delay = snn.split_gain(t.param)
        flat = s.reshape(s.shape[0] * s.shape[1], *s.shape[2:])
        cur = synapse(t, flat, w.to(device=device, dtype=torch.float32)).view(s.shape[0], s.shape[1], *node.shape)
        if delay is not None and bool(delay.any()):
            late = cur.new_zeros(cur.shape[0] + int(delay.max()), *cur.shape[1:])
            for k in delay.unique().tolist():
                channels = (delay == k).nonzero().flatten().to(device)
                late[k:k + cur.shape[0]].index_copy_(2, channels, cur.index_select(2, channels))
            cur = late
        parts.append(cur)
    steps = max(cur.shape[0] for cur in parts)
    total = None
    for cur in parts:
        if cur.shape[0] < steps:
            cur = torch.cat([cur, cur.new_zeros(steps - cur.shape[0], *cur.shape[1:])])
        total = cur if total is None else total + cur
    return total


def spike_maxpool(trains: torch.Tensor, kernel, stride, padding) -> torch.Tensor:
    """Exact max-pooling of radix trains ``(T, N, C, H, W)``, most significant bit first; ``padding`` is
    ``(left, right, top, bottom)`` (silent steps).

    Every window keeps a set of candidate inputs (initially all). Going from step ``T-1`` down to 0,
    the output bit is 1 if any candidate spikes at that step, and then the candidates that stayed
    silent drop out. The result is the train of the window's largest number.
    """
    trains = F.pad(trains, padding)
    T, N, C, H, W = trains.shape
    k = F.unfold(torch.zeros(1, 1, H, W, device=trains.device), kernel, stride=stride).shape
    cols = F.unfold(trains.reshape(T * N, C, H, W).to(torch.float32), kernel, stride=stride)
    cols = cols.view(T, N, C, -1, k[2]).bool()  # (T, N, C, window, positions)
    candidates = torch.ones_like(cols[0])
    out = [None] * T
    for t in reversed(range(T)):
        bits = cols[t] & candidates
        fired = bits.any(dim=2)
        candidates = torch.where(fired.unsqueeze(2), bits, candidates)
        out[t] = fired
    ho = (H - kernel[0]) // stride[0] + 1
    wo = (W - kernel[1]) // stride[1] + 1
    return torch.stack(out).view(T, N, C, ho, wo).to(torch.float32)


# Pixel-steps (images x train length x input pixels per channel) per spike-engine chunk: 128 image-steps
# at 32x32, where the time-batched convolutions stay cache-friendly; one image at 224x224, so a chunk's
# trains hold a few times one image's float activations, whatever the batch.
_STEP_PIXELS = 128 * 32 * 32


@torch.no_grad()
def run_spikes(snn: IntegerSNN, images: torch.Tensor, chunk: int | None = None) -> EngineResult:
    """Simulate every time step of every neuron, in chunks of ``chunk`` images (default: 128 image-steps
    per convolution at 32x32, fewer at larger inputs); counts the spikes of every spiking node."""
    _check_images(snn, images)
    chunk = chunk or max(1, _STEP_PIXELS // (snn.longest_train * math.prod(snn.graph.input.shape[1:])))
    result = EngineResult(logits=torch.empty(0))
    logits = []
    for part in images.split(chunk):
        res = _run_spikes(snn, part)
        logits.append(res.logits)
        for k, v in res.spikes.items():
            result.spikes[k] = result.spikes.get(k, 0) + v
            result.spike_maps[k] = result.spike_maps[k] + res.spike_maps[k] if k in result.spike_maps else res.spike_maps[k]
    result.logits = torch.cat(logits) if logits else torch.empty(0, snn.graph.output.channels, dtype=torch.int64)
    return result


def _run_spikes(snn: IntegerSNN, images: torch.Tensor) -> EngineResult:
    device = images.device
    result = EngineResult(logits=torch.empty(0))

    def layer(node: Node, trains: dict) -> torch.Tensor:
        currents = _currents(snn, node, trains, device)
        if node.kind == "output":
            return radix_readout(currents.to(torch.int64), _bias(snn, node, device))
        steps = snn.train_length(node.name)
        own = snn.channel_steps(node.name, device)
        fused = radix_lif_fused(currents, _bias(snn, node, device), steps, snn.shift(node.name, device), own)
        if fused is not None:
            out, per_neuron = fused
            result.spike_maps[node.name] = per_neuron.double()
            result.spikes[node.name] = int(per_neuron.sum())
            return out
        out, _ = radix_lif(currents, _bias(snn, node, device), steps, snn.shift(node.name, device),
                           state_dtype=_state_dtype(snn, node), out_dtype=torch.float32, steps=own)
        _count(result, node.name, out)
        return out

    def maxpool(node: Node, trains: torch.Tensor) -> torch.Tensor:
        a = node.attrs
        out = spike_maxpool(trains, a["kernel"], a["stride"], maxpool_pads(a))
        _count(result, node.name, out)
        return out

    inputs = radix_encode(pixel_integers(images, snn.input_bits).to(torch.int64), snn.input_bits, dtype=torch.float32)
    _count(result, "input", inputs)
    result.logits = walk(snn.graph, inputs, layer, maxpool)
    return result


def _count(result: EngineResult, name: str, trains: torch.Tensor) -> None:
    per_neuron = trains.sum(dim=(0, 1), dtype=torch.float64).cpu()
    result.spike_maps[name] = per_neuron
    result.spikes[name] = int(per_neuron.sum())
