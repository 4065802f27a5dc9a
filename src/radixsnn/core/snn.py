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

from radixsnn.core.graph import Graph
from radixsnn.errors import RadixSNNError, SNNFileError
from radixsnn.version import __version__

FORMAT = "radixsnn-snn"
FORMAT_VERSION = 1


@dataclass
class IntegerSNN:
    """An integer radix SNN: its graph, ``T``, bit widths, integer weights and biases and shifts ``dT``.

    ``weights`` maps each term's ``param`` to its int64 weights (within ``weight_bits``); ``biases`` each
    neuron layer / readout to its int64 bias, per channel ``(C,)`` or per neuron ``(C, H, W)``;
    ``delta_t`` each layer to its shift (0 for the readout); ``scales`` each layer to its activation
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
                    raise SNNFileError(f"SNN weight {t.param} missing or of the wrong shape")
                if w.numel() and int(w.abs().max()) > qmax:
                    raise SNNFileError(f"SNN weight {t.param} exceeds {self.weight_bits} bits")
            if node.kind in ("neuron", "output") and node.name not in self.biases:
                raise SNNFileError(f"SNN bias of {node.name} missing")

    def train_length(self, name: str) -> int:
        """Steps of the trains a spiking node emits: ``input_bits`` for the pixels, ``T`` otherwise."""
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
        """Read a ``.snn`` file written by :meth:`save` (raises :class:`SNNFileError` if it is not one)."""
        path = Path(path)
        if not path.is_file():
            raise SNNFileError(f"SNN file not found: {path}")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get("radixsnn")
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise SNNFileError(f"{path} is not a radixsnn SNN file ({str(exc).splitlines()[0][:120]})") from None
        if raw is None:
            raise SNNFileError(f"{path} is a safetensors file without a radixsnn header")
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
        except SNNFileError as exc:
            raise SNNFileError(f"{path}: {exc}") from None
        except (RadixSNNError, KeyError, TypeError, ValueError) as exc:
            raise SNNFileError(f"{path}: corrupt radixsnn header ({exc})") from None


def load(path: str | os.PathLike) -> IntegerSNN:
    """Read a ``.snn`` file: the same as :meth:`IntegerSNN.load`."""
    return IntegerSNN.load(path)
