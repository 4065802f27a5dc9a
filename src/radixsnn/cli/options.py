"""Options shared by the commands that read a pretrained float network (``convert``, ``rmse``, ``rate``, ``sweep``).

``--model/--weights/--dataset/--data-dir/--images`` select the network and the test images, and
step lists such as ``--time-steps`` accept ``2..10``, ``8,16,32`` or a mix (``1..4,8,16``).
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn as nn

from radixsnn.data import load_cifar, num_classes
from radixsnn.errors import ConfigError
from radixsnn.models import create_model, list_models


#: Largest value and count an integer list (``--time-steps 1..4096``) may hold.
INT_LIST_MAX = 1 << 16


def int_list(text: str) -> list[int]:
    """``"2..5,8"`` -> ``[2, 3, 4, 5, 8]`` (sorted, without repeats); an argparse ``type``. Values must lie in
    1..65536 (checked before any range is built)."""
    values: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            bounds = [int(p) for p in part.split("..")] if ".." in part else [int(part)] * 2
            if len(bounds) != 2 or bounds[0] > bounds[1]:
                raise ValueError
            if bounds[0] < 1 or bounds[1] > INT_LIST_MAX:
                raise argparse.ArgumentTypeError(f"values must lie in 1..{INT_LIST_MAX}, got {text!r}")
            values.update(range(bounds[0], bounds[1] + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 2..10 or 8,16,32, got {text!r}") from None
    return sorted(values)


def _number(kind, check, rule: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


#: argparse types that refuse NaN, infinities and values out of range before any work starts.
positive_float = _number(float, lambda v: math.isfinite(v) and v > 0, "must be positive")
nonnegative_float = _number(float, lambda v: math.isfinite(v) and v >= 0, "must not be negative")
unit_float = _number(float, lambda v: 0 <= v <= 1, "must lie in [0, 1]")
below_one = _number(float, lambda v: 0 <= v < 1, "must lie in [0, 1)")
positive_int = _number(int, lambda v: v >= 1, "must be at least 1")
nonnegative_int = _number(int, lambda v: v >= 0, "must not be negative")
percentile = _number(float, lambda v: 0 < v <= 100, "must be a percentile in (0, 100]")


def add_float_model_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--model --weights --dataset --data-dir``: a registered float network and its data."""
    parser.add_argument("--model", required=True, help=f"architecture: {', '.join(list_models())}")
    parser.add_argument("--weights", required=True, help="float checkpoint (.safetensors, or torch file read with weights_only)")
    parser.add_argument("--dataset", default="cifar10", choices=("cifar10", "cifar100"), help="dataset (default cifar10)")
    parser.add_argument("--data-dir", default=None, help="dataset folder (default $RADIXSNN_DATA_DIR, else ~/.cache/radixsnn/data)")


def add_model_args(parser: argparse.ArgumentParser, images_default: int | None) -> None:
    """Add ``--model --weights --dataset --data-dir --images --batch-size``."""
    add_float_model_args(parser)
    what = "all" if images_default is None else str(images_default)
    parser.add_argument("--images", type=positive_int, default=images_default, metavar="N", help=f"use the first N test images (default {what})")
    parser.add_argument("--batch-size", type=positive_int, default=100, help="images per batch (default 100)")


def load_float_model(args) -> nn.Module:
    """The float network named by ``--model`` with ``--weights`` loaded, in eval mode."""
    return create_model(args.model, num_classes=num_classes(args.dataset), weights=args.weights)


def load_test_images(args) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``--images`` test images and labels of ``--dataset``."""
    images, labels = load_cifar(args.dataset, args.data_dir, train=False)
    if args.images is not None:
        if args.images < 1:
            raise ConfigError("images", f"must be at least 1, got {args.images}")
        images, labels = images[: args.images], labels[: args.images]
    if args.batch_size < 1:
        raise ConfigError("batch_size", f"must be at least 1, got {args.batch_size}")
    return images, labels
