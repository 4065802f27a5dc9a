"""Two engines that run an :class:`~radixsnn.snn.IntegerSNN` on images, with one answer.

* :func:`run_spikes` simulates every time step of every neuron: input pixels become radix trains,
  each layer's synaptic currents are computed per step (batched over images and time), the
  Algorithm-1 neurons of :mod:`radixsnn.neuron` integrate, fire and leak, max-pools act on the trains,
  and the readout accumulates the logits. It counts the spikes of every layer.
* :func:`run_integer` computes each layer in one integer pass: ``clamp((sum w q + b) >> dT, 0, 2^T-1)``.

Both must give the same integer logits as the QANN. Convolutions of integer-valued tensors are exact
in float32 while every partial sum stays below 2^24 (checked per layer from the weights; otherwise
float64 is used, and always on CUDA, where TF32 and FFT algorithms could round).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from radixsnn.coding import radix_encode
from radixsnn.graph import synapse
from radixsnn.neuron import radix_lif, radix_lif_fused, radix_readout
from radixsnn.snn import IntegerSNN

ENGINES = ("spikes", "integer")
_F32_EXACT = 1 << 24


@dataclass
class EngineResult:
    logits: torch.Tensor  # int64 (N, classes)
    spikes: dict[str, int] = field(default_factory=dict)  # spiking node -> total spikes emitted
    spike_maps: dict[str, torch.Tensor] = field(default_factory=dict)  # node -> spikes per neuron (C, H, W)


def run(snn: IntegerSNN, images: torch.Tensor, engine: str = "spikes") -> EngineResult:
    if engine == "spikes":
        return run_spikes(snn, images)
    if engine == "integer":
        return run_integer(snn, images)
    raise ValueError(f"unknown engine {engine!r}; choose one of {ENGINES}")


def input_integers(snn: IntegerSNN, images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> the input layer's integers ``p >> (8 - input_bits)`` (int64)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"engines take uint8 pixel images, got {images.dtype}")
    return images.to(torch.int64) >> (8 - snn.input_bits)


def _carrier(snn: IntegerSNN, node, device) -> torch.dtype:
    """float32 when every partial sum of the layer, bias included, is provably below 2^24 (on CPU)."""
    if device.type != "cpu":
        return torch.float64
    bound = int(snn.biases[node.name].abs().max())
    for t in node.terms:
        w = snn.weights[t.param]
        peak_in = (1 << snn.train_length(t.src)) - 1
        per_out = w.abs().reshape(w.shape[0], -1).sum(1).max() if w.dim() > 1 else w.abs().max()
        if t.op == "linear" and t.attrs["mode"] == "sumpool":
            src = snn.graph[t.src].shape
            peak_in *= src[1] * src[2]
        bound += int(per_out) * peak_in
    return torch.float32 if bound < _F32_EXACT else torch.float64


def _state_dtype(snn: IntegerSNN, node) -> torch.dtype:
    """int32 membranes when ``|b| + 2 max|I| + 2`` provably stays below 2^30 (max|I| from the weights)."""
    peak = 0
    for t in node.terms:
        w = snn.weights[t.param]
        per_out = w.abs().reshape(w.shape[0], -1).sum(1).max() if w.dim() > 1 else w.abs().max()
        if t.op == "linear" and t.attrs["mode"] == "sumpool":
            src = snn.graph[t.src].shape
            per_out = per_out * src[1] * src[2]
        peak += int(per_out)
    bound = int(snn.biases[node.name].abs().max()) + 2 * peak + 2
    return torch.int32 if bound < (1 << 30) else torch.int64


def _bias(snn: IntegerSNN, node, device) -> torch.Tensor:
    b = snn.biases[node.name].to(device)
    return b.view(-1, *([1] * (len(node.shape) - 1))) if b.dim() == 1 else b


@torch.no_grad()
def run_integer(snn: IntegerSNN, images: torch.Tensor) -> EngineResult:
    device = images.device
    values = {"input": input_integers(snn, images).to(torch.float32)}
    for node in snn.graph.nodes[1:]:
        if node.kind == "maxpool":
            a = node.attrs
            values[node.name] = F.max_pool2d(values[node.src], a["kernel"], a["stride"], a["padding"])
            continue
        dtype = _carrier(snn, node, device)
        bias = _bias(snn, node, device).to(dtype)
        acc = None
        for t in node.terms:
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
            return EngineResult(acc.round().to(torch.int64))
        # exact: multiplying by 2^-dT and flooring integer-valued floats loses nothing
        q = acc.mul_(2.0 ** -snn.delta_t[node.name]).floor_().clamp_(0, (1 << snn.time_steps) - 1)
        values[node.name] = q.to(torch.float32)
    raise AssertionError("graph without output node")


def _currents(snn: IntegerSNN, node, trains: dict[str, torch.Tensor], device) -> torch.Tensor:
    """Synaptic input per time step ``(T_in, N, ...)`` (integer-valued float32) of a neuron/readout."""
    steps = max(trains[t.src].shape[0] for t in node.terms)
    total = None
    for t in node.terms:
        s = trains[t.src]
        w = snn.weights[t.param].to(device=device, dtype=torch.float32)
        flat = s.reshape(s.shape[0] * s.shape[1], *s.shape[2:])
        cur = synapse(t, flat, w).view(s.shape[0], s.shape[1], *node.shape)
        if cur.shape[0] < steps:
            cur = torch.cat([cur, cur.new_zeros(steps - cur.shape[0], *cur.shape[1:])])
        total = cur if total is None else total + cur
    return total


def spike_maxpool(trains: torch.Tensor, kernel, stride, padding) -> torch.Tensor:
    """Exact max-pooling of radix trains ``(T, N, C, H, W)``, most significant bit first.

    Every window keeps a set of candidate inputs (initially all). Going from step ``T-1`` down to 0,
    the output bit is 1 if any candidate spikes at that step, and then the candidates that stayed
    silent drop out. The result is the train of the window's largest number.
    """
    T, N, C, H, W = trains.shape
    k = F.unfold(torch.zeros(1, 1, H, W, device=trains.device), kernel, padding=padding, stride=stride).shape
    cols = F.unfold(trains.reshape(T * N, C, H, W).to(torch.float32), kernel, padding=padding, stride=stride)
    cols = cols.view(T, N, C, -1, k[2]).bool()  # (T, N, C, window, positions)
    candidates = torch.ones_like(cols[0])
    out = [None] * T
    for t in reversed(range(T)):
        bits = cols[t] & candidates
        fired = bits.any(dim=2)
        candidates = torch.where(fired.unsqueeze(2), bits, candidates)
        out[t] = fired
    ho = (H + 2 * padding[0] - kernel[0]) // stride[0] + 1
    wo = (W + 2 * padding[1] - kernel[1]) // stride[1] + 1
    return torch.stack(out).view(T, N, C, ho, wo).to(torch.float32)


# Images per spike-engine chunk x train length: the time-batched convolutions stay cache-friendly.
_STEP_BATCH = 128


@torch.no_grad()
def run_spikes(snn: IntegerSNN, images: torch.Tensor, chunk: int | None = None) -> EngineResult:
    """Simulate ``images`` in chunks of ``chunk`` images (default: 128 image-steps per convolution)."""
    chunk = chunk or max(1, _STEP_BATCH // max(snn.time_steps, snn.input_bits))
    result = EngineResult(logits=torch.empty(0))
    logits = []
    for part in images.split(chunk):
        res = _run_spikes(snn, part)
        logits.append(res.logits)
        for k, v in res.spikes.items():
            result.spikes[k] = result.spikes.get(k, 0) + v
            result.spike_maps[k] = result.spike_maps[k] + res.spike_maps[k] if k in result.spike_maps else res.spike_maps[k]
    result.logits = torch.cat(logits)
    return result


def _run_spikes(snn: IntegerSNN, images: torch.Tensor) -> EngineResult:
    device = images.device
    trains = {"input": radix_encode(input_integers(snn, images), snn.input_bits, dtype=torch.float32)}
    result = EngineResult(logits=torch.empty(0))
    _count(result, "input", trains["input"])
    for node in snn.graph.nodes[1:]:
        if node.kind == "maxpool":
            a = node.attrs
            out = spike_maxpool(trains[node.src], a["kernel"], a["stride"], a["padding"])
        else:
            currents = _currents(snn, node, trains, device)
            if node.kind == "output":
                result.logits = radix_readout(currents.to(torch.int64), _bias(snn, node, device))
                return result
            fused = radix_lif_fused(currents, _bias(snn, node, device), snn.time_steps, snn.delta_t[node.name])
            if fused is not None:
                out, per_neuron = fused
                trains[node.name] = out
                result.spike_maps[node.name] = per_neuron.double()
                result.spikes[node.name] = int(per_neuron.sum())
                continue
            out, _ = radix_lif(currents, _bias(snn, node, device), snn.time_steps, snn.delta_t[node.name],
                               state_dtype=_state_dtype(snn, node), out_dtype=torch.float32)
        trains[node.name] = out.to(torch.float32)
        _count(result, node.name, out)
    raise AssertionError("graph without output node")


def _count(result: EngineResult, name: str, trains: torch.Tensor) -> None:
    per_neuron = trains.sum(dim=(0, 1), dtype=torch.float64).cpu()
    result.spike_maps[name] = per_neuron
    result.spikes[name] = int(per_neuron.sum())
