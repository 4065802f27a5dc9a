"""The model registry: name -> (constructor, :class:`ModelConfig`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch.nn as nn

from radixsnn.core.inputs import CONFIG_ATTRIBUTE
from radixsnn.errors import ConfigError
from radixsnn.models.weights import load_weights

#: Normalization of the pretrained CIFAR ResNets of akamaster/pytorch_resnet_cifar10 (ImageNet
#: statistics), used by the models trained here.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    """What a registered model expects: per-channel input ``mean`` / ``std`` (of pixels scaled to [0, 1]),
    one image's ``input_shape``, the default ``num_classes``, and how an image of another size is brought to
    ``input_shape`` (:class:`radixsnn.data.Preprocess`: the shorter side resized to ``max(H, W) / crop_pct``
    with ``interpolation``, then the centre crop)."""

    name: str
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    input_shape: tuple[int, int, int] = (3, 32, 32)
    num_classes: int = 10
    description: str = ""
    crop_pct: float = 1.0
    interpolation: str = "bilinear"


_REGISTRY: dict[str, tuple[Callable[..., nn.Module], ModelConfig]] = {}

#: The input configuration of model families outside the registry, by the package their
#: ``package.module:callable`` targets name: torchvision's classification models take ImageNet's
#: statistics at 224x224 after a resize to 256 (``crop_pct`` 0.875), bilinear, as torchvision's own
#: weights were trained and evaluated.
FAMILY_CONFIGS: dict[str, dict] = {
    "torchvision.models": dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, input_shape=(3, 224, 224), crop_pct=0.875,
                               interpolation="bilinear"),
}


def family_config(spec: str) -> dict | None:
    """The :data:`FAMILY_CONFIGS` entry of a ``package.module:callable`` target (``None`` for other targets)."""
    module = spec.rpartition(":")[0]
    for family, config in FAMILY_CONFIGS.items():
        if module == family or module.startswith(family + "."):
            return dict(config)
    return None


def register_model(name: str, **config):
    """Decorator: register a constructor ``fn(num_classes=...) -> nn.Module`` under ``name``;
    ``config`` holds the :class:`ModelConfig` fields other than the name."""

    def wrap(fn):
        if name in _REGISTRY:
            raise ConfigError("name", f"{name!r} is registered twice")
        _REGISTRY[name] = (fn, ModelConfig(name, **config))
        return fn

    return wrap


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def model_config(name: str) -> ModelConfig:
    """The :class:`ModelConfig` of a registered model."""
    try:
        return _REGISTRY[name][1]
    except KeyError:
        raise ConfigError("model", f"{name!r} is unknown; choose one of: {', '.join(list_models())}") from None


def create_model(name: str, *, num_classes: int | None = None, weights: str | Path | None = None) -> nn.Module:
    """A new registered model (``num_classes`` outputs, default the config's), with ``weights`` loaded if
    given (then in eval mode). Its config is attached to the model for :func:`radixsnn.quantize`."""
    config = model_config(name)
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ConfigError("num_classes", f"must be a positive integer, got {num_classes!r}")
    if num_classes is not None and num_classes != config.num_classes:
        config = dataclasses.replace(config, num_classes=num_classes)
    model = _REGISTRY[name][0](num_classes=config.num_classes)
    setattr(model, CONFIG_ATTRIBUTE, config)
    if weights is not None:
        load_weights(model, weights).eval()
    return model
