"""``radixsnn train``: train a float CNN from scratch (SGD with momentum), resumable, DDP under torchrun."""
from __future__ import annotations

from radixsnn.cli.training_options import add_run_options, add_runtime_options, run_config
from radixsnn.data import ALL_DATASETS
from radixsnn.models import list_models
from radixsnn.training.float_run import TRAIN_DEFAULTS, train_run


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
    p.add_argument("--dataset", choices=ALL_DATASETS, help=f"dataset (default {TRAIN_DEFAULTS['dataset']})")
    add_run_options(p, TRAIN_DEFAULTS)
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    config, given = run_config(args, TRAIN_DEFAULTS)
    train_run(config, args.out, given=given, resume=args.resume, data_dir=args.data_dir, download=args.download,
              device=args.device, amp=args.amp, progress=not args.no_progress, workers=args.workers)
    return 0
