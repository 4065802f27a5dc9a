"""Options shared by the commands that read a pretrained float network (``convert``, ``rmse``, ``rate``, ``sweep``).

``--model/--weights/--dataset/--data-dir/--images`` select the network and the test images, and
step lists such as ``--time-steps`` accept ``2..10``, ``8,16,32`` or a mix (``1..4,8,16``).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn

from radixsnn.data import load_cifar, num_classes
from radixsnn.errors import ConfigError
from radixsnn.models import create_model, list_models


def int_list(text: str) -> list[int]:
    """``"2..5,8"`` -> ``[2, 3, 4, 5, 8]`` (sorted, without repeats); an argparse ``type``."""
    values: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if ".." in part:
                lo, hi = (int(p) for p in part.split(".."))
                if lo > hi:
                    raise ValueError
                values.update(range(lo, hi + 1))
            else:
                values.add(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 2..10 or 8,16,32, got {text!r}") from None
    return sorted(values)


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
    parser.add_argument("--images", type=int, default=images_default, metavar="N", help=f"use the first N test images (default {what})")
    parser.add_argument("--batch-size", type=int, default=100, help="images per batch (default 100)")


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
