"""Conversion rules: one small handler per operation family, in a table users can extend.

=================  ====================================================================
``registry``       the table (:data:`RULES`), :func:`register_rule`, the lookup
``context``        :class:`RuleContext`: what a rule sees, and the graph being built
``values``         what a traced tensor is for a radix SNN (spikes, pre-activations, ...)
``conv``           convolutions (grouped, depthwise), 1x1 convolutions of pre-activations
``linear``         linear layers over flattened or pooled spikes
``affine``         BatchNorm folding, scaling by constants
``activation``     ReLU and clips at a constant: layers of radix neurons
``residual``       additions: residual sums, shortcuts, constants
``pooling``        max, average, adaptive average pools, global means
``layout``         reshapes, shuffles, slices, splits, concatenation, padding, identities
``refusals``       what no radix neuron computes, and why
=================  ====================================================================

A rule is ``handler(ctx, target, args, kwargs) -> value``, called as torch.fx's ``Interpreter`` calls
its methods; :func:`register_rule` has a worked example (a user's block converted exactly).
"""
from radixsnn.core.rules import activation, affine, conv, layout, linear, pooling, refusals, residual  # noqa: F401  (fill RULES)
from radixsnn.core.rules.context import RuleContext
from radixsnn.core.rules.registry import RULES, Rules, register_rule, unregister_rule

__all__ = ["RULES", "RuleContext", "Rules", "register_rule", "unregister_rule"]
