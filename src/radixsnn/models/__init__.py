"""Model zoo: a name -> constructor registry with one interface, ``create_model(name, num_classes)``.

Every model is a plain ``nn.Module`` that torch.fx can trace, so the converter can read its graph.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Decorator: register a constructor ``fn(num_classes=10) -> nn.Module`` under ``name``."""

    def wrap(fn):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int = 10) -> nn.Module:
    try:
        fn = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}") from None
    return fn(num_classes=num_classes)


# Importing the architecture modules fills the registry.
from radixsnn.models import resnet_cifar  # noqa: E402,F401
from radixsnn.models import vgg  # noqa: E402,F401
from radixsnn.models import resnet18  # noqa: E402,F401
from radixsnn.models import mobilenet  # noqa: E402,F401
