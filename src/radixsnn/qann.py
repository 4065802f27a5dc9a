"""The quantized network (QANN) that a radix SNN computes exactly.

Every spiking node carries an activation *scale* ``s`` (per layer or per channel): its T-step trains
hold integers ``q in [0, 2^T - 1]`` that stand for the real values ``s q``. For a neuron layer with
float (BatchNorm-folded) weights ``W``, bias ``B`` and input scales ``s_in``:

* ``dT`` is the largest shift with ``max |W s_in / s_out| 2^dT <= 2^(b-1) - 1`` (and ``>= T_in - T``
  so the input trains fit the window);
* integer weights ``w = round(W s_in / s_out 2^dT)``, clamped to ``b`` bits;
* integer bias ``beta = round(B 2^dT / s_out) + 2^(dT-1)`` (the offset turns the neuron's floor into
  round-to-nearest);
* the neuron's output ``q_out = clamp(floor((sum w q_in + beta) / 2^dT), 0, 2^T - 1)``.

This module computes exactly that in floating point with integer-valued tensors: ``floor`` and
``round`` pass gradients straight through (STE), so the same forward pass fine-tunes the float
parameters and scales (quantization-aware training), and in float64 (``exact=True``) it yields the
same integers as the spiking network, bit for bit. The readout layer has one logit scale
``delta = max |W s_in| / (2^(b-1) - 1)`` and integer logits ``sum w q_in + round(B / delta)``.

Image pixels ``p`` enter as ``input_bits``-step trains of ``q = floor(p / 2^(8 - input_bits))``; the
mean/std normalization is folded into the first layer, with a per-position bias that keeps the float
model's zero padding (a padded pixel means "normalized zero", not "black").
"""
from __future__ import annotations

import copy
from typing import Iterable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from radixsnn.graph import Graph, Node, input_channel_index, output_channel_view, synapse
from radixsnn.quant import ActQuant, WeightQuant, round_ste, rounding_offset

MAX_DELTA_T = 30


def _grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """Forward ``x``, gradient times ``g`` (the LSQ step-size gradient scaling)."""
    y = x * g
    return (x - y).detach() + y


class QANN(nn.Module):
    def __init__(self, graph: Graph, time_steps: int, weight_bits: int = 8, input_bits: int = 8,
                 act_scale: str = "layer"):
        super().__init__()
        if act_scale not in ("layer", "channel"):
            raise ValueError(f"act_scale must be 'layer' or 'channel', got {act_scale!r}")
        if not 1 <= input_bits <= 8:
            raise ValueError(f"input_bits must be in 1..8, got {input_bits}")
        self.graph = graph
        self.act = ActQuant(time_steps)
        self.wq = WeightQuant(weight_bits)
        self.input_bits = int(input_bits)
        self.act_scale = act_scale
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        self.scales = nn.ParameterDict()
        for node in graph.nodes:
            for t in node.terms:
                self.weights[_key(t.param)] = nn.Parameter(torch.zeros(t.weight_shape))
            if node.kind in ("neuron", "output"):
                self.biases[node.name] = nn.Parameter(torch.zeros(node.channels))
            if node.kind == "neuron":
                n = node.channels if act_scale == "channel" else 1
                self.scales[node.name] = nn.Parameter(torch.ones(n))
        inp = graph.input.attrs
        self.register_buffer("mean", torch.tensor(inp["mean"]), persistent=False)
        self.register_buffer("std", torch.tensor(inp["std"]), persistent=False)
        self._index_cache: dict[str, torch.Tensor] = {}

    # ---- construction / serialization ----------------------------------------------------------------
    @property
    def time_steps(self) -> int:
        return self.act.time_steps

    @property
    def weight_bits(self) -> int:
        return self.wq.bits

    @property
    def spec(self) -> dict:
        """JSON-serializable description from which :meth:`from_spec` rebuilds this QANN (without values)."""
        return {
            "graph": self.graph.to_dict(),
            "time_steps": self.time_steps,
            "weight_bits": self.weight_bits,
            "input_bits": self.input_bits,
            "act_scale": self.act_scale,
        }

    @classmethod
    def from_spec(cls, spec: dict) -> "QANN":
        return cls(Graph.from_dict(spec["graph"]), spec["time_steps"], spec["weight_bits"], spec["input_bits"],
                   spec.get("act_scale", "layer"))

    def load_float_params(self, params: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for node in self.graph.nodes:
                for t in node.terms:
                    self.weights[_key(t.param)].copy_(params[t.param])
                if node.kind in ("neuron", "output"):
                    self.biases[node.name].copy_(params[f"{node.name}.bias"])

    def with_time_steps(self, time_steps: int) -> "QANN":
        """A copy with another T (scales kept as real clip values: ``s (2^T - 1)`` is preserved)."""
        other = copy.deepcopy(self)
        other.act = ActQuant(time_steps)
        with torch.no_grad():
            for p in other.scales.values():
                p.mul_(self.act.qmax / other.act.qmax)
        return other

    # ---- scales ---------------------------------------------------------------------------------------
    def input_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s, m)`` per input channel: integer input ``q`` stands for the normalized value ``q s - m``."""
        step = 2.0 ** (8 - self.input_bits)
        s = step / (255.0 * self.std)
        m = self.mean / self.std - (step - 1) / (510.0 * self.std)
        return s, m

    def scale_of(self, name: str) -> torch.Tensor:
        """Per-channel activation scale of a spiking node (shape ``(C,)``)."""
        node = self.graph[name]
        if node.kind == "input":
            return self.input_scale()[0]
        if node.kind == "maxpool":
            return self.scale_of(node.src)
        s = self.scales[name]
        if self.training:
            numel = 1
            for d in node.shape:
                numel *= d
            s = _grad_scale(s, (numel / s.numel() * self.act.qmax) ** -0.5)
        return s.abs().clamp_min(1e-8).expand(node.channels)

    def _train_length(self, name: str) -> int:
        return self.input_bits if self.graph[name].kind == "input" else self.time_steps

    def _channel_index(self, node: Node, i: int) -> torch.Tensor:
        key = f"{node.name}/{i}"
        if key not in self._index_cache:
            t = node.terms[i]
            self._index_cache[key] = input_channel_index(t, self.graph[t.src].shape)
        return self._index_cache[key]

    # ---- the integer parameters ------------------------------------------------------------------------
    def layer_integers(self, node: Node) -> tuple[list[torch.Tensor], torch.Tensor, int, torch.Tensor]:
        """``(weights, bias, dT, scale)`` of a neuron or output node, integer-valued float64 tensors with
        straight-through gradients. ``scale`` is the output scale (neurons) or the logit scale (output).
        """
        ratios = []
        for i, t in enumerate(node.terms):
            w = self.weights[_key(t.param)].double()
            idx = self._channel_index(node, i).to(w.device)
            s_src = self.scale_of(t.src).double()
            s_in = torch.where(idx >= 0, s_src[idx.clamp_min(0)], torch.zeros((), dtype=w.dtype, device=w.device))
            ratios.append((w * s_in, t))
        bias = self.biases[node.name].double()
        correction = self._input_correction(node)
        if node.kind == "output":
            peak = max(float(r.detach().abs().max()) for r, _ in ratios)
            delta = torch.tensor(peak / self.wq.qmax if peak > 0 else 1.0, dtype=torch.float64, device=bias.device)
            weights = [self.wq.quantize(r / delta, 0) for r, _ in ratios]
            b = bias.view(-1, *([1] * (len(node.shape) - 1)))
            if correction is not None:
                b = b + correction
            return weights, round_ste(b / delta), 0, delta
        s_out = self.scale_of(node.name).double()
        scaled = [r / s_out.view(output_channel_view(t)) for r, t in ratios]
        peak = max(float(r.detach().abs().max()) for r in scaled)
        longest = max(self._train_length(t.src) for t in node.terms)
        dt = self.wq.delta_t(peak, minimum=max(0, longest - self.time_steps), maximum=MAX_DELTA_T)
        weights = [self.wq.quantize(r, dt) for r in scaled]
        view = (-1,) + (1,) * (len(node.shape) - 1)
        b = bias.view(view)
        if correction is not None:
            b = b + correction
        beta = round_ste(b * 2.0**dt / s_out.view(view)) + rounding_offset(dt)
        return weights, beta, dt, s_out

    def _input_correction(self, node: Node) -> torch.Tensor | None:
        """Per-position bias ``-sum W m`` over in-image taps for terms reading the input (mean folding)."""
        terms = [(i, t) for i, t in enumerate(node.terms) if t.src == "input"]
        if not terms:
            return None
        _, m = self.input_scale()
        shape = self.graph.input.shape
        m_map = m.double().view(1, -1, 1, 1).expand(1, *shape)
        total = 0
        for _, t in terms:
            total = total - synapse(t, m_map, self.weights[_key(t.param)].double())[0]
        return total

    # ---- forward passes --------------------------------------------------------------------------------
    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels (uint8 or float 0..255) -> the input integers ``floor(p / 2^(8 - input_bits))``."""
        x = x.to(torch.float32) if x.dtype == torch.uint8 else x
        return torch.floor(x / 2.0 ** (8 - self.input_bits))

    def forward(self, x: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """Float logits ``delta * integer logits`` (``exact=True``: float64 integer logits, no scale)."""
        dtype = torch.float64 if exact else torch.float32
        values = {"input": self.quantize_input(x).to(dtype)}
        for node in self.graph.nodes[1:]:
            if node.kind == "maxpool":
                a = node.attrs
                values[node.name] = torch.nn.functional.max_pool2d(values[node.src], a["kernel"], a["stride"], a["padding"])
                continue
            weights, beta, dt, scale = self.layer_integers(node)
            acc = beta.to(dtype)
            for t, w in zip(node.terms, weights):
                acc = acc + synapse(t, values[t.src], w.to(dtype))
            if node.kind == "output":
                return acc if exact else acc * scale.to(dtype)
            values[node.name] = self.act.from_sum(acc, dt)
        raise AssertionError("graph without output node")

    @torch.no_grad()
    def integer_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The exact integer logits (int64), as the spiking network computes them."""
        return self.forward(x, exact=True).round().to(torch.int64)

    def float_forward(self, x: torch.Tensor, capture: dict | None = None) -> torch.Tensor:
        """The unquantized network (BatchNorm folded): equals the original float model's logits.

        With ``capture``, stores each neuron layer's pre-activation (real units) under its name.
        """
        x = x.to(torch.float32) if x.dtype == torch.uint8 else x
        values = {"input": (x / 255.0 - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)}
        for node in self.graph.nodes[1:]:
            if node.kind == "maxpool":
                a = node.attrs
                values[node.name] = torch.nn.functional.max_pool2d(values[node.src], a["kernel"], a["stride"], a["padding"])
                continue
            acc = self.biases[node.name].view(-1, *([1] * (len(node.shape) - 1)))
            for t in node.terms:
                acc = acc + synapse(t, values[t.src], self.weights[_key(t.param)])
            if node.kind == "output":
                return acc
            if capture is not None:
                capture[node.name] = acc.detach()
            values[node.name] = torch.relu(acc)
        raise AssertionError("graph without output node")

    # ---- calibration -----------------------------------------------------------------------------------
    @torch.no_grad()
    def calibrate(self, images: torch.Tensor | Iterable[torch.Tensor], batch_size: int = 256,
                  method: str = "mse", samples_per_layer: int = 1 << 18, progress: bool = True) -> None:
        """Set every activation scale from the float network's activations on ``images``.

        ``method``: ``"mse"`` (clip minimizing the T-bit quantization error, the default) or
        ``"percentile:P"`` (clip at the P-th percentile of the positive activations, e.g. 99.99).
        """
        if isinstance(images, torch.Tensor):
            batches = list(images.split(batch_size))
        else:
            batches = list(images)
        device = next(self.parameters()).device
        gen = torch.Generator().manual_seed(0)
        pools: dict[str, list[torch.Tensor]] = {}
        per_channel = self.act_scale == "channel"
        for xb in tqdm(batches, desc="calibrate", disable=not progress, leave=False):
            capture: dict[str, torch.Tensor] = {}
            self.float_forward(xb.to(device), capture)
            for name, pre in capture.items():
                a = torch.relu(pre).transpose(0, 1).reshape(pre.shape[1], -1).float().cpu()  # (C, N*H*W)
                keep = max(1, samples_per_layer // len(batches) // (a.shape[0] if per_channel else 1))
                if per_channel:
                    if a.shape[1] > keep:
                        a = a[:, torch.randperm(a.shape[1], generator=gen)[:keep]]
                    pools.setdefault(name, []).append(a)
                else:
                    flat = a.flatten()
                    if flat.numel() > keep:
                        flat = flat[torch.randperm(flat.numel(), generator=gen)[:keep]]
                    pools.setdefault(name, []).append(flat.view(1, -1))
        for name, chunks in pools.items():
            a = torch.cat(chunks, dim=1)
            clip = torch.stack([_choose_clip(row, self.act.qmax, method) for row in a])
            self.scales[name].copy_((clip / self.act.qmax).to(self.scales[name]))

    # ---- conversion -----------------------------------------------------------------------------------
    @torch.no_grad()
    def to_snn(self, metadata: dict | None = None):
        """The integer SNN (weights, biases, shifts) that this QANN computes."""
        from radixsnn.snn import IntegerSNN

        was_training = self.training
        self.eval()
        try:
            weights, biases, delta_t, scales = {}, {}, {}, {}
            for node in self.graph.nodes:
                if node.kind not in ("neuron", "output"):
                    continue
                ws, beta, dt, scale = self.layer_integers(node)
                for t, w in zip(node.terms, ws):
                    weights[t.param] = w.round().to(torch.int64).cpu()
                biases[node.name] = beta.round().to(torch.int64).cpu()
                delta_t[node.name] = dt
                scales[node.name] = scale.detach().float().cpu().reshape(-1)
        finally:
            self.train(was_training)
        return IntegerSNN(
            graph=self.graph,
            time_steps=self.time_steps,
            weight_bits=self.weight_bits,
            input_bits=self.input_bits,
            weights=weights,
            biases=biases,
            delta_t=delta_t,
            scales=scales,
            qann_spec=self.spec,
            qann_state={k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()},
            metadata=dict(metadata or {}),
        )


def _key(param: str) -> str:
    """ParameterDict keys cannot contain dots."""
    return param.replace(".", "/")


def _choose_clip(values: torch.Tensor, qmax: int, method: str) -> torch.Tensor:
    """Clip value for non-negative activations ``values`` quantized to ``qmax + 1`` levels."""
    top = values.max()
    if top <= 0:
        return torch.tensor(1.0)
    if method.startswith("percentile"):
        _, _, p = method.partition(":")
        q = float(p or 99.99) / 100
        v = values[values > 0]
        k = max(1, min(v.numel(), int(round(q * v.numel()))))
        return v.kthvalue(k).values.clamp_min(1e-8)
    if method != "mse":
        raise ValueError(f"unknown calibration method {method!r}; use 'mse' or 'percentile:P'")
    clips = top * torch.linspace(0.02, 1.0, 50, dtype=values.dtype)
    errors = torch.cat([_quant_mse(values, chunk, qmax) for chunk in clips.split(10)])
    return clips[int(errors.argmin())]


def _quant_mse(values: torch.Tensor, clips: torch.Tensor, qmax: int) -> torch.Tensor:
    """Mean squared T-bit quantization error of ``values`` for each candidate clip (vectorized)."""
    s = (clips / qmax).view(-1, 1)
    q = torch.clamp(torch.floor(values.view(1, -1) / s + 0.5), 0, qmax) * s
    return ((q - values.view(1, -1)) ** 2).mean(dim=1)
