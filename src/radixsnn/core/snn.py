"""The integer radix SNN: graph, integer weights and biases, shifts ``dT``, and its file format.

One ``.snn`` file is a safetensors file: tensors ``w/<term>`` (integer weights; a shortcut's gains
``m 2^k`` as their b-bit weights ``m``, with ``d/<term>`` their delays ``k``), ``b/<node>``
(integer biases), ``s/<node>`` (activation / logit scales, for reference) and ``qann/<name>`` (the float
QANN the SNN was converted from, so results can be checked against it), plus a JSON header in the
safetensors metadata with the graph, ``T`` (per layer, and per channel where a layer's channels
differ), bit widths, ``dT`` per layer, the config that made it and a
SHA-256 ``digest`` over the header and every tensor. Nothing in it is executable: no pickle.

Loading trusts nothing: the digest must match (a flipped byte is an error, not a wrong result), and
every header field and tensor is checked before the SNN exists -- known keys only, ``T`` in 1..16,
``dT`` in 0..30 and long enough for the input trains, the graph's shapes consistent, integer dtypes,
weights within their bit width (gains: ``|m| <= 2^(b-1) - 1``, delays ``k <= dT + T - T_in``), every layer's largest possible sum exact in float64 (:meth:`IntegerSNN.check`).
"""
from __future__ import annotations

import hashlib
import json
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from radixsnn.core.graph import Graph
from radixsnn.core.steps import train_lengths
from radixsnn.core.quant import MAX_DELTA_T, MAX_TIME_STEPS, WeightQuant
from radixsnn.errors import RadixSNNError, SNNFileError
from radixsnn.outputs import atomic_write
from radixsnn.version import __version__

FORMAT = "radixsnn-snn"
#: Version 2 added the digest, version 3 the delays of shortcut gains (``d/<term>``) and per-layer T and
#: weight bits; version-1 files (no digest) still load, with every other check.
FORMAT_VERSION = 3
HEADER_FIELDS = {"format", "version", "radixsnn", "time_steps", "weight_bits", "input_bits", "delta_t", "graph",
                 "qann_spec", "metadata", "digest", "layer_time_steps", "layer_weight_bits", "channel_time_steps"}
#: Per-layer time steps and weight bits (version 3): files without them have one T and one bit width;
#: per-channel time steps, in files whose layers give their channels their own T.
OPTIONAL_FIELDS = {"layer_time_steps", "layer_weight_bits", "channel_time_steps"}
#: Every layer's largest possible integer sum must be exact in float64 (the QANN and the CUDA engines).
EXACT_FLOAT64 = 1 << 53
#: Largest ``.snn`` file read (a VGG-16 file is about 80 MB).
MAX_FILE_BYTES = 1 << 30


@dataclass
class IntegerSNN:
    """An integer radix SNN: its graph, ``T``, bit widths, integer weights and biases and shifts ``dT``.

    ``weights`` maps each term's ``param`` to its int64 weights (within ``weight_bits``); ``biases`` each
    neuron layer / readout to its int64 bias, per channel ``(C,)`` or per neuron ``(C, H, W)``;
    ``delta_t`` each layer to its shift, an int or one per output channel (0 for the readout: the logits are
    its sums); ``scales`` each layer to its activation
    (neurons) or logit (readout) scale, for reference. ``qann_spec`` / ``qann_state`` hold the float QANN
    it was converted from (``QANN.from_snn`` rebuilds it) and ``metadata`` what made it (model,
    dataset, source weights and their sha256, the configuration). Run it with :func:`radixsnn.run`.
    """

    graph: Graph
    time_steps: int
    weight_bits: int
    input_bits: int
    weights: dict[str, torch.Tensor]  # term param -> int64
    biases: dict[str, torch.Tensor]  # node -> int64, (C,) or (C, H, W)
    delta_t: dict[str, int | list[int]]  # layer -> dT, or one dT per output channel (0 for the readout)
    scales: dict[str, torch.Tensor]  # neuron -> activation scale; output -> logit scale
    qann_spec: dict | None = None
    qann_state: dict[str, torch.Tensor] | None = None
    metadata: dict = field(default_factory=dict)
    layer_time_steps: dict[str, int] = field(default_factory=dict)  # neuron layers whose T is not time_steps
    layer_weight_bits: dict[str, int] = field(default_factory=dict)  # layers whose bit width is not weight_bits
    channel_time_steps: dict[str, list[int]] = field(default_factory=dict)  # neuron layers whose channels' T differ

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Raise :class:`SNNFileError` unless the SNN is complete and every integer is in range: ``T`` in
        1..16, weights of each term's shape within ``weight_bits`` (integer dtypes), one bias per layer
        ``(C,)`` or of the layer's shape, ``dT`` in 0..30 per layer and at least ``T_in - T`` (the input
        trains must fit the window; 0 for the readout), and every layer's largest possible sum below 2^53."""
        def bad(msg):
            raise SNNFileError(msg)

        for key, value, lo, hi in (("time_steps", self.time_steps, 1, MAX_TIME_STEPS), ("weight_bits", self.weight_bits, 2, 16),
                                   ("input_bits", self.input_bits, 1, 8)):
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                bad(f"{key} must be an integer in {lo}..{hi}, got {value!r}")
        layers = {n.name for n in self.graph.layers}
        neurons = {n.name for n in self.graph.nodes if n.kind == "neuron"}
        for what, values, names, (lo, hi) in (("layer_time_steps", self.layer_time_steps, neurons, (1, MAX_TIME_STEPS)),
                                              ("layer_weight_bits", self.layer_weight_bits, layers, (2, 16))):
            if not isinstance(values, dict) or not set(values) <= names:
                bad(f"{what} must map layers of the graph to integers")
            for name, v in values.items():
                if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                    bad(f"{what} of {name} must be an integer in {lo}..{hi}, got {v!r}")
        lengths = train_lengths(self.graph, self.time_steps, self.layer_time_steps, self.input_bits)
        if not isinstance(self.channel_time_steps, dict) or not set(self.channel_time_steps) <= neurons:
            bad("channel_time_steps must map neuron layers of the graph to lists")
        for name, values in self.channel_time_steps.items():
            count = self.graph[name].channels
            if not isinstance(values, list) or len(values) != count or \
                    not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= lengths[name] for v in values) \
                    or max(values) != lengths[name]:
                bad(f"channel_time_steps of {name} must be {count} integers in 1..{lengths[name]}, the largest "
                    f"{lengths[name]} (the layer's T)")
        params = {t.param for n in self.graph.layers for t in n.terms}
        for what, have, want in (("weights", set(self.weights), params), ("biases", set(self.biases), layers),
                                 ("delta_t", set(self.delta_t), layers), ("scales", set(self.scales), layers)):
            if have != want:
                bad(f"{what} do not match the graph's layers: missing {sorted(want - have)[:3]}, unknown {sorted(have - want)[:3]}")
        for node in self.graph.layers:
            bound = 0
            bits = self.bits_of(node.name)
            qmax = (1 << (bits - 1)) - 1
            for t in node.terms:
                w = self.weights[t.param]
                if not isinstance(w, torch.Tensor) or w.dtype.is_floating_point or w.dtype.is_complex or w.dtype == torch.bool:
                    bad(f"weight {t.param} must be an integer tensor")
                if list(w.shape) != t.weight_shape:
                    bad(f"weight {t.param} has shape {list(w.shape)}, the graph says {t.weight_shape}")
                if t.op != "select" and w.numel() and int(w.abs().max()) > qmax:
                    bad(f"weight {t.param} exceeds {bits} bits")
                per_out = int(w.abs().reshape(w.shape[0], -1).sum(1).max())
                if t.op == "linear" and t.attrs["mode"] == "sumpool":
                    per_out *= _positions(self.graph[t.src].shape)
                bound += per_out * ((1 << lengths[t.src]) - 1)
            b = self.biases[node.name]
            if not isinstance(b, torch.Tensor) or b.dtype != torch.int64 or list(b.shape) not in ([node.channels], list(node.shape)):
                bad(f"bias of {node.name} must be int64 of shape [{node.channels}] or {node.shape}")
            scale = self.scales[node.name]
            if not isinstance(scale, torch.Tensor) or not scale.dtype.is_floating_point or not bool(torch.isfinite(scale).all()):
                bad(f"scale of {node.name} must be finite floats")
            if bound + int(b.abs().max()) >= EXACT_FLOAT64:
                bad(f"layer {node.name}: its sums can exceed 2^53, beyond exact integer arithmetic")
            dt = self.delta_t[node.name]
            longest = max(lengths[t.src] for t in node.terms)
            steps = lengths.get(node.name, self.time_steps)
            own = self.channel_time_steps.get(node.name, [steps] * node.channels)
            shifts = dt if isinstance(dt, list) and node.kind == "neuron" and len(dt) == node.channels else [dt]
            for i, d in enumerate(shifts if len(shifts) == node.channels else shifts * node.channels):
                if not isinstance(d, int) or isinstance(d, bool) or not 0 <= d <= MAX_DELTA_T:
                    bad(f"dT of {node.name} must be an integer in 0..{MAX_DELTA_T} or {node.channels} of them, got {d!r}")
                if node.kind == "output" and d != 0 or node.kind == "neuron" and d < longest - own[i]:
                    bad(f"dT of {node.name} ({d}) does not fit its {longest}-step inputs")
            for t in node.terms:
                if t.op == "select":
                    try:
                        _, k = self.split_gain(t.param)
                    except ValueError:
                        bad(f"gains {t.param} are not {bits}-bit weights on delayed spikes (m 2^k)")
                    room = torch.tensor(shifts if len(shifts) == node.channels else shifts * node.channels) \
                        + torch.tensor(own) - lengths[t.src]
                    if bool((k > room).any()):
                        bad(f"gains {t.param}: a delay k exceeds dT + T - T_in, its spikes would arrive after the window")

    def split_gain(self, param: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A select term's gains as ``(m, k)``: b-bit weights ``m`` on spikes delayed by ``k`` steps
        (``gain = m 2^k``, ``k`` the least delay); ``ValueError`` if a gain has no such form."""
        layer = next(n.name for n in self.graph.layers if any(t.param == param for t in n.terms))
        return WeightQuant(self.bits_of(layer)).split_gain(self.weights[param].cpu())

    def bits_of(self, name: str) -> int:
        """The weight bit width of layer ``name``."""
        return self.layer_weight_bits.get(name, self.weight_bits)

    def shift(self, name: str, device="cpu") -> int | torch.Tensor:
        """The shift of layer ``name``: an int, or an int64 tensor of one per output channel shaped to
        broadcast against the layer's sums."""
        dt = self.delta_t[name]
        if isinstance(dt, int):
            return dt
        node = self.graph[name]
        return torch.tensor(dt, dtype=torch.int64, device=device).view(-1, *([1] * (len(node.shape) - 1)))

    def channel_steps(self, name: str, device="cpu") -> torch.Tensor | None:
        """The train length of every output channel of neuron layer ``name`` (an int64 tensor shaped to
        broadcast against the layer's sums), or ``None`` when they all have the layer's ``T``."""
        steps = self.channel_time_steps.get(name)
        if steps is None:
            return None
        return torch.tensor(steps, dtype=torch.int64, device=device).view(-1, *([1] * (len(self.graph[name].shape) - 1)))

    def train_length(self, name: str) -> int:
        """Steps of the trains a spiking node emits: ``input_bits`` for the pixels, a neuron layer's own
        ``T``, a max-pool its source's."""
        return train_lengths(self.graph, self.time_steps, self.layer_time_steps, self.input_bits)[name]

    @property
    def longest_train(self) -> int:
        """The longest train any spiking node emits."""
        return max(train_lengths(self.graph, self.time_steps, self.layer_time_steps, self.input_bits).values())

    def to(self, device) -> "IntegerSNN":
        """The integer tensors on ``device`` (a shallow copy)."""
        out = IntegerSNN.__new__(IntegerSNN)
        out.__dict__.update(self.__dict__)
        out.weights = {k: v.to(device) for k, v in self.weights.items()}
        out.biases = {k: v.to(device) for k, v in self.biases.items()}
        return out

    def state_key(self) -> tuple:
        """What every derived form of the SNN (the integer engine's int8 plan, the ONNX session) depends on,
        as a comparable value: T (per layer and channel), bit widths, shifts, and each integer tensor's
        storage, device and version counter (which every in-place change bumps)."""
        def frozen(d):
            return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))

        tensors = (*self.weights.items(), *self.biases.items(), *self.scales.items())
        return (id(self.graph), self.time_steps, self.weight_bits, self.input_bits, frozen(self.layer_time_steps),
                frozen(self.layer_weight_bits), frozen(self.channel_time_steps), frozen(self.delta_t),
                tuple((k, t.data_ptr(), t.device, t._version) for k, t in tensors))

    def equals(self, other: "IntegerSNN") -> bool:
        """Same graph, T, bit widths, shifts and integers."""
        return (
            self.graph.to_dict() == other.graph.to_dict()
            and (self.time_steps, self.weight_bits, self.input_bits) == (other.time_steps, other.weight_bits, other.input_bits)
            and (self.layer_time_steps, self.layer_weight_bits) == (other.layer_time_steps, other.layer_weight_bits)
            and self.channel_time_steps == other.channel_time_steps
            and self.delta_t == other.delta_t
            and self.weights.keys() == other.weights.keys()
            and all(torch.equal(self.weights[k].cpu(), other.weights[k].cpu()) for k in self.weights)
            and self.biases.keys() == other.biases.keys()
            and all(torch.equal(self.biases[k].cpu(), other.biases[k].cpu()) for k in self.biases)
        )

    # ---- file format ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> Path:
        """Write the SNN atomically to ``path`` (safetensors + JSON header with its digest)."""
        header, tensors = self._contents(metadata)
        header["digest"] = digest(header, tensors)
        return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"radixsnn": json.dumps(header)}), "path")

    def digest(self) -> str:
        """The SHA-256 digest that :meth:`save` writes in the file's header (over the header and every tensor)."""
        return digest(*self._contents())

    def _contents(self, metadata: dict | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
        """The file's header (without its digest) and tensors."""
        meta = {**self.metadata, **(metadata or {})}
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "radixsnn": __version__,
            "time_steps": self.time_steps,
            "weight_bits": self.weight_bits,
            "input_bits": self.input_bits,
            "layer_time_steps": self.layer_time_steps,
            "layer_weight_bits": self.layer_weight_bits,
            **({"channel_time_steps": self.channel_time_steps} if self.channel_time_steps else {}),
            "delta_t": self.delta_t,
            "graph": self.graph.to_dict(),
            "qann_spec": self.qann_spec,
            "metadata": meta,
        }
        tensors = {}
        wdtype = _weight_dtype(max([self.weight_bits, *self.layer_weight_bits.values()]))
        selects = {t.param for n in self.graph.layers for t in n.terms if t.op == "select"}
        for k, v in self.weights.items():
            if k in selects:
                v, delay = self.split_gain(k)
                tensors[f"d/{k}"] = delay.to(torch.uint8).contiguous()
            tensors[f"w/{k}"] = v.to(wdtype).contiguous().cpu()
        for k, v in self.biases.items():
            tensors[f"b/{k}"] = v.to(torch.int64).contiguous().cpu()
        for k, v in self.scales.items():
            tensors[f"s/{k}"] = v.float().contiguous().cpu()
        for k, v in (self.qann_state or {}).items():
            tensors[f"qann/{k}"] = v.float().contiguous().cpu()
        return header, tensors

    @classmethod
    def load(cls, path: str | os.PathLike) -> "IntegerSNN":
        """Read a ``.snn`` file written by :meth:`save`; raises :class:`SNNFileError` if it is not one, if
        its digest does not match, or if any field fails the checks of the module docstring."""
        path = Path(path)
        if not path.is_file():
            raise SNNFileError(f"SNN file not found: {path}")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise SNNFileError(f"{path} is larger than {MAX_FILE_BYTES >> 30} GiB: not an SNN file this radixsnn reads")
        try:
            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get("radixsnn")
                if raw is None:
                    raise SNNFileError("a safetensors file without a radixsnn header")
                header = _read_header(raw)
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except SNNFileError as exc:
            raise SNNFileError(f"{path}: {exc}") from None
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise SNNFileError(f"{path} is not a radixsnn SNN file ({' '.join(str(exc).split())[:300]})") from None
        try:
            if header["version"] >= 2 and digest({k: v for k, v in header.items() if k != "digest"}, tensors) != header["digest"]:
                raise SNNFileError("the digest does not match its contents (the file is corrupt or was modified)")
            return _from_file(cls, header, tensors)
        except SNNFileError as exc:
            raise SNNFileError(f"{path}: {exc}") from None
        except (RadixSNNError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SNNFileError(f"{path}: invalid radixsnn header ({exc})") from None


#: (id(snn), what) -> (a weak reference to the SNN, key, value): what :func:`kept` holds beside SNNs
#: rather than on them, so an IntegerSNN's attributes remain its fields (``IntegerSNN(**vars(snn))`` works).
_KEPT: dict[tuple[int, str], tuple] = {}


def kept(snn: IntegerSNN, what: str, key, build):
    """``build()``, computed once and kept for ``snn`` under the name ``what`` while the SNN lives and
    ``key`` (which should include :meth:`IntegerSNN.state_key`) stays equal; a new key rebuilds it."""
    slot = (id(snn), what)
    held = _KEPT.get(slot)
    if held is not None and held[0]() is snn and held[1] == key:
        return held[2]
    value = build()
    if held is None or held[0]() is not snn:
        weakref.finalize(snn, _KEPT.pop, slot, None)
    _KEPT[slot] = (weakref.ref(snn), key, value)
    return value


def _weight_dtype(weight_bits: int) -> torch.dtype:
    return torch.int8 if weight_bits <= 8 else torch.int16


def _positions(shape) -> int:
    n = 1
    for d in shape[1:]:
        n *= d
    return n


def digest(header: dict, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the header (canonical JSON, without its ``digest``) and every tensor's name, dtype,
    shape and bytes, in name order."""
    h = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous().cpu()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _read_header(raw: str) -> dict:
    """The parsed header, its keys and scalar fields checked (the graph is checked by Graph.from_dict)."""
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise SNNFileError(f"the header is not JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise SNNFileError("not a radixsnn SNN header (wrong format tag)")
    version = header.get("version")
    if version not in (1, 2, 3):
        raise SNNFileError(f"format version {version!r} is not one this radixsnn reads (1..{FORMAT_VERSION})")
    required = HEADER_FIELDS - OPTIONAL_FIELDS - ({"digest"} if version == 1 else set())
    unknown, missing = set(header) - HEADER_FIELDS, required - set(header)
    if unknown or missing:
        raise SNNFileError(f"header fields: unknown {sorted(unknown)}, missing {sorted(missing)}")
    if version >= 2 and not (isinstance(header["digest"], str) and len(header["digest"]) == 64):
        raise SNNFileError("the header's digest is not a SHA-256 hex string")
    if not isinstance(header["delta_t"], dict) or not isinstance(header["metadata"], dict):
        raise SNNFileError("delta_t and metadata must be mappings")
    if header["qann_spec"] is not None and not isinstance(header["qann_spec"], dict):
        raise SNNFileError("qann_spec must be a mapping or null")
    return header


def _from_file(cls, header: dict, tensors: dict[str, torch.Tensor]) -> "IntegerSNN":
    graph = Graph.from_dict(header["graph"])
    groups: dict[str, dict[str, torch.Tensor]] = {"w/": {}, "d/": {}, "b/": {}, "s/": {}, "qann/": {}}
    for name, t in tensors.items():
        prefix = next((p for p in groups if name.startswith(p)), None)
        if prefix is None:
            raise SNNFileError(f"unknown tensor {name!r}")
        groups[prefix][name[len(prefix):]] = t
    layer_bits = header.get("layer_weight_bits", {})
    widths = [header["weight_bits"], *(layer_bits.values() if isinstance(layer_bits, dict) else [])]
    wdtype = _weight_dtype(max(widths)) if all(isinstance(b, int) for b in widths) else None
    if any(w.dtype != wdtype for w in groups["w/"].values()):
        raise SNNFileError(f"weights must be stored as {wdtype}")
    weights = {k: v.to(torch.int64) for k, v in groups["w/"].items()}
    for k, delay in groups["d/"].items():
        # no window is longer than MAX_DELTA_T + MAX_TIME_STEPS steps, and the bound keeps m << k inside int64
        too_long = delay.numel() and int(delay.max()) > MAX_DELTA_T + MAX_TIME_STEPS
        if k not in weights or delay.dtype != torch.uint8 or delay.shape != weights[k].shape or too_long:
            raise SNNFileError(f"delays d/{k} must be uint8 beside their weights, of their shape")
        weights[k] = weights[k] << delay.to(torch.int64)
    spec, state = header["qann_spec"], groups["qann/"] or None
    snn = cls(
        graph=graph,
        time_steps=header["time_steps"],
        weight_bits=header["weight_bits"],
        input_bits=header["input_bits"],
        weights=weights,
        biases=groups["b/"],
        delta_t=dict(header["delta_t"]),
        scales=groups["s/"],
        qann_spec=spec,
        qann_state=state,
        metadata=header["metadata"],
        layer_time_steps=header.get("layer_time_steps", {}),
        layer_weight_bits=layer_bits,
        channel_time_steps=header.get("channel_time_steps", {}),
    )
    if (spec is None) != (state is None):
        raise SNNFileError("the QANN's description and its tensors must come together")
    if spec is not None:
        keys = {"graph", "time_steps", "weight_bits", "input_bits", "act_scale"}
        per_layer = [spec.get(k, {}) for k in ("layer_time_steps", "layer_weight_bits", "channel_time_steps")]
        optional = {"shift", "weight_grid", "gains", "layer_time_steps", "layer_weight_bits", "channel_time_steps"}
        if not keys <= set(spec) <= keys | optional or spec["graph"] != header["graph"] \
                or per_layer != [snn.layer_time_steps, snn.layer_weight_bits, snn.channel_time_steps] \
                or [spec[k] for k in ("time_steps", "weight_bits", "input_bits")] != [header[k] for k in ("time_steps", "weight_bits", "input_bits")] \
                or spec["act_scale"] not in ("layer", "channel") or spec.get("shift", "layer") not in ("layer", "channel") \
                or spec.get("weight_grid", "max") not in ("max", "mse") or spec.get("gains", "plain") not in ("plain", "delayed"):
            raise SNNFileError("the stored QANN does not describe this SNN")
        if any(not v.dtype.is_floating_point or not bool(torch.isfinite(v).all()) for v in state.values()):
            raise SNNFileError("the stored QANN's tensors must be finite floats")
    return snn


def load(path: str | os.PathLike) -> IntegerSNN:
    """Read a ``.snn`` file: the same as :meth:`IntegerSNN.load`."""
    return IntegerSNN.load(path)
