"""The integer radix SNN: graph, integer weights and biases, shifts ``dT``, and its file format.

One ``.snn`` file is a safetensors file: tensors ``w/<term>`` (integer weights), ``b/<node>``
(integer biases), ``s/<node>`` (activation / logit scales, for reference) and ``qann/<name>`` (the float
QANN the SNN was converted from, so results can be checked against it), plus a JSON header in the
safetensors metadata with the graph, ``T``, bit widths, ``dT`` per layer and the config that made it.
Nothing in it is executable: no pickle.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from radixsnn import __version__
from radixsnn.errors import RadixSNNError
from radixsnn.graph import Graph

FORMAT = "radixsnn-snn"
FORMAT_VERSION = 1


@dataclass
class IntegerSNN:
    graph: Graph
    time_steps: int
    weight_bits: int
    input_bits: int
    weights: dict[str, torch.Tensor]  # term param -> int64
    biases: dict[str, torch.Tensor]  # node -> int64, (C,) or (C, H, W)
    delta_t: dict[str, int]  # neuron node -> dT (0 for the readout)
    scales: dict[str, torch.Tensor]  # neuron -> activation scale; output -> logit scale
    qann_spec: dict | None = None
    qann_state: dict[str, torch.Tensor] | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Validate integer ranges (weights within ``weight_bits``) and completeness."""
        qmax = (1 << (self.weight_bits - 1)) - 1
        for node in self.graph.nodes:
            for t in node.terms:
                w = self.weights.get(t.param)
                if w is None or list(w.shape) != t.weight_shape:
                    raise RadixSNNError(f"SNN weight {t.param} missing or of the wrong shape")
                if w.numel() and int(w.abs().max()) > qmax:
                    raise RadixSNNError(f"SNN weight {t.param} exceeds {self.weight_bits} bits")
            if node.kind in ("neuron", "output") and node.name not in self.biases:
                raise RadixSNNError(f"SNN bias of {node.name} missing")

    @property
    def neurons(self):
        return [n for n in self.graph.nodes if n.kind == "neuron"]

    def window(self, name: str) -> int:
        """Time steps ``T + dT`` a neuron layer runs."""
        return self.time_steps + self.delta_t[name]

    def train_length(self, name: str) -> int:
        return self.input_bits if self.graph[name].kind == "input" else self.time_steps

    def to(self, device) -> "IntegerSNN":
        """The integer tensors on ``device`` (a shallow copy)."""
        out = IntegerSNN.__new__(IntegerSNN)
        out.__dict__.update(self.__dict__)
        out.weights = {k: v.to(device) for k, v in self.weights.items()}
        out.biases = {k: v.to(device) for k, v in self.biases.items()}
        return out

    def equals(self, other: "IntegerSNN") -> bool:
        """Same graph, T, bit widths, shifts and integers."""
        return (
            self.graph.to_dict() == other.graph.to_dict()
            and (self.time_steps, self.weight_bits, self.input_bits) == (other.time_steps, other.weight_bits, other.input_bits)
            and self.delta_t == other.delta_t
            and self.weights.keys() == other.weights.keys()
            and all(torch.equal(self.weights[k].cpu(), other.weights[k].cpu()) for k in self.weights)
            and self.biases.keys() == other.biases.keys()
            and all(torch.equal(self.biases[k].cpu(), other.biases[k].cpu()) for k in self.biases)
        )

    # ---- file format ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> Path:
        """Write the SNN atomically to ``path`` (safetensors + JSON header)."""
        path = Path(path)
        meta = {**self.metadata, **(metadata or {})}
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "radixsnn": __version__,
            "time_steps": self.time_steps,
            "weight_bits": self.weight_bits,
            "input_bits": self.input_bits,
            "delta_t": self.delta_t,
            "graph": self.graph.to_dict(),
            "qann_spec": self.qann_spec,
            "metadata": meta,
        }
        tensors = {}
        wdtype = torch.int8 if self.weight_bits <= 8 else torch.int16
        for k, v in self.weights.items():
            tensors[f"w/{k}"] = v.to(wdtype).contiguous().cpu()
        for k, v in self.biases.items():
            tensors[f"b/{k}"] = v.to(torch.int64).contiguous().cpu()
        for k, v in self.scales.items():
            tensors[f"s/{k}"] = v.float().contiguous().cpu()
        for k, v in (self.qann_state or {}).items():
            tensors[f"qann/{k}"] = v.contiguous().cpu()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"radixsnn": json.dumps(header)})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "IntegerSNN":
        path = Path(path)
        if not path.is_file():
            raise RadixSNNError(f"SNN file not found: {path}")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get("radixsnn")
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise RadixSNNError(f"{path} is not a radixsnn SNN file ({str(exc).splitlines()[0][:120]})") from None
        if raw is None:
            raise RadixSNNError(f"{path} is a safetensors file without a radixsnn header")
        try:
            header = json.loads(raw)
            if header.get("format") != FORMAT:
                raise ValueError("wrong format tag")
            if header.get("version", 0) > FORMAT_VERSION:
                raise ValueError(f"format version {header['version']} is newer than this radixsnn")
            graph = Graph.from_dict(header["graph"])

            def group(prefix):
                return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

            return cls(
                graph=graph,
                time_steps=int(header["time_steps"]),
                weight_bits=int(header["weight_bits"]),
                input_bits=int(header["input_bits"]),
                weights={k: v.to(torch.int64) for k, v in group("w/").items()},
                biases=group("b/"),
                delta_t={k: int(v) for k, v in header["delta_t"].items()},
                scales=group("s/"),
                qann_spec=header.get("qann_spec"),
                qann_state=group("qann/") or None,
                metadata=header.get("metadata", {}),
            )
        except RadixSNNError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise RadixSNNError(f"{path}: corrupt radixsnn header ({exc})") from None

    def load_qann(self):
        """The float QANN stored beside the integers, or ``None``."""
        if self.qann_spec is None or self.qann_state is None:
            return None
        from radixsnn.qann import QANN

        qann = QANN.from_spec(self.qann_spec)
        qann.load_state_dict(self.qann_state)
        return qann.eval()


def term_fan_in(snn: IntegerSNN, name: str, i: int) -> int:
    """Synapses per output neuron of term ``i`` of node ``name`` (the N of Eq. 24)."""
    node = snn.graph[name]
    t = node.terms[i]
    src = snn.graph[t.src].shape
    if t.op == "conv2d":
        w = t.weight_shape
        return w[1] * w[2] * w[3]
    if t.op == "linear":
        if t.attrs["mode"] == "sumpool":
            return src[0] * src[1] * src[2]
        return t.weight_shape[1]
    return 1


def dense_ops(snn: IntegerSNN) -> int:
    """Paper Eq. 24, ``sum N M T`` over all synapse terms (T = the source's train length)."""
    total = 0
    for node in snn.graph.nodes:
        m = 1
        for d in node.shape:
            m *= d
        for i, t in enumerate(node.terms):
            fan_in = term_fan_in(snn, node.name, i)
            if t.op == "select":
                pad = sum(t.attrs["pad"])
                m_eff = m * (node.shape[0] - pad) // node.shape[0]
                total += m_eff * snn.train_length(t.src)
            else:
                total += fan_in * m * snn.train_length(t.src)
    return total
