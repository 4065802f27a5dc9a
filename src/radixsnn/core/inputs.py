"""How images enter a network: the float model's normalization and the radix SNN's pixel trains.

Images are uint8 pixels ``p`` (N, C, H, W). The float model sees ``(p / 255 - mean) / std``
(:func:`normalize`, the one definition used by the QANN's float mode, training, evaluation and the
experiments). The radix SNN sees ``q = floor(p / 2^(8 - input_bits))`` as ``input_bits``-step trains
(:func:`pixel_integers`; 8 bits = the exact pixels), and the QANN folds the normalization into its first
layer with the per-channel affine map of :func:`input_affine`.

A model's normalization comes from the caller or from the configuration the model registry attaches
to the models it creates (:data:`CONFIG_ATTRIBUTE`); a model from elsewhere has none, and then the
caller must give it (:func:`model_normalization`).

>>> import torch
>>> from radixsnn.core.inputs import normalize, pixel_integers
>>> px = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
>>> normalize(px, mean=(0.5,), std=(0.5,)).tolist()
[[[[-1.0, 1.0]]]]
>>> pixel_integers(px, input_bits=4).tolist()
[[[[0.0, 15.0]]]]
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from radixsnn.errors import ConfigError

#: Attribute under which :func:`radixsnn.models.create_model` stores a model's configuration (an object
#: with ``mean``, ``std``, ``input_shape`` and ``num_classes``).
CONFIG_ATTRIBUTE = "radixsnn_config"


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Pixels (uint8, or float 0..255) -> the float model's input ``(x / 255 - mean) / std`` (float32)."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.to(torch.float32) / 255.0 - m) / s


def pixel_integers(images: torch.Tensor, input_bits: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The input layer's integers ``floor(p / 2^(8 - input_bits))``, integer-valued in ``dtype``.

    Exact for uint8 pixels in any float dtype; float pixels (QANN training) are floored the same way.
    """
    return torch.floor(images.to(dtype) / 2.0 ** (8 - input_bits))


def input_affine(mean: torch.Tensor, std: torch.Tensor, input_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, m)`` per channel: the input integer ``q`` stands for the normalized value ``q s - m``.

    A ``k``-bit input integer covers the pixels ``q 2^(8-k) .. q 2^(8-k) + 2^(8-k) - 1``; it stands for their
    middle, so 8 bits give exactly ``(p / 255 - mean) / std``.
    """
    step = 2.0 ** (8 - input_bits)
    return step / (255.0 * std), mean / std - (step - 1) / (510.0 * std)


def model_normalization(
    model: nn.Module, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of ``model``'s input: the arguments if given, else the model's registry config."""
    config = getattr(model, CONFIG_ATTRIBUTE, None)
    if mean is None:
        mean = getattr(config, "mean", None)
    if std is None:
        std = getattr(config, "std", None)
    for name, value in (("mean", mean), ("std", std)):
        if value is None:
            raise ConfigError(
                name, f"is required for a {type(model).__name__}: it has no registry config with its input "
                "normalization (give mean and std per channel, e.g. mean=(0.4914, 0.4822, 0.4465))"
            )
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if len(mean) != len(std):
        raise ConfigError("std", f"has {len(std)} channels but mean has {len(mean)}")
    if not all(s > 0 for s in std) or not all(abs(v) < float("inf") for v in mean):
        raise ConfigError("std", f"must be positive and finite, mean finite; got mean {mean}, std {std}")
    return mean, std


def model_input_shape(model: nn.Module, input_shape: Sequence[int] | None = None) -> tuple[int, ...]:
    """``(C, H, W)`` of one input image: the argument if given, else the registry config's, else 3x32x32."""
    if input_shape is None:
        input_shape = getattr(getattr(model, CONFIG_ATTRIBUTE, None), "input_shape", (3, 32, 32))
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError("input_shape", f"must be (C, H, W) with positive sizes, got {tuple(input_shape)}")
    return shape
