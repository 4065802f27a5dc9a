"""``radixsnn train``: train a float CNN from scratch (SGD with momentum), resumable, DDP under torchrun."""
from __future__ import annotations

from pathlib import Path

from radixsnn.commands._training_options import (
    add_run_options,
    add_runtime_options,
    make_loaders,
    run_config,
    seed_everything,
    train_config,
    use_channels_last,
)
from radixsnn.data import DATASETS, MEAN, STD, num_classes
from radixsnn.errors import RadixSNNError
from radixsnn.models import create_model, list_models
from radixsnn.training import Trainer, normalize_pixels, open_run, start_runtime, stop_runtime

DEFAULTS = {
    "model": None,
    "dataset": "cifar10",
    "epochs": None,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "schedule": "step",
    "step_epochs": 30,
    "label_smoothing": 0.0,
    "clip_grad": None,
    "seed": 0,
    "train_subset": None,
    "test_subset": None,
    "limit_batches": None,
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a float network (SGD, step or cosine schedule; resumable; DDP under torchrun)",
        description=(
            "Train a float CNN on CIFAR-10/100 (or the offline digits set) with SGD and momentum, "
            "evaluating on the test split after every epoch. Writes OUT/last.{safetensors,json}, "
            "OUT/best.{safetensors,json} and OUT/metrics.jsonl. Launch with torchrun for several GPUs."
        ),
    )
    p.add_argument("--model", help=f"architecture: {', '.join(list_models())} (required for a new run)")
    p.add_argument("--dataset", choices=DATASETS, help=f"dataset (default {DEFAULTS['dataset']})")
    add_run_options(p, DEFAULTS)
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    config, given = run_config(args, DEFAULTS)
    runtime = start_runtime(args.device)
    try:
        out = Path(args.out)
        config, state = open_run(out, config, given, resume=args.resume, kind="float", announce=runtime.is_main)
        if config["model"] is None:
            raise RadixSNNError("--model is required for a new run")
        if config["model"] not in list_models():
            raise RadixSNNError(f"unknown model {config['model']!r}; choose one of: {', '.join(list_models())}")
        tc = train_config(config)
        classes = num_classes(config["dataset"])
        train_loader, test_loader = make_loaders(config, args, runtime)
        seed_everything(config["seed"])
        model = create_model(config["model"], classes)
        meta = {
            "kind": "float",
            "model": config["model"],
            "dataset": config["dataset"],
            "num_classes": classes,
            "input": {"mean": list(MEAN), "std": list(STD)},
            "config": config,
        }
        trainer = Trainer(
            model, tc, runtime, out,
            train_loader=train_loader, test_loader=test_loader, preprocess=normalize_pixels(MEAN, STD),
            meta=meta, amp=args.amp, channels_last=use_channels_last(runtime), progress=not args.no_progress,
        )
        if state is not None:
            trainer.restore(state)
        if runtime.is_main and trainer.start_epoch >= tc.epochs:
            print(f"{out}: all {tc.epochs} epochs are done (raise --epochs to train longer)")
        trainer.fit()
        if runtime.is_main and trainer.best is not None:
            print(f"best test accuracy {trainer.best['test_acc']:.2f}% (epoch {trainer.best['epoch']}); checkpoints in {out}")
    finally:
        stop_runtime(runtime)
    return 0
