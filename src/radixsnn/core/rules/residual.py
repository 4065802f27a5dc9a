"""Additions: residual sums, identity and option-A shortcuts, and constants added to a pre-activation.

The sum of two values is one pre-activation holding both sides' terms (spike trains join as unit
``select`` terms), cut part by part where either side is a concatenation. Adding a constant moves the
bias.
"""
from __future__ import annotations

import math
import operator

import torch

from radixsnn.core.rules.affine import affine
from radixsnn.core.rules.registry import rule
from radixsnn.core.rules.values import Act, Pre, PreCat, describe, parts_or_none, shape_of, split_parts


@rule(operator.add, operator.iadd, torch.add, "add", "add_")
def add_rule(ctx, target, args, kwargs):
    if "alpha" in kwargs:
        ctx.fail("add with alpha")
    return add(ctx, args[0], args[1])


def add(ctx, a, b):
    """``a + b`` of two values, or of a value and a finite constant."""
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        a, b = b, a
    if isinstance(b, (int, float)) and not isinstance(b, bool):  # a constant: the bias moves
        if not math.isfinite(b) or parts_or_none(a) is None:
            ctx.fail(f"addition of a {describe(a)} and {b!r}")
        if b == 0:
            return a
        c = a.shape[0]
        return affine(ctx, a, torch.ones(c), torch.full((c,), float(b)))
    parts_a, parts_b = split_parts(parts_or_none(a), parts_or_none(b))
    if parts_a is None or parts_b is None:
        ctx.fail(f"addition of a {describe(a)} and a {describe(b)}")
    if [p.shape for p in parts_a] != [p.shape for p in parts_b]:
        ctx.fail(f"addition of shapes {shape_of(a)} and {shape_of(b)}")
    out = []
    for pa, pb in zip(parts_a, parts_b):
        pa = ctx.as_pre(pa) if isinstance(pa, Act) else pa
        pb = ctx.as_pre(pb) if isinstance(pb, Act) else pb
        out.append(Pre(pa.terms + pb.terms, pa.bias + pb.bias, pa.shape))
    return out[0] if len(out) == 1 else PreCat(out)
