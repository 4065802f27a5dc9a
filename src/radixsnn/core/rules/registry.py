"""The table of conversion rules: which handler converts which operation.

A *rule* converts one operation of a traced model: a module class (``nn.Conv2d``), a function
(``F.relu``, ``operator.add``) or a tensor method name (``"view"``). Its handler is called as torch.fx's
``Interpreter`` calls its methods, ``handler(ctx, target, args, kwargs)``: ``target`` is the module
instance, the function or the method name, ``args`` and ``kwargs`` the call's arguments with every
tensor replaced by its value (:mod:`radixsnn.core.rules.values`), and ``ctx`` the
:class:`~radixsnn.core.rules.context.RuleContext` of the conversion. It returns the call's value.

:data:`RULES` holds the built-in rules; :func:`register_rule` adds a user's. A module class with a rule
is not traced into: the tracer records a call of it and its rule converts it whole (so a block whose
``forward`` torch.fx cannot trace, or that computes something no radix neuron does in a way that
becomes a constant once trained, can still be converted). A subclass shares its base class's rule only
while it keeps the base class's ``forward``.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch.nn as nn

from radixsnn.errors import ConfigError

Handler = Callable  # (ctx, target, args: tuple, kwargs: dict) -> value


def _key_name(target) -> str:
    if isinstance(target, str):
        return f"the tensor method {target!r}"
    return getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target)


class Rules:
    """Module classes, functions and tensor-method names -> the handlers that convert them."""

    def __init__(self):
        self._modules: dict[type, Handler] = {}
        self._functions: dict[object, Handler] = {}
        self._methods: dict[str, Handler] = {}

    def _table(self, target) -> dict:
        if isinstance(target, type):
            if not issubclass(target, nn.Module):
                raise ConfigError("target", f"must be an nn.Module subclass, a function or a tensor method name; got the class {target.__qualname__}")
            return self._modules
        if isinstance(target, str):
            if not target.isidentifier():
                raise ConfigError("target", f"must be a tensor method name; got {target!r}")
            return self._methods
        if callable(target):
            return self._functions
        raise ConfigError("target", f"must be an nn.Module subclass, a function or a tensor method name; got {type(target).__name__}")

    def register(self, target, handler: Handler | None = None, *, replace: bool = False):
        """Register ``handler`` for ``target``; without ``handler``, a decorator that registers the function
        it decorates (and returns it unchanged)."""
        table = self._table(target)
        if not isinstance(replace, bool):
            raise ConfigError("replace", f"must be True or False, got {replace!r}")

        def add(h: Handler) -> Handler:
            if not callable(h):
                raise ConfigError("handler", f"must be callable, got {type(h).__name__}")
            if target in table and not replace:
                raise ConfigError("target", f"{_key_name(target)} already has a rule ({_key_name(table[target])}); "
                                            "pass replace=True to replace it")
            table[target] = h
            return h

        return add if handler is None else add(handler)

    def unregister(self, target) -> None:
        """Remove the rule of ``target`` (a :class:`ConfigError` when it has none)."""
        table = self._table(target)
        if target not in table:
            raise ConfigError("target", f"{_key_name(target)} has no rule")
        del table[target]

    def for_module(self, module: nn.Module) -> Handler | None:
        """The rule of ``module``'s class, or of the nearest base class whose ``forward`` it keeps."""
        cls = type(module)
        for base in cls.__mro__:
            handler = self._modules.get(base)
            if handler is not None:
                return handler if base is cls or getattr(cls, "forward", None) is getattr(base, "forward", None) else None
            if base is nn.Module:
                break
        return None

    def lookup(self, target) -> Handler | None:
        """The rule for a module instance, a function or a tensor method name (``None``: no rule)."""
        if isinstance(target, nn.Module):
            return self.for_module(target)
        if isinstance(target, str):
            return self._methods.get(target)
        try:
            return self._functions.get(target)
        except TypeError:  # an unhashable callable has no rule
            return None

    def wrapped_functions(self) -> tuple:
        """The plain Python functions with rules that are not torch's: the tracer records calls of them
        (torch.fx ``autowrap_functions``) instead of tracing into them."""
        return tuple(f for f in self._functions if inspect.isfunction(f)
                     and not (f.__module__ or "").startswith(("torch", "operator", "_operator")))


#: The rules every conversion uses: the built-in ones and those added with :func:`register_rule`.
RULES = Rules()


def register_rule(target, handler: Handler | None = None, *, replace: bool = False):
    """Convert ``target`` -- an ``nn.Module`` subclass, a function or a tensor method name -- with ``handler``.

    Used as a decorator (``@register_rule(MyBlock)``) or called with the handler. The handler is called as
    ``handler(ctx, target, args, kwargs)`` and returns the value of the call; it usually rebuilds the
    operation from ones radixsnn knows with ``ctx.call(...)``. A target that already has a rule (a
    built-in one included) is an error unless ``replace=True``.

    >>> import operator, torch, torch.nn as nn, torch.nn.functional as F, radixsnn as rs
    >>> class GatedSkip(nn.Module):
    ...     '''x + sigmoid(gate) * BN(conv(x)), then a ReLU: the gate is a trained scalar.'''
    ...     def __init__(self, c):
    ...         super().__init__()
    ...         self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
    ...         self.gate = nn.Parameter(torch.tensor(0.3))
    ...     def forward(self, x):
    ...         return F.relu(x + torch.sigmoid(self.gate) * self.bn(self.conv(x)))
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), GatedSkip(8),
    ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    >>> rs.quantize(model, time_steps=4, input_shape=(3, 8, 8), mean=(0.5,) * 3, std=(0.25,) * 3)
    Traceback (most recent call last):
    radixsnn.errors.ConversionError: unsupported operation sigmoid at node sigmoid: a radix neuron only ...
    >>> @rs.register_rule(GatedSkip)
    ... def gated_skip(ctx, block, args, kwargs):
    ...     x, = args
    ...     gate = torch.sigmoid(block.gate).item()           # a constant of the trained block
    ...     y = ctx.call(block.bn, ctx.call(block.conv, x))    # the built-in rules of its parts
    ...     return ctx.call(F.relu, ctx.call(operator.add, x, ctx.call(operator.mul, y, gate)))
    >>> images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    >>> qann = rs.quantize(model, time_steps=4, input_shape=(3, 8, 8), mean=(0.5,) * 3, std=(0.25,) * 3)
    >>> qann.calibrate(images, progress=False)
    >>> snn = qann.to_snn()
    >>> logits = qann.integer_logits(images)
    >>> torch.equal(rs.run(snn, images).logits, logits), torch.equal(rs.run(snn, images, engine="integer").logits, logits)
    (True, True)
    >>> rs.register_rule(GatedSkip, gated_skip)
    Traceback (most recent call last):
    radixsnn.errors.ConfigError: target ...GatedSkip already has a rule (...gated_skip); pass replace=True to replace it
    """
    return RULES.register(target, handler, replace=replace)


def unregister_rule(target) -> None:
    """Remove the rule of ``target`` from :data:`RULES` (a built-in rule too)."""
    RULES.unregister(target)


def rule(*targets):
    """Register the decorated built-in handler for each of ``targets``."""
    def add(handler: Handler) -> Handler:
        for target in targets:
            RULES.register(target, handler)
        return handler
    return add
