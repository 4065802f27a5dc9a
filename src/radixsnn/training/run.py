"""Starting or resuming a run in an output folder, and what every run sets up (config, data, seed).

A run is defined by its configuration (a flat dict of options, the keys of a command's defaults
table). ``resume`` loads ``OUT/last.safetensors`` and continues with the saved configuration; options
given again must agree with it, except ``epochs``, which may be raised to extend a finished run.
"""
from __future__ import annotations

from pathlib import Path

import torch

from radixsnn.data.augment import augmentation_for
from radixsnn.data.datasets import load_dataset
from radixsnn.data.folder import DEFAULT_WORKERS, Preprocess
from radixsnn.data.splits import draw_subset, open_split
from radixsnn.data.loader import DeviceLoader, StreamLoader
from radixsnn.errors import ConfigError
from radixsnn.training.runtime import Runtime
from radixsnn.training.state import RunState, load_run
from radixsnn.training.trainer import TrainConfig

#: Options that may differ between a run and its resumption (``eval_every`` changes no weights).
RESUMABLE_CHANGES = ("epochs", "eval_every")
#: Evaluation batch size (it changes no result, only speed and memory).
EVAL_BATCH_SIZE = 500


def open_run(
    out_dir: Path, config: dict, given: set[str], *, resume: bool, kind: str, announce: bool = True
) -> tuple[dict, RunState | None]:
    """The configuration to use and the checkpoint to continue from (``None`` for a fresh run).

    ``given`` names the options set explicitly (the others hold defaults); ``announce`` prints what
    happens (the main process only).
    """
    last = Path(out_dir) / "last.safetensors"
    if not last.exists():
        if resume and announce:
            print(f"no checkpoint in {out_dir}: starting a new run")
        return config, None
    if not resume:
        raise ConfigError("resume", f"is needed to continue the run in {out_dir} ({last.name}); pass it, or choose another output folder")
    state = load_run(last)
    if state.meta.get("kind") != kind:
        raise ConfigError("out", f"{last} is a {state.meta.get('kind')} run, not a {kind} run")
    saved = dict(state.meta.get("config") or {})
    for key in sorted(given):
        if key in RESUMABLE_CHANGES or key not in saved:
            continue
        if config[key] != saved[key]:
            raise ConfigError(key, f"{config[key]} differs from the resumed run's {saved[key]}; drop it or choose another output folder")
    for key in RESUMABLE_CHANGES:
        if key in given:
            saved[key] = config[key]
    if announce:
        print(f"resuming {out_dir} after epoch {state.meta['epoch']} of {saved.get('epochs')}")
    return saved, state


def train_config(config: dict) -> TrainConfig:
    """The optimizer settings of a run configuration (validated)."""
    if config.get("epochs") is None:
        raise ConfigError("epochs", "is required")
    for key in ("train_subset", "test_subset"):
        if config.get(key) is not None and config[key] < 1:
            raise ConfigError(key, f"must be at least 1, got {config[key]}")
    return TrainConfig(
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        lr=config["lr"],
        momentum=config["momentum"],
        weight_decay=config["weight_decay"],
        schedule=config["schedule"],
        step_epochs=config["step_epochs"],
        label_smoothing=config["label_smoothing"],
        seed=config["seed"],
        limit_batches=config["limit_batches"],
        clip_grad=config.get("clip_grad"),
        distill=config.get("distill") or 0.0,
        distill_temperature=config.get("distill_temperature") or 1.0,
        mixup=config.get("mixup") or 0.0,
        ema=config.get("ema") or 0.0,
        scale_lr=config.get("scale_lr", 1.0),
        warmup_epochs=config.get("warmup_epochs") or 0.0,
        nesterov=bool(config.get("nesterov")),
        eval_every=config.get("eval_every") or 1,
    )


def make_loaders(config: dict, runtime: Runtime, data_dir=None, download: bool = False, *,
                 preprocess: Preprocess | None = None, workers: int = DEFAULT_WORKERS) -> tuple[DeviceLoader, DeviceLoader]:
    """Training and test loaders of ``config['dataset']`` on the runtime's device, sharded per rank; an image
    folder (read through ``preprocess``) is streamed by ``workers`` processes."""
    dataset = config["dataset"]
    common = dict(device=runtime.device, rank=runtime.rank, world_size=runtime.world_size, limit_batches=config["limit_batches"])
    if dataset == "folder":
        train_split = open_split(dataset, data_dir, train=True, preprocess=preprocess)
        test_split = open_split(dataset, data_dir, train=False, preprocess=preprocess)
        # a folder is sorted by class: its subsets are seeded draws, not its first images
        if config.get("train_subset"):
            train_split = draw_subset(train_split, config["train_subset"], config["seed"])
        if config.get("test_subset"):
            test_split = draw_subset(test_split, config["test_subset"], config["seed"])
        train = StreamLoader(train_split, config["batch_size"], train=True, seed=config["seed"], workers=workers,
                             augment=augmentation_for(dataset), **common)
        return train, StreamLoader(test_split, EVAL_BATCH_SIZE, train=False, workers=workers, **common)
    train_x, train_y = load_dataset(dataset, data_dir, train=True, download=download)
    test_x, test_y = load_dataset(dataset, data_dir, train=False, download=download)
    if config.get("train_subset"):
        train_x, train_y = train_x[: config["train_subset"]], train_y[: config["train_subset"]]
    if config.get("test_subset"):
        test_x, test_y = test_x[: config["test_subset"]], test_y[: config["test_subset"]]
    train = DeviceLoader(
        train_x, train_y, config["batch_size"], train=True, seed=config["seed"], augment=augmentation_for(dataset), **common
    )
    test = DeviceLoader(test_x, test_y, EVAL_BATCH_SIZE, train=False, **common)
    return train, test


def seed_everything(seed: int) -> None:
    """Seed the global generators before a model is built (its initial weights)."""
    torch.manual_seed(seed)
