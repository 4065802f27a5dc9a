"""Tracing: a float CNN (``nn.Module``) -> the :class:`~radixsnn.core.graph.Graph` of its radix SNN.

:func:`trace_graph` traces the model with torch.fx on a copy in eval mode. The tracer runs the model on
an example input as it records it, so a ``forward`` that computes with sizes (``N, C, H, W = x.size()``,
``int(C * ratio)``) traces too: sizes become constants of the graph (shape specialization). Modules with
a conversion rule are recorded as calls, not traced into (the built-in ones are torch.nn's; a user's
block gets one with :func:`~radixsnn.core.rules.register_rule`).

The walk then converts the traced operations one by one, each with its rule
(:mod:`radixsnn.core.rules`): an abstract interpretation whose values are spike trains, pre-activations
(sums of synapse terms not yet through a ReLU, into which BatchNorm, additions, 1x1 convolutions and
average pools are folded) and their views (:mod:`radixsnn.core.rules.values`). A ReLU makes a layer of
radix neurons; the last linear layer becomes the non-spiking readout. The user's model is never
modified. An operation a radix neuron cannot compute raises :class:`ConversionError` naming the
operation, the graph node and why.
"""
from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.node import map_aggregate
from torch.fx.passes.shape_prop import ShapeProp

from radixsnn.core.graph import Graph, Node
from radixsnn.core.rules import RULES, RuleContext, Rules
from radixsnn.core.rules.refusals import refusal_of
from radixsnn.core.rules.linear import linear
from radixsnn.core.rules.values import Act, Flat, Pre, describe
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
    def __init__(self, example: torch.Tensor, rules: Rules):
        super().__init__(autowrap_functions=rules.wrapped_functions())
        self.example = example
        self.rules = rules
        self._evaluating = False

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return self.rules.for_module(m) is not None or super().is_leaf_module(m, qualname)

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


def _trace(model: nn.Module, input_shape, rules: Rules) -> fx.GraphModule:
    tracer = _ConcreteTracer(torch.zeros(1, *input_shape), rules)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types for untraceable code
        raise ConversionError(f"torch.fx cannot trace the model: {' '.join(str(exc).split())[:300]}") from None
    return fx.GraphModule(tracer.root, graph)


# ---- the walk --------------------------------------------------------------------------------------


def trace_graph(model: nn.Module, input_shape, mean, std, rules: Rules | None = None) -> tuple[Graph, dict[str, torch.Tensor]]:
    """Trace ``model`` and return ``(graph, float_params)`` with BatchNorm folded.

    ``input_shape`` is one image's ``(C, H, W)``; ``mean`` and ``std`` (per channel) are recorded in the
    input node. ``float_params`` maps each term's ``param`` key to its float weight and each
    neuron/output node name + ``".bias"`` to its float bias. ``rules`` defaults to
    :data:`~radixsnn.core.rules.RULES` (the built-in rules and the registered ones).
    """
    rules = RULES if rules is None else rules
    model = copy.deepcopy(model).eval().float().cpu()
    gm = _trace(model, input_shape, rules)
    try:
        ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
    except Exception as exc:
        raise ConversionError(f"the model fails on an input of shape {tuple(input_shape)}: {' '.join(str(exc).split())[:300]}") from None
    ctx = RuleContext(gm, rules)
    for n in gm.graph.nodes:  # first the operations no radix neuron computes, before anything is built
        why = refusal_of(n, ctx.modules, rules)
        if why is not None:
            with ctx.at(n):
                ctx.fail(why)
    values: dict[str, object] = {}

    def value(a):
        return values[a.name] if isinstance(a, fx.Node) else a

    for n in gm.graph.nodes:
        if n.op == "placeholder":
            if "input" in ctx.names:
                raise ConversionError(f"model takes more than one input (node {n.name})")
            ctx.add_node(Node("input", "input", list(input_shape), attrs={"mean": [float(m) for m in mean], "std": [float(s) for s in std]}))
            values[n.name] = Act([("input", c) for c in range(input_shape[0])], list(input_shape[1:]))
        elif n.op == "get_attr":
            raise ConversionError(f"unsupported operation: the tensor attribute {n.target!r} is used as data at node "
                                  f"{n.name} (a radix SNN's synapses are the weights of convolutions and linear layers)")
        elif n.op == "output":
            out = n.args[0]
            if not isinstance(out, fx.Node):
                raise ConversionError(f"model output at node {n.name} must be a single tensor")
            x = values[out.name]
            if isinstance(x, Flat) or isinstance(x, Act) and not x.spatial:
                # logits that are a flattened spiking layer or its global pool (SqueezeNet's ReLU + average
                # pool): read them out through the identity
                with ctx.at(out):
                    x = linear(ctx, x, torch.eye(x.shape[0]))
            if not isinstance(x, Pre):
                raise ConversionError(f"the model must end with a linear or convolution layer (logits), or a pooled or flattened "
                                      f"spiking layer, not a {describe(x)}")
            ctx.neuron(x, kind="output", name="output")
        else:
            target = ctx.modules[n.target] if n.op == "call_module" else n.target
            with ctx.at(n):
                values[n.name] = ctx.apply(target, map_aggregate(n.args, value), map_aggregate(n.kwargs, value))
    graph = Graph(ctx.nodes)
    graph.validate()
    return graph, ctx.params
