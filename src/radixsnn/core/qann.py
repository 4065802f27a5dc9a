"""The quantized network (QANN) that a radix SNN computes exactly.

Every spiking node carries an activation *scale* ``s`` (per layer or per channel): its T-step trains
hold integers ``q in [0, 2^T - 1]`` that stand for the real values ``s q``. For a neuron layer with
float (BatchNorm-folded) weights ``W``, bias ``B`` and input scales ``s_in``:

* ``dT`` is the largest shift with ``max |W s_in / s_out| 2^dT <= 2^(b-1) - 1`` (and ``>= T_in - T``
  so the input trains fit the window), the maximum taken over each output channel's weights
  (``shift="channel"``, the default: each neuron drains its own number of steps, its train delayed to
  stay aligned with the layer's) or over the whole layer (``shift="layer"``); with
  ``weight_grid="mse"`` (the default) it is then the one of least squared weight error among that
  shift and the next three finer ones, which clip the largest weights;
* integer weights ``w = round(W s_in / s_out 2^dT)``, clamped to ``b`` bits; a shortcut's gains
  (select terms) are, with ``gains="delayed"`` (the default), the nearest ``m 2^k`` with ``|m|`` within
  ``b`` bits: weights ``m`` on spikes delayed ``k`` steps, so the shortcut does not limit ``dT``;
* integer bias ``beta = round(B 2^dT / s_out) + 2^(dT-1)`` (the offset turns the neuron's floor into
  round-to-nearest);
* the neuron's output ``q_out = clamp(floor((sum w q_in + beta) / 2^dT), 0, 2^T - 1)``; where a layer's
  channels have their own ``T_c`` (``channel_time_steps``), channel c saturates at ``2^T_c - 1`` and its
  ``dT_c >= T_in - T_c``.

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

import math
from typing import Callable, Iterable, Protocol

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from radixsnn.core.graph import (Graph, Node, exact_dtype, input_channel_index, max_pool_integers, output_channel_view, peak_input, synapse,
                                  walk)
from radixsnn.core.inputs import input_affine, normalize, pixel_integers
from radixsnn.core.quant import MAX_DELTA_T, ActQuant, Calibration, WeightQuant, round_ste, rounding_offset
from radixsnn.core.snn import IntegerSNN
from radixsnn.core.steps import per_channel, per_layer, train_lengths
from radixsnn.errors import ConfigError, RadixSNNError, SNNFileError

#: Pixels per image channel in one calibration pass by default: 256 images at 32x32 (5 at 224x224).
CALIB_PIXELS = 256 * 32 * 32

#: One activation scale per output channel, one per layer, or ``"auto"`` (:func:`resolve_act_scale`).
ACT_SCALES = ("auto", "channel", "layer")
#: One shift ``dT`` per output channel (each neuron drains its own number of steps), or one per layer.
SHIFTS = ("channel", "layer")
#: How a layer's shift, hence its weight grid, is chosen: the largest that fits every weight in b bits
#: (``"max"``), or among it and the next three finer ones, the one of least squared weight error, the
#: largest weights clipped (``"mse"``).
WEIGHT_GRIDS = ("max", "mse")
#: Shortcut (select) gains as plain b-bit weights, or as b-bit weights on delayed spikes, ``m 2^k``.
GAINS = ("delayed", "plain")
#: The defaults (measured against the other choices in docs/notebook.md).
DEFAULT_ACT_SCALE = "auto"
DEFAULT_SHIFT = "channel"
DEFAULT_WEIGHT_GRID = "mse"
DEFAULT_GAINS = "delayed"
#: Shifts ``dT .. dT + SHIFT_SEARCH - 1`` are tried by ``weight_grid="mse"``.
SHIFT_SEARCH = 4


def resolve_act_scale(act_scale: str, time_steps: int, weight_bits: int) -> str:
    """``"channel"`` or ``"layer"``: ``"auto"`` means per channel while the activations are narrower than
    the weights (``time_steps < weight_bits``), per layer otherwise.

    A per-channel scale stretches a channel of small activations over all ``2^T`` levels and shrinks the
    integer weights that read it by the same factor: it moves precision from the weights to the
    activations, which pays while the activations are the narrower side.

    >>> resolve_act_scale("auto", 4, 8), resolve_act_scale("auto", 8, 8), resolve_act_scale("layer", 2, 8)
    ('channel', 'layer', 'layer')
    """
    if act_scale not in ACT_SCALES:
        raise ConfigError("act_scale", f"must be one of {', '.join(ACT_SCALES)}, got {act_scale!r}")
    if act_scale != "auto":
        return act_scale
    return "channel" if time_steps < weight_bits else "layer"


def _grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """Forward ``x``, gradient times ``g`` (the LSQ step-size gradient scaling)."""
    y = x * g
    return (x - y).detach() + y


#: Below this ``n`` (a margin under the size where torch's CPU ``randperm`` would take 64-bit numbers;
#: tested up to 3 million), ``torch.randperm(n)`` takes ``n - 1`` 32-bit numbers from its generator, one
#: per Fisher-Yates swap; :func:`skip_randperm` draws them without the swaps (above it: randperm itself).
SKIP_RANDPERM_LIMIT = 1 << 26


def skip_randperm(n: int, gen: torch.Generator) -> None:
    """Advance ``gen`` exactly as ``torch.randperm(n, generator=gen)`` does, without the permutation (about
    5x cheaper at millions of elements; tests/test_convert.py checks the generator states agree)."""
    if n < SKIP_RANDPERM_LIMIT:
        torch.empty(max(n - 1, 0), dtype=torch.int32).random_(0, 2, generator=gen)
    else:
        torch.randperm(n, generator=gen)


class Share(Protocol):
    """A process's place among ``world_size`` processes that calibrate together
    (:class:`radixsnn.training.runtime.Runtime` is one): ``all_reduce_sum_`` sums a tensor over them in place."""

    rank: int
    world_size: int

    def all_reduce_sum_(self, t: torch.Tensor) -> torch.Tensor: ...


class QANN(nn.Module):
    """The quantized network of a :class:`~radixsnn.core.graph.Graph` at ``time_steps``-bit activations.

    Parameters: the float (BatchNorm-folded) weight of every synapse term (``weights``), the float bias of
    every layer (``biases``) and the activation scale of every neuron layer (``scales``, one per layer or,
    with ``act_scale="channel"``, per output channel; ``"auto"`` picks one of the two, :func:`resolve_act_scale`). Its forward pass takes pixels (uint8, or float
    0..255 during training) and returns float logits; :meth:`integer_logits` gives the exact integers the
    SNN computes; :meth:`to_snn` converts it. Build one with :func:`radixsnn.quantize`.
    """

    def __init__(self, graph: Graph, time_steps: int | dict, weight_bits: int | dict = 8, input_bits: int = 8,
                 act_scale: str = DEFAULT_ACT_SCALE, shift: str = DEFAULT_SHIFT, weight_grid: str = DEFAULT_WEIGHT_GRID,
                 gains: str = DEFAULT_GAINS):
        super().__init__()
        for name, value, allowed in (("shift", shift, SHIFTS), ("weight_grid", weight_grid, WEIGHT_GRIDS), ("gains", gains, GAINS)):
            if value not in allowed:
                raise ConfigError(name, f"must be one of {', '.join(allowed)}, got {value!r}")
        self.shift = shift
        self.weight_grid = weight_grid
        self.gains = gains
        if not isinstance(input_bits, int) or not 1 <= input_bits <= 8:
            raise ConfigError("input_bits", f"must be an integer in 1..8, got {input_bits!r}")
        self.graph = graph
        time_steps, self.channel_time_steps = per_channel(graph, time_steps, "time_steps")
        time_steps, self.layer_time_steps = per_layer(graph, time_steps, "time_steps")
        weight_bits, self.layer_weight_bits = per_layer(graph, weight_bits, "weight_bits", ("neuron", "output"))
        self.act = ActQuant(time_steps)
        self.wq = WeightQuant(weight_bits)
        self._acts = {name: ActQuant(t) for name, t in self.layer_time_steps.items()}
        # channels with shorter trains than their layer's: their own saturation levels 2^T_c - 1
        self._channel_qmax = {name: torch.tensor([ActQuant(t).qmax for t in steps], dtype=torch.float64)
                              for name, steps in self.channel_time_steps.items()}
        self._wqs = {name: WeightQuant(b) for name, b in self.layer_weight_bits.items()}
        self.input_bits = int(input_bits)
        self._lengths = train_lengths(graph, time_steps, self.layer_time_steps, self.input_bits)
        if self.channel_time_steps and act_scale == "auto":
            act_scale = "channel"  # a channel's levels 0 .. 2^T_c - 1 span its own range
        self.act_scale = act_scale = resolve_act_scale(act_scale, time_steps, weight_bits)
        if self.channel_time_steps and act_scale == "layer":
            raise ConfigError("act_scale", "must be 'channel' (or 'auto') when channels have their own time steps")
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        self.scales = nn.ParameterDict()
        for node in graph.layers:
            for t in node.terms:
                self.weights[_key(t.param)] = nn.Parameter(torch.zeros(t.weight_shape))
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

    def act_of(self, name: str) -> ActQuant:
        """The activation quantizer of neuron layer ``name`` (its own ``T``)."""
        return self._acts.get(name, self.act)

    def qmax_of(self, name: str) -> int | torch.Tensor:
        """The largest activation of neuron layer ``name``: ``2^T - 1``, or a float64 tensor of one per output
        channel where its channels have their own ``T``."""
        top = self._channel_qmax.get(name)
        return self.act_of(name).qmax if top is None else top

    def wq_of(self, name: str) -> WeightQuant:
        """The weight quantizer of layer ``name`` (its own bit width)."""
        return self._wqs.get(name, self.wq)

    @property
    def weight_bits(self) -> int:
        return self.wq.bits

    @property
    def spec(self) -> dict:
        """JSON-serializable description from which :meth:`from_spec` rebuilds this QANN (without values)."""
        return {
            "graph": self.graph.to_dict(),
            "time_steps": self.time_steps,
            "layer_time_steps": dict(self.layer_time_steps),
            **({"channel_time_steps": dict(self.channel_time_steps)} if self.channel_time_steps else {}),
            "weight_bits": self.weight_bits,
            "layer_weight_bits": dict(self.layer_weight_bits),
            "input_bits": self.input_bits,
            "act_scale": self.act_scale,
            "shift": self.shift,
            "weight_grid": self.weight_grid,
            "gains": self.gains,
        }

    @classmethod
    def from_spec(cls, spec: dict) -> "QANN":
        # files made before the per-channel shift have one shift per layer; before the weight grids and
        # delayed gains, the largest weight set dT and gains were plain b-bit weights
        graph = Graph.from_dict(spec["graph"])
        steps = {"default": spec["time_steps"], **spec.get("layer_time_steps", {}), **spec.get("channel_time_steps", {})}
        bits = {"default": spec["weight_bits"], **spec.get("layer_weight_bits", {})}
        return cls(graph, steps, bits, spec["input_bits"],
                   spec.get("act_scale", "layer"), spec.get("shift", "layer"), spec.get("weight_grid", "max"),
                   spec.get("gains", "plain"))

    @classmethod
    def from_snn(cls, snn: IntegerSNN) -> "QANN | None":
        """The QANN stored in an SNN file beside its integers (to check the SNN against), or ``None``."""
        if snn.qann_spec is None or snn.qann_state is None:
            return None
        try:
            qann = cls.from_spec(snn.qann_spec)
            qann.load_state_dict(snn.qann_state)
        except (RadixSNNError, RuntimeError, KeyError, TypeError) as exc:
            raise SNNFileError(f"the stored QANN cannot be rebuilt ({' '.join(str(exc).split())[:300]})") from None
        return qann.eval()

    def load_float_params(self, params: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for node in self.graph.layers:
                for t in node.terms:
                    self.weights[_key(t.param)].copy_(params[t.param])
                self.biases[node.name].copy_(params[f"{node.name}.bias"])

    # ---- scales ---------------------------------------------------------------------------------------
    def input_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s, m)`` per input channel: integer input ``q`` stands for the normalized value ``q s - m``."""
        return input_affine(self.mean, self.std, self.input_bits)

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
            s = _grad_scale(s, (numel / s.numel() * self.act_of(name).qmax) ** -0.5)
        s = s.abs().clamp_min(1e-8)
        clip = node.attrs.get("clip")
        if clip is not None:  # ReLU6 and the like: the neuron saturates at or below the clip
            top = self.qmax_of(name)
            s = s.clamp_max(clip / (top.to(s) if isinstance(top, torch.Tensor) else top))
        return s.expand(node.channels)

    def _train_length(self, name: str) -> int:
        return self._lengths[name]

    def _channel_index(self, node: Node, i: int) -> torch.Tensor:
        key = f"{node.name}/{i}"
        if key not in self._index_cache:
            t = node.terms[i]
            self._index_cache[key] = input_channel_index(t, self.graph[t.src].shape)
        return self._index_cache[key]

    # ---- the integer parameters ------------------------------------------------------------------------
    def layer_integers(self, node: Node) -> tuple[list[torch.Tensor], torch.Tensor, int | torch.Tensor, torch.Tensor]:
        """``(weights, bias, dT, scale)`` of a neuron or output node, integer-valued float64 tensors with
        straight-through gradients. ``scale`` is the output scale (neurons) or the logit scale (output);
        ``dT`` is an int, or with ``shift="channel"`` an int64 tensor of one shift per output channel
        (shaped to broadcast against the layer's sums).
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
        wq = self.wq_of(node.name)
        if node.kind == "output":
            peak = max(float(r.detach().abs().max()) for r, _ in ratios)
            delta = torch.tensor(peak / wq.qmax if peak > 0 else 1.0, dtype=torch.float64, device=bias.device)
            weights = [wq.quantize(r / delta, 0) for r, _ in ratios]
            b = bias.view(-1, *([1] * (len(node.shape) - 1)))
            if correction is not None:
                b = b + correction
            return weights, round_ste(b / delta), 0, delta
        s_out = self.scale_of(node.name).double()
        scaled = [r / s_out.view(output_channel_view(t)) for r, t in ratios]
        longest = max(self._train_length(t.src) for t in node.terms)
        # each channel's own T: its window T_c + dT_c must hold the input trains
        own = torch.tensor(self.channel_time_steps.get(node.name, [self._train_length(node.name)] * node.channels))
        lowest = (longest - own).clamp_min(0)
        view = (-1,) + (1,) * (len(node.shape) - 1)
        # delayed gains: the shortcut's gains leave dT to the other terms' weights
        delayed = [self.gains == "delayed" and t.op == "select" for t in node.terms]
        if all(delayed):
            delayed = [False] * len(delayed)
        sizing = [r.detach() for r, d in zip(scaled, delayed) if not d]
        if self.shift == "layer":
            peak = max(float(r.abs().max()) for r in sizing)
            dt = wq.delta_t(peak, minimum=int(lowest.max()), maximum=MAX_DELTA_T)
            if self.weight_grid == "mse":
                dt = int(self._least_error_shift(wq, [r.reshape(1, -1) for r in sizing], torch.tensor([dt]))[0])
            shift = dt
        else:  # every output channel uses its weights' whole b-bit range
            peak = torch.stack([r.abs().reshape(r.shape[0], -1).max(1).values for r in sizing]).max(0).values
            dt = torch.tensor([wq.delta_t(float(p), minimum=int(m), maximum=MAX_DELTA_T) for p, m in zip(peak, lowest)],
                              dtype=torch.int64, device=peak.device)
            if self.weight_grid == "mse":
                dt = self._least_error_shift(wq, [r.reshape(r.shape[0], -1) for r in sizing], dt)
            shift = dt.double()
        weights = []
        for r, t, d in zip(scaled, node.terms, delayed):
            per_channel = shift if isinstance(shift, int) else shift.view(output_channel_view(t))
            if d:  # a delay k <= dT + T - T_in keeps the delayed train inside the window
                room = per_channel + own.to(r.device).view(output_channel_view(t)) - self._train_length(t.src)
                weights.append(wq.quantize_gain(r * 2.0**per_channel, room))
            else:
                weights.append(wq.quantize(r * 2.0**per_channel, 0))
        dt_sum = shift if isinstance(shift, int) else shift.view(view)
        b = bias.view(view)
        if correction is not None:
            b = b + correction
        beta = round_ste(b * 2.0**dt_sum / s_out.view(view)) + rounding_offset(dt_sum)
        return weights, beta, dt if self.shift == "layer" else dt.view(view), s_out

    @staticmethod
    def _least_error_shift(wq: WeightQuant, rows: list[torch.Tensor], dt: torch.Tensor) -> torch.Tensor:
        """Per row (output channel), the shift among ``dt .. dt + 3`` whose b-bit grid ``2^-dT`` (weights
        beyond ``qmax`` clipped) has the least squared weight error. ``dt`` is the largest shift without
        clipping; ``rows`` are the ratios ``W s_in / s_out``, one (C, n) tensor per synapse term."""
        errors = []
        step = max(1, (1 << 20) // max(sum(r.shape[1] for r in rows), 1))  # rows per chunk: ~1 M weights, cache-sized
        for k in range(SHIFT_SEARCH):
            d = (dt + k).clamp_max(MAX_DELTA_T).to(rows[0].device)
            g = (2.0 ** d.double()).view(-1, 1)
            err = torch.cat([sum(((wq.quantize(r[i:i + step] * g[i:i + step], 0) / g[i:i + step] - r[i:i + step]) ** 2).sum(1)
                                 for r in rows) for i in range(0, len(g), step)])
            errors.append(err)
        return (dt + torch.stack(errors).argmin(0).to(dt.device)).clamp_max(MAX_DELTA_T)

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
    def quantize_input(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Pixels (uint8 or float 0..255) -> the input integers ``floor(p / 2^(8 - input_bits))``."""
        return pixel_integers(x, self.input_bits, dtype)

    def forward(self, x: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """Float logits ``delta * integer logits`` (``exact=True``: float64 integer logits, no scale).

        Exact sums run in float32 where every partial sum is provably below 2^24 (on CPU), else in float64.
        """

        integers = self._frozen_integers() if not torch.is_grad_enabled() else {}

        def layer(node: Node, values: dict) -> torch.Tensor:
            if node.name in integers:
                weights, beta, dt, scale = integers[node.name]
            else:
                weights, beta, dt, scale = integers[node.name] = self.layer_integers(node)
            dtype = torch.float32
            if exact:
                if (node.name, "dtype") not in integers:
                    peak = peak_input(self.graph, node, [w.detach() for w in weights],
                                      lambda src: (1 << self._train_length(src)) - 1)
                    integers[node.name, "dtype"] = exact_dtype(int(beta.detach().abs().max()) + peak, beta.device)
                dtype = integers[node.name, "dtype"]
            acc = beta.to(dtype)
            for t, w in zip(node.terms, weights):
                acc = acc + synapse(t, values[t.src].to(dtype), w.to(dtype))
            if node.kind == "output":
                return acc.double() if exact else acc * scale.to(dtype)
            out = self.act_of(node.name).from_sum(acc, dt)
            top = self._channel_qmax.get(node.name)
            if top is not None:  # channels with shorter trains saturate lower
                out = torch.minimum(out, top.to(out).view(-1, *([1] * (len(node.shape) - 1))))
            return out

        return walk(self.graph, self.quantize_input(x, torch.float64 if exact else torch.float32), layer, _maxpool)

    def _frozen_integers(self) -> dict:
        """The integer parameters of every layer, kept between gradient-free passes while none of the QANN's
        tensors changes: the key is every parameter's and buffer's storage, device and version counter
        (bumped by every in-place change: an optimizer step, ``load_state_dict``, calibration), so a
        changed tensor recomputes them."""
        key = tuple((t.data_ptr(), t.device, t._version) for t in (*self.parameters(), *self.buffers()))
        if getattr(self, "_integers_key", None) != key:
            self._integers_key, self._integers = key, {}
        return self._integers

    @torch.no_grad()
    def integer_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The exact integer logits (int64), as the spiking network computes them."""
        return self.forward(x, exact=True).round().to(torch.int64)

    def float_forward(self, x: torch.Tensor, capture: Callable[[str, torch.Tensor], None] | None = None) -> torch.Tensor:
        """The unquantized network (BatchNorm folded): equals the original float model's logits.

        With ``capture``, calls ``capture(name, pre)`` with each neuron layer's pre-activation (real units) as
        soon as it is computed, so a caller can reduce it before the next layer runs.
        """

        def layer(node: Node, values: dict) -> torch.Tensor:
            acc = self.biases[node.name].view(-1, *([1] * (len(node.shape) - 1)))
            for t in node.terms:
                acc = acc + synapse(t, values[t.src], self.weights[_key(t.param)])
            if node.kind == "output":
                return acc
            if capture is not None:
                capture(node.name, acc.detach())
            clip = node.attrs.get("clip")
            return torch.relu(acc) if clip is None else torch.clamp(acc, 0, clip)

        return walk(self.graph, normalize(x, self.mean, self.std), layer, _maxpool)

    # ---- calibration -----------------------------------------------------------------------------------
    @torch.no_grad()
    def calibrate(self, images: torch.Tensor | Iterable[torch.Tensor], batch_size: int | None = None,
                  method: str = "mse", samples_per_layer: int = 1 << 18, progress: bool = True,
                  share: Share | None = None) -> None:
        """Set every activation scale from the float network's activations on ``images``.

        ``batch_size``: images per float pass (default: :data:`CALIB_PIXELS` pixels' worth, 256 images at
        32x32, 5 at 224x224). The activations are sampled layer by layer as the pass computes them, so
        memory holds one batch's float pass and the bounded samples, whatever the number of images.
        ``method``: ``"mse"`` (clip minimizing the T-bit quantization error, the default) or
        ``"percentile:P"`` (clip at the P-th percentile of the positive activations, e.g. 99.99); see
        :class:`~radixsnn.core.quant.Calibration`. ``share``: this process's place among several that
        calibrate together (see :meth:`activation_samples`); the scales equal one process's.
        """
        rule = Calibration.parse(method)
        for name, a in self.activation_samples(images, batch_size, samples_per_layer, progress, share).items():
            top = self.qmax_of(name)
            tops = [int(v) for v in top] if isinstance(top, torch.Tensor) else [top] * len(a)
            clip = torch.stack([rule.clip(row, q) for row, q in zip(a, tops)])
            self.scales[name].copy_((clip / torch.tensor(tops, dtype=clip.dtype)).to(self.scales[name]))

    @torch.no_grad()
    def activation_samples(self, images: torch.Tensor | Iterable[torch.Tensor], batch_size: int | None = None,
                           samples_per_layer: int = 1 << 18, progress: bool = True,
                           share: Share | None = None) -> dict[str, torch.Tensor]:
        """What :meth:`calibrate` reads: every neuron layer's float activations on ``images`` (ReLU'd, at
        most the layer's clip), a fixed random sample of about ``samples_per_layer`` of them, as a float32
        ``(C, n)`` tensor of rows per channel (``act_scale="channel"``) or one ``(1, n)`` row per layer.

        ``share`` (every process passing the same ``images``): process ``share.rank`` of ``share.world_size``
        runs the float passes of batches ``rank, rank + world_size, ...`` only; it makes the random draws of
        the others too (:func:`skip_randperm`: the draws follow one generator, batch after batch), and ``share.all_reduce_sum_``
        fills in the other processes' samples, so every process returns exactly what one process would."""
        if batch_size is None:
            batch_size = max(1, CALIB_PIXELS // math.prod(self.graph.input.shape[1:]))
        if isinstance(images, torch.Tensor):
            if images.dim() != 4 or len(images) == 0:
                raise ConfigError("images", f"must be a non-empty (N, C, H, W) batch, got shape {tuple(images.shape)}")
            batches = list(images.split(batch_size))
        else:
            batches = list(images)
        if not batches:
            raise ConfigError("images", "holds no images to calibrate on")
        rank, world = (0, 1) if share is None else (share.rank, share.world_size)
        device = next(self.parameters()).device
        gen = torch.Generator().manual_seed(0)
        pools: dict[str, list[torch.Tensor]] = {}
        per_channel = self.act_scale == "channel"

        def draw(name: str, rows: int, columns: int, a: torch.Tensor | None) -> None:
            """Sample the columns of ``a`` (``(rows, columns)`` activations: a row per channel, or the layer's
            one row), or where ``a`` is None (another process's batch) make the same draws and keep zeros."""
            keep = max(1, samples_per_layer // len(batches) // rows)
            if columns > keep:
                if a is None:
                    skip_randperm(columns, gen)
                else:
                    a = a[:, torch.randperm(columns, generator=gen)[:keep]]
            pools.setdefault(name, []).append(torch.zeros(rows, min(keep, columns)) if a is None else a)

        def sample(name: str, pre: torch.Tensor) -> None:  # called layer by layer during the pass
            a = torch.relu(pre).transpose(0, 1).reshape(pre.shape[1] if per_channel else 1, -1).float().cpu()
            draw(name, *a.shape, a)  # (C, N*H*W) or (1, C*N*H*W)

        neurons = [n for n in self.graph.nodes if n.kind == "neuron"]  # in the order the pass samples them
        for i, xb in enumerate(tqdm(batches, desc="calibrate", disable=not progress, leave=False)):
            if i % world == rank:
                self.float_forward(xb.to(device), sample)
            else:
                for node in neurons:
                    rows = node.channels if per_channel else 1
                    draw(node.name, rows, len(xb) * math.prod(node.shape) // rows, None)
        samples = {}
        for name, chunks in pools.items():
            a = torch.cat(chunks, dim=1)
            if world > 1:  # each sample is one process's (the others hold 0 there): the sum is exact
                a = share.all_reduce_sum_(a)
            cap = self.graph[name].attrs.get("clip")
            samples[name] = a if cap is None else a.clamp(max=cap)
        return samples

    # ---- conversion -----------------------------------------------------------------------------------
    @torch.no_grad()
    def to_snn(self, metadata: dict | None = None) -> IntegerSNN:
        """The integer SNN (weights, biases, shifts) that this QANN computes, with this QANN stored beside it."""
        was_training = self.training
        self.eval()
        try:
            weights, biases, delta_t, scales = {}, {}, {}, {}
            for node in self.graph.layers:
                ws, beta, dt, scale = self.layer_integers(node)
                for t, w in zip(node.terms, ws):
                    weights[t.param] = w.round().to(torch.int64).cpu()
                beta = beta.round().to(torch.int64).cpu()
                # one bias per channel unless it varies over positions (the first layer's padding correction)
                biases[node.name] = beta.reshape(-1) if beta.numel() == node.channels else beta.reshape(node.shape)
                delta_t[node.name] = dt if isinstance(dt, int) else [int(v) for v in dt.reshape(-1)]
                scales[node.name] = scale.detach().float().cpu().reshape(-1)
        finally:
            self.train(was_training)
        return IntegerSNN(
            graph=self.graph,
            time_steps=self.time_steps,
            weight_bits=self.weight_bits,
            layer_time_steps=dict(self.layer_time_steps),
            layer_weight_bits=dict(self.layer_weight_bits),
            channel_time_steps={k: list(v) for k, v in self.channel_time_steps.items()},
            input_bits=self.input_bits,
            weights=weights,
            biases=biases,
            delta_t=delta_t,
            scales=scales,
            qann_spec=self.spec,
            qann_state={k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()},
            metadata=dict(metadata or {}),
        )


def _maxpool(node: Node, x: torch.Tensor) -> torch.Tensor:
    return max_pool_integers(x, node.attrs)


def _key(param: str) -> str:
    """ParameterDict keys cannot contain dots."""
    return param.replace(".", "/")
