"""Tracing: a float CNN (``nn.Module``) -> the :class:`~radixsnn.core.graph.Graph` of its radix SNN.

:func:`trace_graph` traces the model with torch.fx on a copy in eval mode. The tracer runs the model on
an example input as it records it, so a ``forward`` that computes with sizes (``N, C, H, W = x.size()``,
``int(C * ratio)``) traces too: sizes become constants of the graph (shape specialization). The traced
operations are then rewritten into graph nodes by abstract interpretation over four kinds of value:

* an **activation** (:class:`_Act`): spike trains -- the input, a layer of neurons, a max-pool -- or a view
  of several: each channel is a channel of some spiking node (or zero), so channel concatenation,
  slices, ``chunk`` / ``split``, channel shuffles and option-A shortcuts (stride-2 subsampling plus zero
  channels) cost nothing: a synapse term simply reads the channels it needs (its ``channels`` gather);
* a **pre-activation** (:class:`_Pre`): a sum of synapse terms from activations plus a bias, not yet
  through a ReLU. BatchNorm (or any per-channel affine map, or a scalar factor) is folded into its
  terms, additions concatenate terms (residual sums, identity shortcuts), 1x1 convolutions and average
  pools of it are composed into its terms, and it may be used several times (pre-activation ResNets,
  DenseNets keep one until a ReLU consumes it). A ReLU turns it into a layer of radix neurons; a clip
  at ``c`` (``ReLU6``, ``Hardtanh(0, c)``, ``clamp(0, c)``) into neurons whose saturation is at most ``c``;
* a **concatenation of pre-activations** (:class:`_PreCat`): the parts stay separate (a ReLU of a
  concatenation is the concatenation of the parts' ReLUs);
* a global average pool and flattened views, which only the classifier may read.

The last linear layer becomes the non-spiking readout. The user's model is never modified. An operation a
radix neuron cannot compute raises :class:`ConversionError` naming the operation, the graph node and why.
"""
from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.node import map_aggregate
from torch.fx.passes.shape_prop import ShapeProp

from radixsnn.core.graph import Graph, Node, Term
from radixsnn.errors import ConversionError

# ---- tracing with concrete shapes -------------------------------------------------------------------


class _ConcreteProxy(fx.Proxy):
    """An fx proxy that also carries the value its node takes on the example input, so that sizes are
    plain Python numbers while tracing (``x.size()``, ``x.shape``, ``x.dim()``, ``len(x)``)."""

    value = None

    def __getattr__(self, name):
        if name in ("shape", "ndim", "dtype", "device", "is_cuda"):
            return getattr(self.value, name)
        if name in ("size", "dim", "numel", "nelement"):
            value = self.value
            return lambda *args, **kwargs: getattr(value, name)(*args, **kwargs)
        return super().__getattr__(name)

    def __len__(self):
        return len(self.value)


class _ConcreteTracer(fx.Tracer):
    def __init__(self, example: torch.Tensor):
        super().__init__()
        self.example = example
        self._evaluating = False

    def proxy(self, node):
        return _ConcreteProxy(node, self)

    def call_module(self, m, forward, args, kwargs):
        if self._evaluating:  # computing a value: run the module itself, not its trace
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if self._evaluating:  # computing a value: the attribute itself
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        if isinstance(proxy, _ConcreteProxy):
            proxy.value = self._evaluate(kind, target, args, kwargs)
        return proxy

    def _evaluate(self, kind, target, args, kwargs):
        def concrete(a):
            return map_aggregate(a, lambda v: v.value if isinstance(v, _ConcreteProxy) else v)

        args, kwargs = concrete(args), concrete(kwargs)
        self._evaluating = True
        try:
            return self._run(kind, target, args, kwargs)
        finally:
            self._evaluating = False

    def _run(self, kind, target, args, kwargs):
        with torch.no_grad():
            if kind == "placeholder":
                return self.example
            if kind == "get_attr":
                value = self.root
                for part in target.split("."):
                    value = getattr(value, part)
                return value
            if kind == "call_function":
                return target(*args, **kwargs)
            if kind == "call_method":
                return getattr(args[0], target)(*args[1:], **kwargs)
            if kind == "call_module":
                return self.root.get_submodule(target)(*args, **kwargs)
        return None


def _trace(model: nn.Module, input_shape) -> fx.GraphModule:
    tracer = _ConcreteTracer(torch.zeros(1, *input_shape))
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types for untraceable code
        raise ConversionError(f"torch.fx cannot trace the model: {' '.join(str(exc).split())[:300]}") from None
    return fx.GraphModule(tracer.root, graph)


# ---- values of the abstract interpretation ---------------------------------------------------------


@dataclass
class _Act:
    """Spike trains: channel ``i`` is channel ``chans[i][1]`` of spiking node ``chans[i][0]`` (``(None, -1)``:
    a zero channel); ``stride`` > 1 subsamples the sources spatially (an option-A shortcut)."""

    chans: list[tuple[str | None, int]]
    spatial: list[int]
    stride: int = 1

    @property
    def shape(self) -> list[int]:
        return [len(self.chans)] + list(self.spatial)

    def sources(self) -> list[str]:
        return list(dict.fromkeys(n for n, _ in self.chans if n is not None))

    def plain(self, node_channels: dict[str, int]) -> str | None:
        """The node name when this is exactly one spiking node, all its channels in order, unsubsampled."""
        srcs = self.sources()
        if len(srcs) == 1 and self.stride == 1 and self.chans == [(srcs[0], c) for c in range(node_channels[srcs[0]])]:
            return srcs[0]
        return None


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
class _PreCat:
    """A channel concatenation of pre-activations and activations, kept in parts."""

    parts: list  # of _Pre and _Act

    @property
    def shape(self) -> list[int]:
        return [sum(p.shape[0] for p in self.parts)] + list(self.parts[0].shape[1:])


@dataclass
class _Pooled:
    """Global average pool of an activation, waiting for flatten + linear."""

    src: _Act
    positions: int


@dataclass
class _Flat:
    src: object  # _Act or _Pooled


@dataclass
class _Shaped:
    """An activation in the middle of a reshape (a channel shuffle's 5-D view): ``index`` holds, for each
    element of the current shape, its flat position in ``act``."""

    act: _Act
    index: torch.Tensor


@dataclass
class _Tuple:
    items: list = field(default_factory=list)


_RELU_FUNCS = {F.relu, torch.relu, torch.relu_}
_RELU_METHODS = {"relu", "relu_"}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_MUL_FUNCS = {operator.mul, operator.imul, torch.mul}
_SHAPE_METHODS = {"view", "reshape", "permute", "transpose", "flatten"}
_SHAPE_FUNCS = {torch.reshape, torch.permute, torch.transpose, torch.flatten}
_PASS_METHODS = {"contiguous", "clone", "detach"}
_IDENTITY_MODULES = (nn.Identity, nn.modules.dropout._DropoutNd)

#: Why a radix neuron cannot compute an operation (named in the ConversionError).
_WHY = {
    "activation": "a radix neuron only sums weighted spikes and then rectifies and saturates its sum: "
                  "ReLU and clips at a constant are all it computes",
    "product": "a synapse multiplies a spike by a fixed weight, never by another activation "
               "(products of activations: gating, squeeze-and-excitation, attention)",
    "norm": "the statistics of this normalization come from the activations themselves at run time",
}
_UNSUPPORTED_FUNCS = {
    torch.sigmoid: "activation", F.sigmoid: "activation", torch.tanh: "activation", F.tanh: "activation",
    F.silu: "activation", F.gelu: "activation", F.hardswish: "activation", F.hardsigmoid: "activation",
    F.leaky_relu: "activation", F.elu: "activation", F.softplus: "activation", F.mish: "activation",
    F.softmax: "activation", torch.softmax: "activation", F.log_softmax: "activation", torch.exp: "activation",
    torch.matmul: "product", torch.bmm: "product", F.layer_norm: "norm", F.group_norm: "norm",
    F.instance_norm: "norm",
}
_UNSUPPORTED_METHODS = {"sigmoid": "activation", "tanh": "activation", "softmax": "activation", "exp": "activation",
                        "matmul": "product", "bmm": "product"}
_UNSUPPORTED_MODULES = (
    (nn.Sigmoid, "activation"), (nn.Tanh, "activation"), (nn.SiLU, "activation"), (nn.GELU, "activation"),
    (nn.Hardswish, "activation"), (nn.Hardsigmoid, "activation"), (nn.LeakyReLU, "activation"), (nn.ELU, "activation"),
    (nn.PReLU, "activation"), (nn.Softmax, "activation"), (nn.Mish, "activation"), (nn.Softplus, "activation"),
    (nn.LayerNorm, "norm"), (nn.GroupNorm, "norm"), (nn.modules.instancenorm._InstanceNorm, "norm"),
    (nn.MultiheadAttention, "product"),
)


def trace_graph(model: nn.Module, input_shape, mean, std) -> tuple[Graph, dict[str, torch.Tensor]]:
    """Trace ``model`` and return ``(graph, float_params)`` with BatchNorm folded.

    ``input_shape`` is one image's ``(C, H, W)``; ``mean`` and ``std`` (per channel) are recorded in the
    input node. ``float_params`` maps each term's ``param`` key to its float weight and each
    neuron/output node name + ``".bias"`` to its float bias.
    """
    model = copy.deepcopy(model).eval().float().cpu()
    gm = _trace(model, input_shape)
    try:
        ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
    except Exception as exc:
        raise ConversionError(f"the model fails on an input of shape {tuple(input_shape)}: {' '.join(str(exc).split())[:300]}") from None
    return _Builder(gm, list(input_shape), mean, std).run()


class _Builder:
    def __init__(self, gm: fx.GraphModule, input_shape, mean, std):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.nodes: list[Node] = []
        self.channels: dict[str, int] = {}
        self.shapes: dict[str, list[int]] = {}
        self.params: dict[str, torch.Tensor] = {}
        self.values: dict[str, object] = {}
        self.input_shape = input_shape
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        self.names: set[str] = set()
        self.pools: dict[tuple, str] = {}

    # -- driver ---------------------------------------------------------------------------------------
    def _prescan(self) -> None:
        """Stop at the first operation no radix neuron computes, before anything is built (so the error
        names it, not some consequence of it further on)."""
        for n in self.gm.graph.nodes:
            if n.op == "call_module":
                m = self.modules[n.target]
                for kind, why in _UNSUPPORTED_MODULES:
                    if isinstance(m, kind):
                        self._unsupported(n, _WHY[why])
            elif n.op == "call_function" and n.target in _UNSUPPORTED_FUNCS:
                self._unsupported(n, _WHY[_UNSUPPORTED_FUNCS[n.target]])
            elif n.op == "call_method" and n.target in _UNSUPPORTED_METHODS:
                self._unsupported(n, _WHY[_UNSUPPORTED_METHODS[n.target]])
            products = _MUL_FUNCS | {operator.truediv, torch.div}
            is_product = (n.op == "call_function" and n.target in products) or (n.op == "call_method" and n.target in ("mul", "mul_", "div", "div_"))
            if is_product and sum(isinstance(a, fx.Node) for a in n.args[:2]) == 2:
                self._unsupported(n, _WHY["product"])

    def run(self):
        self._prescan()
        placeholders = 0
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                placeholders += 1
                if placeholders > 1:
                    raise ConversionError(f"model takes more than one input (node {n.name})")
                self._add_node(Node("input", "input", list(self.input_shape), attrs={"mean": self.mean, "std": self.std}))
                self.values[n.name] = _Act([("input", c) for c in range(self.input_shape[0])], list(self.input_shape[1:]))
            elif n.op == "get_attr":
                raise ConversionError(f"unsupported operation: the tensor attribute {n.target!r} is used as data at node "
                                      f"{n.name} (a radix SNN's synapses are the weights of convolutions and linear layers)")
            elif n.op == "output":
                self._output(n)
            else:
                self.values[n.name] = self._visit(n)
        graph = Graph(self.nodes)
        graph.validate()
        return graph, self.params

    def _add_node(self, node: Node) -> None:
        self.nodes.append(node)
        self.names.add(node.name)
        self.channels[node.name] = node.shape[0]
        self.shapes[node.name] = list(node.shape)

    def _visit(self, n: fx.Node):
        if n.op == "call_module":
            return self._module(n, self.modules[n.target])
        if n.op == "call_function":
            return self._function(n)
        if n.op == "call_method":
            return self._method(n)
        raise ConversionError(f"unsupported operation {n.op} {n.target} at node {n.name}")

    def _value(self, a):
        return map_aggregate(a, lambda v: self.values[v.name] if isinstance(v, fx.Node) else v)

    def _arg(self, n: fx.Node, i: int = 0):
        return self._value(n.args[i])

    def _shape(self, n: fx.Node) -> list[int]:
        return list(n.meta["tensor_meta"].shape[1:])

    def _label(self, n: fx.Node) -> str:
        return n.target if n.op == "call_module" else n.name

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
                self._unsupported(n, "BatchNorm without running statistics cannot be folded into the weights")
            scale = m.weight.detach() / torch.sqrt(m.running_var + m.eps) if m.affine else 1 / torch.sqrt(m.running_var + m.eps)
            shift = (m.bias.detach() if m.affine else 0) - m.running_mean * scale
            return self._affine(n, x, scale, shift)
        if isinstance(m, nn.ReLU):
            return self._relu(n, x)
        if isinstance(m, nn.ReLU6):
            return self._relu(n, x, clip=6.0)
        if isinstance(m, nn.Hardtanh):
            return self._hardtanh(n, x, m.min_val, m.max_val)
        if isinstance(m, nn.MaxPool2d):
            return self._maxpool(n, x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
        if isinstance(m, nn.AvgPool2d):
            return self._avgpool(n, x, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override)
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return self._adaptive_avgpool(n, x)
        if isinstance(m, nn.Flatten):
            return self._reshape(n, x, lambda t: t.flatten(m.start_dim, m.end_dim))
        if isinstance(m, _IDENTITY_MODULES):
            return x
        for kind, why in _UNSUPPORTED_MODULES:
            if isinstance(m, kind):
                self._unsupported(n, _WHY[why])
        self._unsupported(n)

    # -- functions ------------------------------------------------------------------------------------
    def _function(self, n: fx.Node):
        f = n.target
        kw = n.kwargs
        if f in _RELU_FUNCS:
            return self._relu(n, self._arg(n))
        if f is F.relu6:
            return self._relu(n, self._arg(n), clip=6.0)
        if f is F.hardtanh:
            p = _call_args(n, ["input", "min_val", "max_val", "inplace"])
            return self._hardtanh(n, self._arg(n), p.get("min_val", -1.0), p.get("max_val", 1.0))
        if f in (torch.clamp, torch.clip, torch.clamp_min):
            p = _call_args(n, ["input", "min", "max"])
            return self._clamp(n, self._arg(n), p.get("min"), p.get("max"))
        if f in _ADD_FUNCS:
            if "alpha" in kw:
                self._unsupported(n, "add with alpha")
            return self._add(n, self._arg(n, 0), self._arg(n, 1))
        if f in _MUL_FUNCS or f in (operator.truediv, torch.div):
            return self._scalar(n, self._arg(n, 0), self._arg(n, 1), divide=f in (operator.truediv, torch.div))
        if f is F.max_pool2d:
            p = _call_args(n, ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"])
            if p.get("return_indices"):
                self._unsupported(n, "max_pool2d with return_indices")
            k = p["kernel_size"]
            return self._maxpool(n, self._arg(n), k, p.get("stride") or k, p.get("padding", 0), p.get("dilation", 1), p.get("ceil_mode", False))
        if f is F.avg_pool2d:
            p = _call_args(n, ["input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"])
            k = p["kernel_size"]
            return self._avgpool(n, self._arg(n), k, p.get("stride") or k, p.get("padding", 0), p.get("ceil_mode", False),
                                 p.get("count_include_pad", True), p.get("divisor_override"))
        if f is F.adaptive_avg_pool2d:
            return self._adaptive_avgpool(n, self._arg(n))
        if f is torch.mean:
            p = _call_args(n, ["input", "dim", "keepdim"])
            return self._mean(n, self._arg(n), p.get("dim"))
        if f in _SHAPE_FUNCS:
            return self._reshape(n, self._arg(n), lambda t: f(t, *n.args[1:], **n.kwargs))
        if f in (F.dropout, F.dropout2d, F.dropout1d, F.alpha_dropout, F.feature_alpha_dropout):
            return self._arg(n)
        if f is operator.getitem:
            return self._getitem(n, self._arg(n, 0), n.args[1])
        if f is F.pad:
            return self._pad(n, self._arg(n, 0), _call_args(n, ["input", "pad", "mode", "value"]))
        if f is torch.cat:
            p = _call_args(n, ["tensors", "dim"])
            return self._cat(n, self._value(p["tensors"]), p.get("dim", 0))
        if f in (torch.chunk, torch.split, torch.tensor_split):
            return self._split(n, self._arg(n), f.__name__, n.args[1], _call_args(n, ["input", "sizes", "dim"]).get("dim", 0))
        if f in _UNSUPPORTED_FUNCS:
            self._unsupported(n, _WHY[_UNSUPPORTED_FUNCS[f]])
        self._unsupported(n)

    def _method(self, n: fx.Node):
        name = n.target
        x = self._arg(n)
        if name in _RELU_METHODS:
            return self._relu(n, x)
        if name in ("clamp", "clamp_", "clip", "clamp_min", "clamp_min_"):
            p = _call_args(n, ["self", "min", "max"])
            return self._clamp(n, x, p.get("min"), p.get("max"))
        if name in ("add", "add_"):
            return self._add(n, x, self._arg(n, 1))
        if name in ("mul", "mul_", "div", "div_"):
            return self._scalar(n, x, self._arg(n, 1), divide=name.startswith("div"))
        if name in _SHAPE_METHODS:
            return self._reshape(n, x, lambda t: getattr(t, name)(*n.args[1:], **n.kwargs))
        if name == "mean":
            return self._mean(n, x, _call_args(n, ["self", "dim", "keepdim"]).get("dim"))
        if name in ("chunk", "split", "tensor_split"):
            return self._split(n, x, name, n.args[1], _call_args(n, ["self", "sizes", "dim"]).get("dim", 0))
        if name in _PASS_METHODS:
            return _Shaped(x.act, x.index.contiguous()) if isinstance(x, _Shaped) else x
        if name in _UNSUPPORTED_METHODS:
            self._unsupported(n, _WHY[_UNSUPPORTED_METHODS[name]])
        self._unsupported(n)

    # -- activations as terms -------------------------------------------------------------------------
    def _act_terms(self, n, x: _Act, op: str, weight: torch.Tensor, attrs: dict, label: str) -> list[_PendingTerm]:
        """The terms by which a synapse map with ``weight`` over the channels of ``x`` reads their sources.

        ``weight``'s input axis (dim 1) runs over ``x``'s channels (``op`` conv2d: ``(O, C/g, k, k)``;
        linear: ``(O, C * positions)`` flattened channel-major, or ``(O, C)`` for a sum-pool)."""
        if x.stride != 1:
            self._unsupported(n, "only a shortcut addition may read a subsampled (option-A) activation")
        plain = x.plain(self.channels)
        if plain is not None:
            return [_PendingTerm(plain, op, weight, dict(attrs), label)]
        groups = attrs.get("groups", 1) if op == "conv2d" else 1
        positions = _numel(x.spatial) if op == "linear" and attrs["mode"] == "flatten" else 1
        terms = []
        for src in x.sources():
            cols = [i for i, (s, _) in enumerate(x.chans) if s == src]
            if groups > 1 and len(cols) != len(x.chans):
                self._unsupported(n, "a grouped convolution over channels of several layers or zero channels")
            picked = weight[:, _expand(cols, positions)] if groups == 1 else weight
            read = [x.chans[i][1] for i in cols]
            gathered = {} if read == list(range(self.channels[src])) else {"channels": read}
            terms.append(_PendingTerm(src, op, picked, {**attrs, **gathered}, label))
        return terms

    def _as_pre(self, x: _Act) -> _Pre:
        """An activation as a pre-activation: one ``select`` term per source with unit gains."""
        c_out = len(x.chans)
        terms = []
        for src in x.sources():
            channels = [c if s == src else -1 for s, c in x.chans]
            gain = torch.tensor([1.0 if s == src else 0.0 for s, _ in x.chans])
            attrs = _select_attrs(channels, x.stride, self.channels[src])
            terms.append(_PendingTerm(src, "select", gain, attrs, "shortcut"))
        return _Pre(terms, torch.zeros(c_out), x.shape)

    def _need_act(self, n, x, what: str) -> _Act:
        if isinstance(x, _PreCat) and all(isinstance(p, _Act) for p in x.parts):
            x = _cat_acts(x.parts)
        if not isinstance(x, _Act):
            self._unsupported(n, f"{what} must follow a ReLU (or read the input); got a {_describe(x)}")
        return x

    # -- the operations -------------------------------------------------------------------------------
    def _conv(self, n, x, weight, bias, stride, padding, dilation, groups, padding_mode):
        if padding_mode != "zeros" or isinstance(padding, str):
            self._unsupported(n, "only numeric zero padding is supported")
        w = weight.detach().clone()
        b = bias.detach().clone() if bias is not None else torch.zeros(w.shape[0])
        attrs = {"stride": list(_pair(stride)), "padding": list(_pair(padding)), "dilation": list(_pair(dilation)), "groups": int(groups)}
        label = self._label(n)
        if isinstance(x, (_Pre, _PreCat)) and not (isinstance(x, _PreCat) and all(isinstance(p, _Act) for p in x.parts)):
            return self._compose_conv(n, x, w, b, attrs, label)
        x = self._need_act(n, x, "a convolution")
        shape = self._shape(n)
        g = attrs["groups"]
        if g == 1 or len(x.sources()) <= 1:
            return _Pre(self._act_terms(n, x, "conv2d", w, attrs, label), b, shape)
        # groups over channels of several layers: each run of groups that reads one layer is one part
        per_in, per_out = len(x.chans) // g, w.shape[0] // g
        runs: list[list[int]] = []
        keys: list[str | None] = []
        for k in range(g):
            srcs = {src for src, _ in x.chans[k * per_in:(k + 1) * per_in]}
            key = next(iter(srcs)) if len(srcs) == 1 and None not in srcs else None  # None: a mixed group
            if runs and key is not None and keys[-1] == key:
                runs[-1].append(k)
            else:
                runs.append([k])
                keys.append(key)
        parts = []
        for run in runs:
            lo, hi = run[0], run[-1] + 1
            sub = _Act(x.chans[lo * per_in:hi * per_in], x.spatial, x.stride)
            single = len(sub.sources()) == 1
            w_run = w[lo * per_out:hi * per_out]
            if not single:  # one group reading several layers: a dense map within the group
                terms = self._act_terms(n, sub, "conv2d", w_run, {**attrs, "groups": 1}, label)
            else:
                terms = self._act_terms(n, sub, "conv2d", w_run, {**attrs, "groups": hi - lo}, label)
            parts.append(_Pre(terms, b[lo * per_out:hi * per_out], [(hi - lo) * per_out] + shape[1:]))
        return _PreCat(parts)

    def _compose_conv(self, n, x, w, b, attrs, label) -> _Pre:
        """A 1x1 convolution of a pre-activation: composed into the pre-activation's terms."""
        if list(w.shape[2:]) != [1, 1] or attrs["padding"] != [0, 0] or attrs["groups"] != 1:
            self._unsupported(n, "a convolution must follow a ReLU (or read the input), but this one reads a pre-activation, "
                                 "which no radix neuron emits; only 1x1 convolutions of pre-activations are composed into "
                                 "the terms before them")
        mat = w[:, :, 0, 0]
        s = attrs["stride"]
        terms, bias = [], b.clone()
        offset = 0
        for part in _parts(x):
            rows = part.shape[0]
            block = mat[:, offset:offset + rows]
            offset += rows
            pre = self._as_pre(part) if isinstance(part, _Act) else part
            bias = bias + block @ pre.bias
            for t in pre.terms:
                terms.append(self._compose_1x1(n, t, block, s, label))
        return _Pre(terms, bias, self._shape(n))

    def _compose_1x1(self, n, t: _PendingTerm, block: torch.Tensor, stride, label) -> _PendingTerm:
        if t.op == "conv2d":
            a = t.attrs
            w = t.weight
            if a["groups"] > 1:
                w = _dense_conv(w, a["groups"])
            composed = torch.einsum("om,mikl->oikl", block, w)
            attrs = {**a, "groups": 1, "stride": [a["stride"][0] * stride[0], a["stride"][1] * stride[1]]}
            return _PendingTerm(t.src, "conv2d", composed, attrs, f"{label}*{t.label}")
        if t.op == "select":
            a = t.attrs
            if a["stride"] != 1 and stride != [1, 1] or stride[0] != stride[1]:
                self._unsupported(n, "a strided 1x1 convolution of a subsampled shortcut")
            src_channels = self.channels[t.src]
            chans = _select_channels(a, src_channels)
            w = torch.zeros(block.shape[0], len(chans), 1, 1)
            for j, c in enumerate(chans):
                if c >= 0:
                    w[:, j, 0, 0] = block[:, j] * t.weight[j]
            keep = [j for j, c in enumerate(chans) if c >= 0]
            gathered = [chans[j] for j in keep]
            attrs = {"stride": [a["stride"] * stride[0]] * 2, "padding": [0, 0], "dilation": [1, 1], "groups": 1}
            if gathered != list(range(src_channels)):
                attrs["channels"] = gathered
            return _PendingTerm(t.src, "conv2d", w[:, keep], attrs, f"{label}*{t.label}")
        self._unsupported(n, "a convolution of a flattened pre-activation")

    def _linear(self, n, x, weight, bias):
        w = weight.detach().clone()
        b = bias.detach().clone() if bias is not None else torch.zeros(w.shape[0])
        label = self._label(n)
        if isinstance(x, _Pooled) or isinstance(x, _Flat) and isinstance(x.src, _Pooled):
            pooled = x if isinstance(x, _Pooled) else x.src
            terms = self._act_terms(n, pooled.src, "linear", w / pooled.positions, {"mode": "sumpool"}, label)
        elif isinstance(x, _Flat) or (isinstance(x, _Act) and not x.spatial):
            src = x.src if isinstance(x, _Flat) else x
            terms = self._act_terms(n, src, "linear", w, {"mode": "flatten"}, label)
        elif isinstance(x, _Pre) and len(x.shape) == 1:
            return self._compose_linear(n, x, w, b, label)
        else:
            self._unsupported(n, f"linear layer input must be a flattened spiking layer; got a {_describe(x)}")
        return _Pre(terms, b, self._shape(n))

    def _compose_linear(self, n, x: _Pre, w, b, label) -> _Pre:
        """A linear layer of a 1-D pre-activation (two linear layers in a row): one composed linear map."""
        terms = []
        for t in x.terms:
            if t.op != "linear":
                self._unsupported(n, "a linear layer of a pre-activation with shortcut terms")
            terms.append(_PendingTerm(t.src, "linear", w @ t.weight, dict(t.attrs), f"{label}*{t.label}"))
        return _Pre(terms, w @ x.bias + b, self._shape(n))

    def _affine(self, n, x, scale, shift):
        """Per-channel affine map (a folded BatchNorm): scales the terms of a pre-activation."""
        scale, shift = scale.detach().float(), shift.detach().float()
        if isinstance(x, _PreCat):
            out, offset = [], 0
            for part in x.parts:
                c = part.shape[0]
                out.append(self._affine(n, part, scale[offset:offset + c], shift[offset:offset + c]))
                offset += c
            return _PreCat(out)
        if isinstance(x, _Act):
            x = self._as_pre(x)
        if not isinstance(x, _Pre):
            self._unsupported(n, f"BatchNorm applied to a {_describe(x)}")
        terms = []
        for t in x.terms:
            view = (-1,) + (1,) * (t.weight.dim() - 1)
            terms.append(_PendingTerm(t.src, t.op, t.weight * scale.view(view), t.attrs, t.label))
        return _Pre(terms, x.bias * scale + shift, x.shape)

    def _scalar(self, n, a, b, divide: bool):
        """``x * c`` or ``x / c`` for a constant ``c``: an affine map."""
        if isinstance(a, (int, float)) and not divide:
            a, b = b, a
        if not isinstance(b, (int, float)) or isinstance(b, bool) or not math.isfinite(b) or (divide and b == 0):
            self._unsupported(n, _WHY["product"])
        c = 1.0 / b if divide else float(b)
        channels = a.shape[0] if hasattr(a, "shape") else None
        if channels is None:
            self._unsupported(n, f"scaling a {_describe(a)}")
        return self._affine(n, a, torch.full((channels,), c), torch.zeros(channels))

    def _add(self, n, a, b):
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            a, b = b, a
        if isinstance(b, (int, float)) and not isinstance(b, bool):  # a constant: the bias moves
            if not math.isfinite(b) or _parts_or_none(a) is None:
                self._unsupported(n, f"addition of a {_describe(a)} and {b!r}")
            if b == 0:
                return a
            c = a.shape[0]
            return self._affine(n, a, torch.ones(c), torch.full((c,), float(b)))
        parts_a, parts_b = _split_parts(_parts_or_none(a), _parts_or_none(b))
        if parts_a is None or parts_b is None:
            self._unsupported(n, f"addition of a {_describe(a)} and a {_describe(b)}")
        if [p.shape for p in parts_a] != [p.shape for p in parts_b]:
            self._unsupported(n, f"addition of shapes {_shape_of(a)} and {_shape_of(b)}")
        out = []
        for pa, pb in zip(parts_a, parts_b):
            pa = self._as_pre(pa) if isinstance(pa, _Act) else pa
            pb = self._as_pre(pb) if isinstance(pb, _Act) else pb
            out.append(_Pre(pa.terms + pb.terms, pa.bias + pb.bias, pa.shape))
        return out[0] if len(out) == 1 else _PreCat(out)

    def _relu(self, n, x, clip: float | None = None):
        if isinstance(x, _PreCat):
            return _cat_acts([self._relu(n, p, clip) for p in x.parts])
        if isinstance(x, _Act):
            if clip is None:
                return x  # already non-negative
            return self._neuron(n.name, self._as_pre(x), clip=clip)  # spikes above the clip need neurons of their own
        if not isinstance(x, _Pre):
            self._unsupported(n, f"ReLU applied to a {_describe(x)}")
        return self._neuron(n.name, x, clip=clip)

    def _hardtanh(self, n, x, lo, hi):
        if lo != 0:
            self._unsupported(n, f"Hardtanh({lo}, {hi}): {_WHY['activation']} (the lower bound must be 0)")
        return self._relu(n, x, clip=float(hi))

    def _clamp(self, n, x, lo, hi):
        if lo is None or lo != 0 or (hi is not None and not (isinstance(hi, (int, float)) and hi > 0)):
            self._unsupported(n, f"clamp({lo}, {hi}): {_WHY['activation']} (min must be 0, max a positive constant)")
        return self._relu(n, x, clip=None if hi is None else float(hi))

    def _unique(self, name: str) -> str:
        base, i = name.replace(".", "_"), 1
        while name.replace(".", "_") in self.names:
            i += 1
            name = f"{base}_{i}"
        name = name.replace(".", "_")
        self.names.add(name)
        return name

    def _neuron(self, fx_name: str, pre: _Pre, kind: str = "neuron", clip: float | None = None) -> _Act:
        main = next((t for t in pre.terms if t.op != "select"), pre.terms[0])
        name = self._unique(main.label if kind == "neuron" and main.label != "shortcut" else fx_name)
        terms = []
        for i, t in enumerate(pre.terms):
            key = f"{name}.t{i}"
            self.params[key] = t.weight.float()
            terms.append(Term(t.src, t.op, key, list(t.weight.shape), dict(t.attrs)))
        self.params[f"{name}.bias"] = pre.bias.float()
        labels = list(dict.fromkeys(t.label for t in pre.terms))
        attrs = {"label": "+".join(labels)}
        if clip is not None:
            if not (math.isfinite(clip) and clip > 0):
                raise ConversionError(f"a clip at {clip} at node {fx_name}: the clip must be a positive constant")
            attrs["clip"] = clip
        self._add_node(Node(name, kind, list(pre.shape), terms, attrs=attrs))
        return _Act([(name, c) for c in range(pre.shape[0])], list(pre.shape[1:]))

    def _maxpool(self, n, x, kernel, stride, padding, dilation, ceil_mode):
        x = self._need_act(n, x, "max-pooling")
        if "input" in x.sources():
            self._unsupported(n, "max-pooling of the input image")
        if _pair(dilation) != (1, 1) or ceil_mode or x.stride != 1:
            self._unsupported(n, "max-pooling with dilation, ceil_mode or of a subsampled shortcut")
        attrs = {"kernel": list(_pair(kernel)), "stride": list(_pair(stride or kernel)), "padding": list(_pair(padding))}
        shape = self._shape(n)
        pooled = {}
        for src in x.sources():  # max-pooling is per channel: pool each source node once
            key = (src, tuple(attrs["kernel"]), tuple(attrs["stride"]), tuple(attrs["padding"]))
            if key not in self.pools:
                name = self._unique(self._label(n))
                self._add_node(Node(name, "maxpool", [self.channels[src]] + shape[1:], src=src, attrs=attrs))
                self.pools[key] = name
            pooled[src] = self.pools[key]
        return _Act([(pooled[s], c) if s is not None else (None, -1) for s, c in x.chans], shape[1:])

    def _avgpool(self, n, x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
        shape = self._shape(n)
        kh, kw = _pair(kernel)
        sh, sw = _pair(stride or kernel)
        ph, pw = _pair(padding)
        if ceil_mode or divisor_override or ((ph or pw) and not count_include_pad):
            self._unsupported(n, "average pooling with ceil_mode, divisor_override or count_include_pad=False "
                                 "(its divisor varies with the position)")
        if isinstance(x, (_Pre, _PreCat)) and not (isinstance(x, _PreCat) and all(isinstance(p, _Act) for p in x.parts)):
            return self._compose_avgpool(n, x, (kh, kw), (sh, sw), (ph, pw))
        x = self._need_act(n, x, "average pooling")
        if shape[1:] == [1, 1] and (ph, pw) == (0, 0) and x.spatial == [kh, kw]:
            return _Pooled(x, x.spatial[0] * x.spatial[1])
        c = len(x.chans)
        w = torch.full((c, 1, kh, kw), 1.0 / (kh * kw))
        attrs = {"stride": [sh, sw], "padding": [ph, pw], "dilation": [1, 1], "groups": c}
        parts = []
        for src in x.sources():  # a layer of pooling neurons (their own T-bit output) per source
            cols = [i for i, (s, _) in enumerate(x.chans) if s == src]
            sub = _Act([x.chans[i] for i in cols], x.spatial, x.stride)
            terms = self._act_terms(n, sub, "conv2d", w[: len(cols)], {**attrs, "groups": len(cols)}, self._label(n))
            parts.append((cols, self._neuron(n.name, _Pre(terms, torch.zeros(len(cols)), [len(cols)] + shape[1:]))))
        chans: list = [(None, -1)] * c
        for cols, act in parts:
            for i, ch in zip(cols, act.chans):
                chans[i] = ch
        return _Act(chans, shape[1:])

    def _compose_avgpool(self, n, x, kernel, stride, padding) -> object:
        """Average pooling of a pre-activation (a DenseNet transition): composed into its terms."""
        if padding != (0, 0):
            self._unsupported(n, "average pooling with padding of a pre-activation")
        (kh, kw), (sh, sw) = kernel, stride
        shape = self._shape(n)
        out = []
        for part in _parts(x):
            if isinstance(part, _Act):  # pooled spikes: a layer of pooling neurons
                out.append(self._avgpool(n, part, kernel, stride, padding, False, True, None))
                continue
            pre = part
            terms = []
            for t in pre.terms:
                a = t.attrs
                if t.op == "conv2d" and a["dilation"] == [1, 1]:
                    (s1h, s1w) = a["stride"]
                    k1h, k1w = t.weight.shape[2:]
                    w = torch.zeros(*t.weight.shape[:2], k1h + (kh - 1) * s1h, k1w + (kw - 1) * s1w)
                    for i in range(kh):
                        for j in range(kw):
                            w[:, :, i * s1h:i * s1h + k1h, j * s1w:j * s1w + k1w] += t.weight / (kh * kw)
                    attrs = {**a, "stride": [s1h * sh, s1w * sw]}
                elif t.op == "select" and all(c >= 0 for c in _select_channels(a, self.channels[t.src])):
                    chans = _select_channels(a, self.channels[t.src])
                    s = a["stride"]
                    w = (t.weight / (kh * kw)).view(-1, 1, 1, 1).expand(-1, 1, kh, kw).clone()
                    attrs = {"stride": [s * sh, s * sw], "padding": [0, 0], "dilation": [s, s], "groups": len(chans)}
                    if chans != list(range(self.channels[t.src])):
                        attrs["channels"] = chans
                    terms.append(_PendingTerm(t.src, "conv2d", w, attrs, f"{self._label(n)}*{t.label}"))
                    continue
                else:
                    self._unsupported(n, "average pooling of a pre-activation with dilated or zero-padded terms")
                terms.append(_PendingTerm(t.src, "conv2d", w, attrs, f"{self._label(n)}*{t.label}"))
            out.append(_Pre(terms, pre.bias, [pre.shape[0]] + shape[1:]))
        return out[0] if len(out) == 1 else _PreCat(out)

    def _adaptive_avgpool(self, n, x):
        shape = self._shape(n)
        src = _shape_of(x)
        if len(src) != 3 or src[1] % shape[1] or src[2] % shape[2]:
            self._unsupported(n, "adaptive average pooling to a size that does not divide the input")
        k = (src[1] // shape[1], src[2] // shape[2])
        return self._avgpool(n, x, k, k, 0, False, True, None)

    def _mean(self, n, x, dim):
        dims = sorted(d % 4 for d in (dim if isinstance(dim, (tuple, list)) else [dim])) if dim is not None else None
        if dims != [2, 3]:
            self._unsupported(n, "only the mean over the spatial dimensions (2, 3) is supported")
        x = self._need_act(n, x, "a global average pool")
        return _Pooled(x, _numel(x.spatial))

    def _reshape(self, n, x, op):
        """view / reshape / flatten / permute / transpose, interpreted on the positions of an activation."""
        if isinstance(x, (_Pooled, _Flat)):
            if len(self._shape(n)) != 1:
                self._unsupported(n, "only flattening a pooled tensor")
            return x if isinstance(x, _Flat) else _Flat(x)
        if isinstance(x, _Pre) and len(self._shape(n)) == 1 and len(x.shape) == 1:
            return x
        if isinstance(x, _Pre) and len(self._shape(n)) == 1 and x.shape[1:] == [1, 1]:
            return self._flatten_pre(n, x)
        if isinstance(x, _PreCat) and all(isinstance(p, _Act) for p in x.parts):
            x = _cat_acts(x.parts)
        if isinstance(x, _Act):
            index = torch.arange(_numel(x.shape)).view(1, *x.shape)
            act = x
        elif isinstance(x, _Shaped):
            index, act = x.index, x.act
        else:
            self._unsupported(n, f"reshape of a {_describe(x)} (only activations may be reshaped)")
        try:
            out = op(index)
        except Exception as exc:
            self._unsupported(n, f"cannot reshape ({exc})")
        return self._resolve(n, act, out)

    def _flatten_pre(self, n, x: _Pre) -> _Pre:
        """A pre-activation of one position per channel (a pooled sum before the classifier) as a 1-D
        pre-activation: each term becomes a linear map over its source, its kernel cut to the taps that
        read the image (the others read zero padding)."""
        terms = []
        for t in x.terms:
            src = self.shapes[t.src]
            a = t.attrs
            if t.op == "conv2d":
                w = _dense_conv(t.weight, a["groups"]) if a["groups"] > 1 else t.weight
                (ph, pw), (dh, dw) = a["padding"], a["dilation"]
                lin = torch.zeros(w.shape[0], w.shape[1], src[1], src[2])
                for u in range(w.shape[2]):
                    for v in range(w.shape[3]):
                        h, wd = u * dh - ph, v * dw - pw
                        if 0 <= h < src[1] and 0 <= wd < src[2]:
                            lin[:, :, h, wd] += w[:, :, u, v]
                attrs = {"mode": "flatten", **({"channels": a["channels"]} if "channels" in a else {})}
                terms.append(_PendingTerm(t.src, "linear", lin.flatten(1), attrs, t.label))
            elif t.op == "select" and src[1:] == [1, 1]:
                chans = _select_channels(a, src[0])
                keep = [j for j, c in enumerate(chans) if c >= 0]
                lin = torch.zeros(len(chans), len(keep))
                for col, j in enumerate(keep):
                    lin[j, col] = t.weight[j]
                read = [chans[j] for j in keep]
                attrs = {"mode": "flatten", **({} if read == list(range(src[0])) else {"channels": read})}
                terms.append(_PendingTerm(t.src, "linear", lin, attrs, t.label))
            else:
                self._unsupported(n, "flattening a pre-activation with this kind of term")
        return _Pre(terms, x.bias, [x.shape[0]])

    def _resolve(self, n, act: _Act, index: torch.Tensor):
        """An activation again when ``index`` is a channel permutation of ``act`` in (C, H, W) layout, a
        flattened activation when it is ``act`` flattened in order, else still in the middle of a reshape."""
        positions = _numel(act.spatial)
        if index.dim() == 2 and index.shape[1] == _numel(act.shape):
            if torch.equal(index[0], torch.arange(index.shape[1])):
                return _Flat(act)
            self._unsupported(n, "a flatten that reorders an activation")
        if index.dim() == len(act.shape) + 1 and list(index.shape[2:]) == list(act.spatial) and positions:
            per = index[0].reshape(index.shape[1], positions)
            chan = per[:, 0] // positions
            if torch.equal(per, chan.view(-1, 1) * positions + torch.arange(positions)):
                return _Act([act.chans[int(c)] for c in chan], act.spatial, act.stride)
        return _Shaped(act, index)

    def _getitem(self, n, x, index):
        if isinstance(x, (_Tuple, tuple, list)):
            items = x.items if isinstance(x, _Tuple) else list(x)
            return items[index]
        if not isinstance(index, tuple):
            index = (index,)
        full = slice(None)
        parts = list(index) + [full] * (4 - len(index))
        if len(parts) != 4 or parts[0] != full or not all(isinstance(p, slice) for p in parts):
            self._unsupported(n, "only slices of channels (x[:, a:b]) and subsampling (x[:, :, ::s, ::s]) are supported")
        channel, sh, sw = parts[1], parts[2], parts[3]
        if isinstance(x, (_Pre, _PreCat)) and not (isinstance(x, _PreCat) and all(isinstance(p, _Act) for p in x.parts)):
            if (sh, sw) != (full, full):
                self._unsupported(n, "subsampling a pre-activation")
            return self._slice_pre(n, x, range(*channel.indices(x.shape[0])))
        x = self._need_act(n, x, "slicing")
        chans = x.chans[channel]
        if (sh, sw) == (full, full):
            return _Act(chans, x.spatial, x.stride)
        if not (sh.start in (None, 0) and sw.start in (None, 0) and sh.stop is None and sw.stop is None
                and (sh.step or 1) == (sw.step or 1)) or x.stride != 1:
            self._unsupported(n, "only x[:, :, ::s, ::s] subsampling (once) is supported")
        s = sh.step or 1
        return _Act(chans, [(d + s - 1) // s for d in x.spatial], s)

    def _slice_pre(self, n, x, rows) -> object:
        rows = list(rows)
        if rows != list(range(rows[0], rows[-1] + 1)) if rows else True:
            self._unsupported(n, "only contiguous channel slices of a pre-activation")
        lo, hi = rows[0], rows[-1] + 1
        out, offset = [], 0
        for part in _parts(x):
            c = part.shape[0]
            a, b = max(lo, offset) - offset, min(hi, offset + c) - offset
            if a < b:
                out.append(_slice_part(part, a, b, self.channels))
            offset += c
        return out[0] if len(out) == 1 else _PreCat(out)

    def _split(self, n, x, how: str, arg, dim):
        if dim not in (1, -3):
            self._unsupported(n, f"{how} along a dimension other than the channels")
        c = _shape_of(x)[0]
        if how == "chunk":
            size = -(-c // arg)
            bounds = [(i, min(i + size, c)) for i in range(0, c, size)]
        elif how == "split" and isinstance(arg, int):
            bounds = [(i, min(i + arg, c)) for i in range(0, c, arg)]
        elif how == "split":
            starts = [sum(arg[:i]) for i in range(len(arg))]
            bounds = [(s, s + k) for s, k in zip(starts, arg)]
        else:
            self._unsupported(n, "tensor_split")
        return _Tuple([self._getitem(n, x, (slice(None), slice(a, b))) for a, b in bounds])

    def _cat(self, n, items, dim):
        if dim not in (1, -3):
            self._unsupported(n, "concatenation along a dimension other than the channels")
        parts = []
        for item in items:
            got = _parts_or_none(item)
            if got is None:
                self._unsupported(n, f"concatenation of a {_describe(item)}")
            parts.extend(got)
        spatial = [p.shape[1:] for p in parts]
        if any(s != spatial[0] for s in spatial):
            self._unsupported(n, f"concatenation of shapes {[p.shape for p in parts]}")
        if all(isinstance(p, _Act) for p in parts):
            return _cat_acts(parts)
        return _PreCat(parts)

    def _pad(self, n, x, p):
        x = self._need_act(n, x, "padding")
        pad = list(p["pad"])
        if p.get("mode", "constant") != "constant" or (p.get("value") or 0) != 0:
            self._unsupported(n, "only zero padding of a spiking layer's channels is supported")
        if len(pad) != 6 or any(pad[:4]) or min(pad) < 0:
            self._unsupported(n, "only channel padding F.pad(x, (0, 0, 0, 0, a, b)) is supported")
        zeros = [(None, -1)]
        return _Act(zeros * pad[4] + x.chans + zeros * pad[5], x.spatial, x.stride)

    def _output(self, n: fx.Node):
        out = n.args[0]
        if not isinstance(out, fx.Node):
            raise ConversionError(f"model output at node {n.name} must be a single tensor")
        x = self.values[out.name]
        if not isinstance(x, _Pre):
            raise ConversionError(f"the model must end with a linear or convolution layer (logits), not a {_describe(x)}")
        self._neuron("output", x, kind="output")


# ---- helpers ----------------------------------------------------------------------------------------


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _expand(cols: list[int], positions: int) -> list[int]:
    """Weight columns of channels ``cols`` when each channel spans ``positions`` flattened columns."""
    return [c * positions + p for c in cols for p in range(positions)]


def _call_args(n: fx.Node, names: list[str]) -> dict:
    out = dict(zip(names, n.args))
    out.update(n.kwargs)
    return out


def _cat_acts(acts: list[_Act]) -> _Act:
    strides = {a.stride for a in acts}
    if len(strides) != 1:
        raise ConversionError("concatenation of subsampled and full-size activations")
    return _Act([c for a in acts for c in a.chans], acts[0].spatial, acts[0].stride)


def _parts(x) -> list:
    return x.parts if isinstance(x, _PreCat) else [x]


def _parts_or_none(x):
    if isinstance(x, (_Act, _Pre)):
        return [x]
    if isinstance(x, _PreCat):
        return list(x.parts)
    return None


def _shape_of(x) -> list[int]:
    return list(x.shape) if hasattr(x, "shape") else []


def _split_parts(a, b):
    """Both part lists cut at the union of their channel boundaries (so they can be added part by part)."""
    if a is None or b is None:
        return a, b

    def bounds(parts):
        out, at = [], 0
        for p in parts:
            at += p.shape[0]
            out.append(at)
        return out

    cuts = sorted(set(bounds(a)) | set(bounds(b)))

    def cut(parts):
        out, offset = [], 0
        for p in parts:
            c = p.shape[0]
            inner = [k - offset for k in cuts if offset < k < offset + c]
            edges = [0] + inner + [c]
            for lo, hi in zip(edges[:-1], edges[1:]):
                out.append(p if (lo, hi) == (0, c) else _slice_part(p, lo, hi, None))
            offset += c
        return out

    return cut(a), cut(b)


def _slice_part(part, lo: int, hi: int, channels):
    """Channels ``lo:hi`` of an activation or a pre-activation (its terms' output rows)."""
    if isinstance(part, _Act):
        return _Act(part.chans[lo:hi], part.spatial, part.stride)
    terms = []
    for t in part.terms:
        if t.op == "select":
            chans = t.attrs.get("channels")
            pad = t.attrs["pad"]
            if chans is None:
                c_src = t.weight.shape[0] - pad[0] - pad[1]
                chans = [-1] * pad[0] + list(range(c_src)) + [-1] * pad[1]
            else:
                chans = [-1] * pad[0] + chans + [-1] * pad[1]
            sub = chans[lo:hi]
            if all(c < 0 for c in sub):
                continue
            attrs = {"stride": t.attrs["stride"], "pad": [0, 0], "channels": sub}
            terms.append(_PendingTerm(t.src, "select", t.weight[lo:hi], attrs, t.label))
        elif t.op == "conv2d" and t.attrs["groups"] > 1:
            g = t.attrs["groups"]
            per_out = t.weight.shape[0] // g
            if lo % per_out or hi % per_out:
                raise ConversionError("a channel slice that cuts through the groups of a grouped convolution")
            cin = t.weight.shape[1]
            gathered = t.attrs.get("channels")
            first, last = lo // per_out, hi // per_out
            attrs = {**t.attrs, "groups": last - first}
            src = list(range(first * cin, last * cin))
            attrs["channels"] = [gathered[i] for i in src] if gathered is not None else src
            terms.append(_PendingTerm(t.src, t.op, t.weight[lo:hi], attrs, t.label))
        else:
            terms.append(_PendingTerm(t.src, t.op, t.weight[lo:hi], t.attrs, t.label))
    return _Pre(terms, part.bias[lo:hi], [hi - lo] + list(part.shape[1:]))


def _select_channels(attrs: dict, src_channels: int) -> list[int]:
    """The source channel of every output channel of a select term (-1: zero)."""
    pad = attrs["pad"]
    chans = attrs.get("channels", list(range(src_channels)))
    return [-1] * pad[0] + list(chans) + [-1] * pad[1]


def _select_attrs(channels: list[int], stride: int, src_channels: int) -> dict:
    """A select term's attributes: the legacy ``pad`` form when the channels are the source's, in order,
    between zero channels (identity and option-A shortcuts), else an explicit ``channels`` gather."""
    first = next((i for i, c in enumerate(channels) if c >= 0), len(channels))
    last = len(channels) - next((i for i, c in enumerate(reversed(channels)) if c >= 0), len(channels))
    if channels[first:last] == list(range(src_channels)):
        return {"stride": stride, "pad": [first, len(channels) - last]}
    return {"stride": stride, "pad": [0, 0], "channels": list(channels)}


def _dense_conv(w: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped convolution's weight as the equivalent dense one (zeros between the groups)."""
    out, cin = w.shape[0], w.shape[1]
    per = out // groups
    dense = torch.zeros(out, cin * groups, *w.shape[2:])
    for g in range(groups):
        dense[g * per:(g + 1) * per, g * cin:(g + 1) * cin] = w[g * per:(g + 1) * per]
    return dense


def _describe(x) -> str:
    return {
        _Act: "spiking layer",
        _Pre: "pre-activation (no ReLU in between)",
        _PreCat: "concatenation of pre-activations",
        _Pooled: "global average pool",
        _Flat: "flattened tensor",
        _Shaped: "reshaped tensor",
        _Tuple: "tuple of tensors",
    }.get(type(x), type(x).__name__)
