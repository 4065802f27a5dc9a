"""Tracing: a float CNN (``nn.Module``) -> the :class:`~radixsnn.core.graph.Graph` of its radix SNN.

:func:`trace_graph` traces the model with torch.fx (on a copy, in eval mode), folds every BatchNorm into
the weights before it, and rewrites the traced operations into graph nodes by abstract interpretation:
each ReLU becomes a layer of radix neurons whose potential integrates one or more synapse terms;
max-pools stay max-pools; identity and option-A shortcuts become ``select`` terms of the neuron after
the addition; a global average pool before the classifier becomes its ``sumpool`` readout; the last
linear layer becomes the non-spiking readout. It returns the graph and the float parameters of every
term and bias, from which :class:`~radixsnn.core.qann.QANN` builds the quantized network.

The user's model is never modified. Unsupported operations raise :class:`ConversionError` naming the
operation and the graph node.
"""
from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from radixsnn.core.graph import Graph, Node, Term
from radixsnn.errors import ConversionError


# ---- values of the abstract interpretation ---------------------------------------------------------


@dataclass
class _Spikes:
    """The output of a spiking graph node (input, neuron layer, max-pool)."""

    node: str
    shape: list[int]


@dataclass
class _PendingTerm:
    src: str
    op: str
    weight: torch.Tensor
    attrs: dict
    label: str


@dataclass
class _Pre:
    """A pending pre-activation: sum of synapse terms plus a bias, not yet through a ReLU."""

    terms: list[_PendingTerm]
    bias: torch.Tensor  # (C,)
    shape: list[int]


@dataclass
class _Select:
    """A strided slice and/or zero channel padding of a spiking node (option-A shortcut)."""

    src: _Spikes
    stride: int = 1
    pad: tuple[int, int] = (0, 0)
    shape: list[int] = field(default_factory=list)


@dataclass
class _Pooled:
    """Global average pool of a spiking node, waiting for flatten + linear."""

    src: _Spikes
    positions: int


@dataclass
class _Flat:
    src: object  # _Spikes or _Pooled


@dataclass
class _Size:
    """``x.size()`` / ``x.size(0)``: only used to build a flattening ``view``."""


_RELU_FUNCS = {F.relu, torch.relu, torch.relu_}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_FLATTEN_METHODS = {"view", "reshape", "flatten"}
_IDENTITY_MODULES = (nn.Dropout, nn.Identity)


def trace_graph(model: nn.Module, input_shape, mean, std) -> tuple[Graph, dict[str, torch.Tensor]]:
    """Trace ``model`` and return ``(graph, float_params)`` with BatchNorm folded.

    ``input_shape`` is one image's ``(C, H, W)``; ``mean`` and ``std`` (per channel) are recorded in the
    input node. ``float_params`` maps each term's ``param`` key to its float weight and each
    neuron/output node name + ``".bias"`` to its float bias.
    """
    model = copy.deepcopy(model).eval().float().cpu()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:
        raise ConversionError(f"torch.fx cannot trace the model: {str(exc).splitlines()[0]}") from None
    try:
        ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
    except Exception as exc:
        raise ConversionError(f"the model fails on an input of shape {tuple(input_shape)}: {str(exc).splitlines()[0]}") from None
    return _Builder(gm, list(input_shape), mean, std).run()


class _Builder:
    def __init__(self, gm: fx.GraphModule, input_shape, mean, std):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.nodes: list[Node] = []
        self.params: dict[str, torch.Tensor] = {}
        self.values: dict[str, object] = {}
        self.input_shape = input_shape
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        self.names: set[str] = set()

    # -- driver ---------------------------------------------------------------------------------------
    def run(self):
        placeholders = 0
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                placeholders += 1
                if placeholders > 1:
                    raise ConversionError(f"model takes more than one input (node {n.name})")
                self.nodes.append(
                    Node("input", "input", list(self.input_shape), attrs={"mean": self.mean, "std": self.std})
                )
                self.names.add("input")
                self.values[n.name] = _Spikes("input", list(self.input_shape))
            elif n.op == "get_attr":
                raise ConversionError(f"unsupported operation: tensor attribute {n.target!r} used at node {n.name}")
            elif n.op == "output":
                self._output(n)
            else:
                self.values[n.name] = self._visit(n)
        graph = Graph(self.nodes)
        graph.validate()
        return graph, self.params

    def _visit(self, n: fx.Node):
        if n.op == "call_module":
            return self._module(n, self.modules[n.target])
        if n.op == "call_function":
            return self._function(n)
        if n.op == "call_method":
            return self._method(n)
        raise ConversionError(f"unsupported operation {n.op} {n.target} at node {n.name}")

    def _arg(self, n: fx.Node, i: int = 0):
        a = n.args[i]
        if isinstance(a, fx.Node):
            return self.values[a.name]
        return a

    def _shape(self, n: fx.Node) -> list[int]:
        return list(n.meta["tensor_meta"].shape[1:])

    def _unsupported(self, n: fx.Node, what: str | None = None):
        target = getattr(n.target, "__name__", n.target)
        if n.op == "call_module":
            target = f"{type(self.modules[n.target]).__name__} ({n.target})"
        msg = f"unsupported operation {target} at node {n.name}"
        raise ConversionError(msg + (f": {what}" if what else ""))

    # -- modules --------------------------------------------------------------------------------------
    def _module(self, n: fx.Node, m: nn.Module):
        x = self._arg(n)
        if isinstance(m, nn.Conv2d):
            return self._conv(n, x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups, m.padding_mode)
        if isinstance(m, nn.Linear):
            return self._linear(n, x, m.weight, m.bias)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not m.track_running_stats or m.running_mean is None:
                self._unsupported(n, "BatchNorm without running statistics cannot be folded")
            scale = m.weight.detach() / torch.sqrt(m.running_var + m.eps) if m.affine else 1 / torch.sqrt(m.running_var + m.eps)
            shift = (m.bias.detach() if m.affine else 0) - m.running_mean * scale
            return self._affine(n, x, scale, shift)
        if isinstance(m, nn.ReLU):
            return self._relu(n, x)
        if isinstance(m, nn.MaxPool2d):
            return self._maxpool(n, x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
        if isinstance(m, nn.AvgPool2d):
            return self._avgpool(n, x, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override)
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return self._adaptive_avgpool(n, x)
        if isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                self._unsupported(n, "only flatten(1) is supported")
            return self._flatten(n, x)
        if isinstance(m, _IDENTITY_MODULES):
            return x
        self._unsupported(n)

    # -- functions ------------------------------------------------------------------------------------
    def _function(self, n: fx.Node):
        f = n.target
        kw = n.kwargs
        if f in _RELU_FUNCS:
            return self._relu(n, self._arg(n))
        if f in _ADD_FUNCS:
            if "alpha" in kw:
                self._unsupported(n, "add with alpha")
            return self._add(n, self._arg(n, 0), self._arg(n, 1))
        if f is F.max_pool2d:
            p = _call_args(n, ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"])
            if p.get("return_indices"):
                self._unsupported(n, "max_pool2d with return_indices")
            k = p["kernel_size"]
            return self._maxpool(n, self._arg(n), k, p.get("stride") or k, p.get("padding", 0), p.get("dilation", 1), p.get("ceil_mode", False))
        if f is F.avg_pool2d:
            p = _call_args(n, ["input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"])
            k = p["kernel_size"]
            return self._avgpool(n, self._arg(n), k, p.get("stride") or k, p.get("padding", 0), p.get("ceil_mode", False), p.get("count_include_pad", True), p.get("divisor_override"))
        if f is F.adaptive_avg_pool2d:
            return self._adaptive_avgpool(n, self._arg(n))
        if f is torch.flatten:
            p = _call_args(n, ["input", "start_dim", "end_dim"])
            if p.get("start_dim", 0) != 1 or p.get("end_dim", -1) != -1:
                self._unsupported(n, "only flatten(x, 1) is supported")
            return self._flatten(n, self._arg(n))
        if f is F.dropout:
            return self._arg(n)
        if f is operator.getitem:
            return self._getitem(n, self._arg(n, 0), n.args[1])
        if f is F.pad:
            return self._pad(n, self._arg(n, 0), _call_args(n, ["input", "pad", "mode", "value"]))
        self._unsupported(n)

    def _method(self, n: fx.Node):
        name = n.target
        if name in ("relu", "relu_"):
            return self._relu(n, self._arg(n))
        if name in ("add", "add_"):
            return self._add(n, self._arg(n, 0), self._arg(n, 1))
        if name == "size":
            return _Size()
        if name in _FLATTEN_METHODS:
            shape = self._shape(n)
            if len(shape) != 1:
                self._unsupported(n, "only reshapes to (batch, features) are supported")
            return self._flatten(n, self._arg(n))
        if name in ("contiguous", "clone"):
            return self._arg(n)
        self._unsupported(n)

    # -- the operations -------------------------------------------------------------------------------
    def _need_spikes(self, n, x, what):
        if isinstance(x, _Select) and x.stride == 1 and x.pad == (0, 0):
            x = x.src
        if not isinstance(x, _Spikes):
            self._unsupported(n, f"{what} must follow a ReLU (or the input); got a {_describe(x)}")
        return x

    def _conv(self, n, x, weight, bias, stride, padding, dilation, groups, padding_mode):
        x = self._need_spikes(n, x, "a convolution")
        if padding_mode != "zeros" or isinstance(padding, str):
            self._unsupported(n, "only numeric zero padding is supported")
        w = weight.detach().clone()
        attrs = {"stride": list(_pair(stride)), "padding": list(_pair(padding)), "dilation": list(_pair(dilation)), "groups": int(groups)}
        term = _PendingTerm(x.node, "conv2d", w, attrs, n.target if n.op == "call_module" else n.name)
        b = bias.detach().clone() if bias is not None else torch.zeros(w.shape[0])
        return _Pre([term], b, self._shape(n))

    def _linear(self, n, x, weight, bias):
        w = weight.detach().clone()
        label = n.target if n.op == "call_module" else n.name
        if isinstance(x, _Flat) and isinstance(x.src, _Pooled):
            pooled = x.src
            term = _PendingTerm(pooled.src.node, "linear", w / pooled.positions, {"mode": "sumpool"}, label)
        elif isinstance(x, _Flat) or (isinstance(x, _Spikes) and len(x.shape) == 1):
            src = x.src if isinstance(x, _Flat) else x
            if not isinstance(src, _Spikes):
                self._unsupported(n, f"linear layer input must follow a ReLU; got a {_describe(src)}")
            term = _PendingTerm(src.node, "linear", w, {"mode": "flatten"}, label)
        else:
            self._unsupported(n, f"linear layer input must be a flattened spiking layer; got a {_describe(x)}")
        b = bias.detach().clone() if bias is not None else torch.zeros(w.shape[0])
        return _Pre([term], b, self._shape(n))

    def _affine(self, n, x, scale, shift):
        """Per-channel affine map (a folded BatchNorm)."""
        scale, shift = scale.detach().float(), shift.detach().float()
        if isinstance(x, (_Spikes, _Select)):
            x = self._as_pre(x)
        if not isinstance(x, _Pre):
            self._unsupported(n, f"BatchNorm applied to a {_describe(x)}")
        terms = []
        for t in x.terms:
            view = (-1,) + (1,) * (t.weight.dim() - 1)
            terms.append(_PendingTerm(t.src, t.op, t.weight * scale.view(view), t.attrs, t.label))
        return _Pre(terms, x.bias * scale + shift, x.shape)

    def _as_pre(self, x) -> _Pre:
        """An identity or option-A shortcut as a ``select`` term with unit gain."""
        sel = x if isinstance(x, _Select) else _Select(x, 1, (0, 0), list(x.shape))
        src = sel.src.shape
        c_out = src[0] + sum(sel.pad)
        gain = torch.ones(c_out)
        gain[: sel.pad[0]] = 0
        if sel.pad[1]:
            gain[c_out - sel.pad[1]:] = 0
        term = _PendingTerm(sel.src.node, "select", gain, {"stride": sel.stride, "pad": list(sel.pad)}, "shortcut")
        shape = [c_out] + [(d + sel.stride - 1) // sel.stride for d in src[1:]]
        return _Pre([term], torch.zeros(c_out), shape)

    def _add(self, n, a, b):
        pa = a if isinstance(a, _Pre) else self._as_pre(a) if isinstance(a, (_Spikes, _Select)) else None
        pb = b if isinstance(b, _Pre) else self._as_pre(b) if isinstance(b, (_Spikes, _Select)) else None
        if pa is None or pb is None:
            self._unsupported(n, f"addition of a {_describe(a)} and a {_describe(b)}")
        if pa.shape != pb.shape:
            self._unsupported(n, f"addition of shapes {pa.shape} and {pb.shape}")
        return _Pre(pa.terms + pb.terms, pa.bias + pb.bias, pa.shape)

    def _relu(self, n, x):
        if isinstance(x, _Spikes):
            return x  # already non-negative
        if isinstance(x, (_Select,)):
            return x
        if not isinstance(x, _Pre):
            self._unsupported(n, f"ReLU applied to a {_describe(x)}")
        return self._neuron(n.name, x)

    def _unique(self, name: str) -> str:
        base, i = name.replace(".", "_"), 1
        while name.replace(".", "_") in self.names:
            i += 1
            name = f"{base}_{i}"
        name = name.replace(".", "_")
        self.names.add(name)
        return name

    def _neuron(self, fx_name: str, pre: _Pre, kind: str = "neuron") -> _Spikes:
        main = next((t for t in pre.terms if t.op != "select"), pre.terms[0])
        name = self._unique(main.label if kind == "neuron" and main.label != "shortcut" else fx_name)
        terms = []
        for i, t in enumerate(pre.terms):
            key = f"{name}.t{i}"
            self.params[key] = t.weight.float()
            terms.append(Term(t.src, t.op, key, list(t.weight.shape), dict(t.attrs)))
        self.params[f"{name}.bias"] = pre.bias.float()
        labels = [t.label for t in pre.terms]
        self.nodes.append(Node(name, kind, list(pre.shape), terms, attrs={"label": "+".join(labels)}))
        return _Spikes(name, list(pre.shape))

    def _maxpool(self, n, x, kernel, stride, padding, dilation, ceil_mode):
        x = self._need_spikes(n, x, "max-pooling")
        if x.node == "input":
            self._unsupported(n, "max-pooling of the input image")
        if _pair(dilation) != (1, 1) or ceil_mode:
            self._unsupported(n, "max-pooling with dilation or ceil_mode")
        name = self._unique(n.target if n.op == "call_module" else n.name)
        shape = self._shape(n)
        attrs = {"kernel": list(_pair(kernel)), "stride": list(_pair(stride or kernel)), "padding": list(_pair(padding))}
        self.nodes.append(Node(name, "maxpool", shape, src=x.node, attrs=attrs))
        return _Spikes(name, shape)

    def _avgpool(self, n, x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
        x = self._need_spikes(n, x, "average pooling")
        shape = self._shape(n)
        if shape[1:] == [1, 1] and _pair(padding) == (0, 0):
            return _Pooled(x, x.shape[1] * x.shape[2])
        if ceil_mode or divisor_override or (_pair(padding) != (0, 0) and not count_include_pad):
            self._unsupported(n, "average pooling with ceil_mode, divisor_override or count_include_pad=False")
        kh, kw = _pair(kernel)
        c = x.shape[0]
        w = torch.full((c, 1, kh, kw), 1.0 / (kh * kw))
        attrs = {"stride": list(_pair(stride or kernel)), "padding": list(_pair(padding)), "dilation": [1, 1], "groups": c}
        label = n.target if n.op == "call_module" else n.name
        pre = _Pre([_PendingTerm(x.node, "conv2d", w, attrs, label)], torch.zeros(c), shape)
        return self._neuron(n.name, pre)  # a layer of pooling neurons (their own T-bit output)

    def _adaptive_avgpool(self, n, x):
        x = self._need_spikes(n, x, "average pooling")
        shape = self._shape(n)
        if shape[1:] == [1, 1]:
            return _Pooled(x, x.shape[1] * x.shape[2])
        if x.shape[1] % shape[1] or x.shape[2] % shape[2]:
            self._unsupported(n, "adaptive average pooling to a size that does not divide the input")
        k = (x.shape[1] // shape[1], x.shape[2] // shape[2])
        return self._avgpool(n, x, k, k, 0, False, True, None)

    def _flatten(self, n, x):
        if isinstance(x, _Pooled):
            return _Flat(x)
        if isinstance(x, _Spikes):
            return _Flat(x) if len(x.shape) > 1 else x
        if isinstance(x, _Flat):
            return x
        self._unsupported(n, f"flatten of a {_describe(x)}")

    def _getitem(self, n, x, index):
        if isinstance(x, _Size):
            return x
        sel = x if isinstance(x, _Select) else _Select(x, 1, (0, 0), list(x.shape)) if isinstance(x, _Spikes) else None
        if sel is None or not isinstance(index, tuple):
            self._unsupported(n, f"indexing a {_describe(x)}")
        full = slice(None)
        parts = list(index) + [full] * (4 - len(index))
        if len(parts) != 4 or parts[0] != full or parts[1] != full or sel.pad != (0, 0) or sel.stride != 1:
            self._unsupported(n, "only x[:, :, ::s, ::s] subsampling is supported")
        sh, sw = parts[2], parts[3]
        if not (isinstance(sh, slice) and isinstance(sw, slice) and sh.start in (None, 0) and sw.start in (None, 0)
                and sh.stop is None and sw.stop is None and (sh.step or 1) == (sw.step or 1)):
            self._unsupported(n, "only x[:, :, ::s, ::s] subsampling is supported")
        return _Select(sel.src, sh.step or 1, (0, 0), self._shape(n))

    def _pad(self, n, x, p):
        sel = x if isinstance(x, _Select) else _Select(x, 1, (0, 0), list(x.shape)) if isinstance(x, _Spikes) else None
        pad = list(p["pad"])
        if sel is None or p.get("mode", "constant") != "constant" or (p.get("value") or 0) != 0:
            self._unsupported(n, "only zero padding of a spiking layer's channels is supported")
        if len(pad) != 6 or any(pad[:4]) or sel.pad != (0, 0):
            self._unsupported(n, "only channel padding F.pad(x, (0, 0, 0, 0, a, b)) is supported")
        return _Select(sel.src, sel.stride, (int(pad[4]), int(pad[5])), self._shape(n))

    def _output(self, n: fx.Node):
        out = n.args[0]
        if not isinstance(out, fx.Node):
            raise ConversionError(f"model output at node {n.name} must be a single tensor")
        x = self.values[out.name]
        if not isinstance(x, _Pre):
            raise ConversionError(f"the model must end with a linear or convolution layer (logits), not a {_describe(x)}")
        self._neuron("output", x, kind="output")


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _call_args(n: fx.Node, names: list[str]) -> dict:
    out = dict(zip(names, n.args))
    out.update(n.kwargs)
    return out


def _describe(x) -> str:
    return {
        _Spikes: "spiking layer",
        _Pre: "pre-activation (no ReLU in between)",
        _Select: "sliced/padded spiking layer",
        _Pooled: "global average pool",
        _Flat: "flattened tensor",
        _Size: "tensor size",
    }.get(type(x), type(x).__name__)
