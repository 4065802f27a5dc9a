"""Options shared by the commands that read a float network (``convert``, ``finetune``, ``rmse``, ``rate``,
``sweep``): one definition of how a model is named and loaded from the command line.

``--model`` is a registered name, ``package.module:callable`` or ``path/to/file.py:callable``;
``--model-args`` (JSON), ``--mean`` / ``--std`` and ``--input-shape`` describe a model from outside the
registry; ``--weights`` is a checkpoint in any common layout. ``--dataset/--data-dir/--images`` select
the data, and step lists such as ``--time-steps`` accept ``2..10``, ``8,16,32`` or a mix (``1..4,8,16``).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn as nn

from radixsnn.core.qann import DEFAULT_GAINS, DEFAULT_WEIGHT_GRID, GAINS, WEIGHT_GRIDS
from radixsnn.core.inputs import CONFIG_ATTRIBUTE
from radixsnn.data import (ALL_DATASETS, DEFAULT_WORKERS, INTERPOLATIONS, Preprocess, TensorImages, first_images, num_classes, open_split,
                           preprocess_of, take_images)
from radixsnn.errors import ConfigError
from radixsnn.models import list_models, load_model


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
crop_fraction = _number(float, lambda v: 0 < v <= 1, "must lie in (0, 1]")


def json_object(text: str) -> dict:
    """``'{"num_classes": 100}'`` -> a dict; an argparse ``type``."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r} ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object such as '{{\"num_classes\": 100}}', got {text!r}")
    return value


def layer_values(text: str) -> int | dict:
    """One integer (``4``), a per-layer assignment (``default=4,layer3.2.conv2=6``) or a JSON file of one
    (``{"default": 4, "layer3_2_conv2": 6}``, as ``radixsnn search`` writes; a layer's value may be a list,
    one per output channel, where the option takes per-channel values); an argparse ``type``. The layer
    names and list lengths are checked against the model when it is quantized."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    if "=" not in text:
        path = Path(text)
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"must be an integer, 'default=V,LAYER=V,...' or a JSON file, got {text!r}")
        try:
            value = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(f"{text}: not a JSON file of per-layer values ({exc})") from None
        def integer(v):
            return isinstance(v, int) and not isinstance(v, bool)

        if not isinstance(value, dict) or not integer(value.get("default")) or \
                not all(integer(v) or isinstance(v, list) and v and all(map(integer, v)) for v in value.values()):
            raise argparse.ArgumentTypeError(f"{text}: must hold a JSON object with an integer 'default' and, per "
                                             "layer, an integer or a list of integers (one per output channel)")
        return value
    value = {}
    for part in text.split(","):
        name, sep, v = part.partition("=")
        try:
            value[name.strip()] = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be 'default=V,LAYER=V,...' with integer values, got {part!r}") from None
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"must be 'default=V,LAYER=V,...', got {part!r}")
    if "default" not in value:
        raise argparse.ArgumentTypeError(f"a per-layer assignment needs a 'default=V', got {text!r}")
    return value


def channel_steps_text(channel_time_steps: dict[str, list[int]]) -> str:
    """``layer1_0_conv1=2..6 (mean 4.25), ...``: the layers whose channels have their own T, for printing."""
    return ", ".join(f"{k}={min(v)}..{max(v)} (mean {sum(v) / len(v):.2f})" for k, v in channel_time_steps.items())


def shape3(text: str) -> list[int]:
    """``"3,32,32"`` -> ``[3, 32, 32]``; an argparse ``type``."""
    try:
        shape = [int(p) for p in text.replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be C,H,W such as 3,32,32, got {text!r}") from None
    if len(shape) != 3 or not all(1 <= d <= 4096 for d in shape):
        raise argparse.ArgumentTypeError(f"must be C,H,W with sizes in 1..4096, got {text!r}")
    return shape


def add_weight_grid_args(parser: argparse.ArgumentParser, defaults: dict | None = None) -> None:
    """Add ``--weight-grid`` and ``--gains``. With ``defaults`` (a run's defaults table) the options default
    to ``None``, so that a resumed run can tell them apart; the help shows the table's values."""
    grid = DEFAULT_WEIGHT_GRID if defaults is None else defaults["weight_grid"]
    gains = DEFAULT_GAINS if defaults is None else defaults["gains"]
    parser.add_argument("--weight-grid", choices=WEIGHT_GRIDS, default=None if defaults is not None else grid,
                        help="the shift dT that sets a layer's weight grid: mse = least squared weight error, the largest "
                        f"weights clipped; max = the largest shift that clips no weight (default {grid})")
    parser.add_argument("--gains", choices=GAINS, default=None if defaults is not None else gains,
                        help="shortcut gains: delayed = b-bit weights on spikes delayed k steps (gain m 2^k); "
                        f"plain = b-bit weights (default {gains})")


def add_model_spec_args(parser: argparse.ArgumentParser, required: bool = True, defaults: dict | None = None) -> None:
    """Add ``--model --model-args --mean --std --input-shape --weights`` (``defaults``: the run's defaults
    table, for commands whose options default to ``None`` so that a resumed run can tell them apart)."""
    need = " (required for a new run)" if not required else ""
    parser.add_argument("--model", required=required, metavar="NAME|MODULE:FN|FILE.py:FN",
                        help=f"a registered architecture ({', '.join(list_models())}), package.module:callable or "
                        f"path/to/file.py:callable{need}")
    parser.add_argument("--model-args", type=json_object, metavar="JSON",
                        help="keyword arguments of a callable --model, as a JSON object, e.g. '{\"num_classes\": 100}'")
    parser.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"),
                        help="input normalization: per-channel mean of pixels scaled to [0, 1] (a registered model has its own)")
    parser.add_argument("--std", type=positive_float, nargs=3, metavar=("R", "G", "B"),
                        help="input normalization: per-channel standard deviation (a registered model has its own)")
    parser.add_argument("--input-shape", type=shape3, metavar="C,H,W", help="one input image's shape (default 3,32,32)")
    add_preprocess_args(parser, "the model's")
    parser.add_argument("--weights", required=required, help="float checkpoint: a state dict, {state_dict|model|net|model_state_dict: ...}, "
                        f"DataParallel 'module.' keys, safetensors or a radixsnn checkpoint; torch files read with weights_only{need}")


def add_preprocess_args(parser: argparse.ArgumentParser, default: str) -> None:
    """Add ``--crop-pct --interpolation``: how a folder's images are brought to the input size."""
    parser.add_argument("--crop-pct", type=crop_fraction, metavar="F",
                        help="folder images: resize the shorter side to max(H, W) / F, then take the centre H x W crop "
                        f"(default {default}: 1.0 for the CIFAR models, 0.875 for torchvision's)")
    parser.add_argument("--interpolation", choices=INTERPOLATIONS,
                        help=f"folder images: the resampling filter of the resize (default {default}: bilinear)")


def add_data_args(parser: argparse.ArgumentParser, datasets=ALL_DATASETS, default: str | None = "cifar10") -> None:
    """Add ``--dataset --data-dir --workers``."""
    what = default or "the file's"
    parser.add_argument("--dataset", default=default, choices=datasets,
                        help=f"dataset (default {what}); folder: --data-dir holds train/ and val/ with one "
                        "sub-folder of images per class")
    parser.add_argument("--data-dir", default=None, help="dataset folder (default $RADIXSNN_DATA_DIR, else ~/.cache/radixsnn/data; "
                        "required for --dataset folder)")
    parser.add_argument("--workers", type=nonnegative_int, default=DEFAULT_WORKERS,
                        help=f"processes decoding folder images (default {DEFAULT_WORKERS}, 0 = decode in this one)")


def add_progress_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--no-progress``: the command's progress bars off (its results are printed as before)."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def recorded_options(args: argparse.Namespace, *omit: str) -> dict:
    """The command's options as its output files record them: all but the handler, the options that only
    change how it runs (``--no-progress``) and ``omit``."""
    return {k: v for k, v in vars(args).items() if k not in ("func", "no_progress", *omit)}


def add_float_model_args(parser: argparse.ArgumentParser) -> None:
    """Add the model options and ``--dataset --data-dir``: a float network and its data."""
    add_model_spec_args(parser)
    add_data_args(parser, ("cifar10", "cifar100", "folder"))


def add_model_args(parser: argparse.ArgumentParser, images_default: int | None) -> None:
    """Add ``--model --weights --dataset --data-dir --images --batch-size``."""
    add_float_model_args(parser)
    what = "all" if images_default is None else str(images_default)
    parser.add_argument("--images", type=positive_int, default=images_default, metavar="N", help=f"use N test images: the first N (of a folder, N spread evenly over it) (default {what})")
    parser.add_argument("--batch-size", type=positive_int, default=100, help="images per batch (default 100)")


def load_float_model(args) -> nn.Module:
    """The float network named by ``--model`` with ``--weights`` loaded, in eval mode."""
    return load_model(args.model, model_args=args.model_args, num_classes=num_classes(args.dataset, args.data_dir),
                      weights=args.weights, mean=args.mean, std=args.std, input_shape=args.input_shape,
                      crop_pct=args.crop_pct, interpolation=args.interpolation)


def model_preprocess(model: nn.Module, args, input_shape=None) -> Preprocess:
    """How ``--dataset folder`` images become ``model``'s input (``input_shape``, default its config's): its
    config's crop and filter, or the defaults for a model without one, ``--crop-pct`` and ``--interpolation``
    overriding them."""
    return preprocess_of(getattr(model, CONFIG_ATTRIBUTE, None), input_shape, args.crop_pct, args.interpolation)


def load_test_images(args, preprocess: Preprocess | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``--images`` test images and labels of ``--dataset`` (:func:`radixsnn.data.first_images`; a folder's
    decoded through ``preprocess``): these commands hold their images in memory, ``--images`` bounds them."""
    if args.images is not None and args.images < 1:
        raise ConfigError("images", f"must be at least 1, got {args.images}")
    if args.batch_size < 1:
        raise ConfigError("batch_size", f"must be at least 1, got {args.batch_size}")
    split = open_split(args.dataset, args.data_dir, train=False, preprocess=preprocess)
    chosen = first_images(split, args.images)
    if isinstance(split, TensorImages):
        return split.images[:len(chosen)], split.targets[:len(chosen)]
    return take_images(split, chosen, args.workers), split.targets[chosen]


def check_fits_dataset(graph, dataset: str, data_dir=None) -> None:
    """A converted network must take the dataset's images (CIFAR: 3x32x32; a folder's are cropped to the
    network's input) and have one output per class."""
    if dataset != "folder" and list(graph.input.shape) != [3, 32, 32]:
        raise ConfigError("input_shape", f"{graph.input.shape} is not the {dataset} images' [3, 32, 32]")
    classes = num_classes(dataset, data_dir)
    if graph.output.channels != classes:
        raise ConfigError("dataset", f"{dataset} has {classes} classes but the model has {graph.output.channels} "
                                     "outputs (set them with --model-args, or choose --dataset)")
