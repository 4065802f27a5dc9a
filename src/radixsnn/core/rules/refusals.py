"""Refusals: what no radix neuron computes, with the reason the error gives.

Each is a rule that fails with its reason. The walk looks for them (:func:`refusal_of`) before it builds
anything, so the error names the first such operation, not some consequence of it further on.
"""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from radixsnn.core.rules.registry import RULES, Rules

#: Why a radix neuron cannot compute an operation (named in the ConversionError).
WHY = {
    "activation": "a radix neuron only sums weighted spikes and then rectifies and saturates its sum: "
                  "ReLU and clips at a constant are all it computes",
    "product": "a synapse multiplies a spike by a fixed weight, never by another activation "
               "(products of activations: gating, squeeze-and-excitation, attention)",
    "norm": "the statistics of this normalization come from the activations themselves at run time",
}

_REFUSED = {
    "activation": (
        torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.silu, F.gelu, F.hardswish, F.hardsigmoid, F.leaky_relu, F.elu,
        F.softplus, F.mish, F.softmax, torch.softmax, F.log_softmax, torch.exp,
        "sigmoid", "tanh", "softmax", "exp",
        nn.Sigmoid, nn.Tanh, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.LeakyReLU, nn.ELU, nn.PReLU,
        nn.Softmax, nn.Mish, nn.Softplus,
    ),
    "product": (torch.matmul, torch.bmm, "matmul", "bmm", nn.MultiheadAttention),
    "norm": (F.layer_norm, F.group_norm, F.instance_norm, nn.LayerNorm, nn.GroupNorm,
             nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d),
}

def refusal(why: str):
    """A rule that refuses its call because ``why``; the walk finds it by its ``refusal`` attribute. (A rule
    that accepts some calls and refuses others says so with its own attribute: ``scales_by_constants``,
    the multiply and divide rules, refuse a product of two tensors.)"""
    def refuse(ctx, target, args, kwargs):
        ctx.fail(why)
    refuse.refusal = why
    return refuse


for _kind, _targets in _REFUSED.items():
    for _target in _targets:
        RULES.register(_target, refusal(WHY[_kind]))


def refusal_of(node: fx.Node, modules: dict, rules: Rules) -> str | None:
    """Why the traced ``node`` cannot be converted, when its rule is a refusal or it multiplies two
    activations; ``None`` otherwise (which does not promise that its rule will accept it)."""
    if node.op == "call_module":
        target = modules[node.target]
    elif node.op in ("call_function", "call_method"):
        target = node.target
    else:
        return None
    handler = rules.lookup(target)
    why = getattr(handler, "refusal", None)
    if why is None and getattr(handler, "scales_by_constants", False) and sum(isinstance(a, fx.Node) for a in node.args[:2]) == 2:
        why = WHY["product"]
    return why
