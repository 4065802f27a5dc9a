"""Options shared by the commands that train (``train``, ``finetune``).

Options that define a run (optimizer settings, data subsets, seed, ...) default to ``None`` on the
parser so a resumed run can tell the options given again from the ones left out; their real
defaults live in the library's defaults table of the run (``TRAIN_DEFAULTS``, ``FINETUNE_DEFAULTS``)
and are filled in by :func:`run_config`.
"""
from __future__ import annotations

import argparse

from radixsnn.cli.options import below_one, nonnegative_float, nonnegative_int, positive_float, positive_int
from radixsnn.data import DEFAULT_WORKERS
from radixsnn.training.trainer import SCHEDULES


def add_run_options(parser: argparse.ArgumentParser, defaults: dict, lr_default: str | None = None) -> None:
    """The options of a training run; ``defaults`` gives each one's default (shown in --help).

    ``lr_default`` describes the learning-rate default where it is not a single number.
    """
    d = defaults
    epochs = "required for a new run" if d["epochs"] is None else f"default {d['epochs']}"
    parser.add_argument("--epochs", type=positive_int, help=f"epochs to train ({epochs}); on --resume it may be raised")
    parser.add_argument("--batch-size", type=positive_int, help=f"global batch size, split over torchrun processes (default {d['batch_size']})")
    parser.add_argument("--lr", type=positive_float, help=f"base learning rate (default {lr_default or d['lr']})")
    parser.add_argument("--momentum", type=below_one, help=f"SGD momentum (default {d['momentum']})")
    parser.add_argument("--nesterov", action="store_true", default=None,
                        help=f"Nesterov momentum (default {'on' if d['nesterov'] else 'off'})")
    parser.add_argument("--weight-decay", type=nonnegative_float, help=f"L2 weight decay (default {d['weight_decay']})")
    parser.add_argument(
        "--schedule", choices=SCHEDULES,
        help="learning-rate schedule: step = halve every --step-epochs epochs, cosine = to 0 over the run, "
        f"constant (default {d['schedule']})",
    )
    parser.add_argument(
        "--warmup-epochs", type=nonnegative_float, metavar="E",
        help=f"raise the learning rate linearly from 0 over the first E epochs, then run the schedule over the rest (default {d['warmup_epochs']})",
    )
    parser.add_argument("--step-epochs", type=positive_int, help=f"epochs between halvings of the step schedule (default {d['step_epochs']})")
    clip = "off" if not d["clip_grad"] else d["clip_grad"]
    parser.add_argument(
        "--clip-grad", type=nonnegative_float, metavar="NORM",
        help=f"clip the gradients' global L2 norm to NORM before each step, 0 = off (default {clip})",
    )
    parser.add_argument("--label-smoothing", type=below_one, help=f"label smoothing of the training loss (default {d['label_smoothing']})")
    parser.add_argument("--mixup", type=nonnegative_float, metavar="ALPHA",
                        help="mixup: train on blends lam x + (1 - lam) x' of two images of the batch, lam ~ Beta(ALPHA, ALPHA), "
                        f"with the loss of both labels (or the teacher's output on the blend) mixed by lam; 0 = off (default {d['mixup']})")
    parser.add_argument("--ema", type=below_one, metavar="DECAY",
                        help="keep an exponential moving average of the weights, a <- DECAY a + (1 - DECAY) w after every step; "
                        f"evaluations, checkpoints and the result are the average; 0 = off (default {d['ema']})")
    parser.add_argument("--eval-every", type=positive_int, metavar="N",
                        help="evaluate on the test split after every N-th epoch and the last; may change on --resume "
                        f"(default {d['eval_every']})")
    parser.add_argument("--seed", type=nonnegative_int, help=f"seed of initialisation, data order and augmentation (default {d['seed']})")
    parser.add_argument("--train-subset", type=positive_int, metavar="N", help="train on the first N training images only (default all)")
    parser.add_argument("--test-subset", type=positive_int, metavar="N", help="evaluate on the first N test images only (default all)")
    parser.add_argument("--limit-batches", type=positive_int, metavar="N", help="stop each epoch's training and evaluation after N batches (smoke tests)")


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """Options that change where and how a run executes; ``--amp`` also the precision of its training passes."""
    parser.add_argument("--out", required=True, help="output folder: checkpoints last.*/best.*, metrics.jsonl")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint (a new run if there is none)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:INDEX (default auto)")
    parser.add_argument(
        "--amp", nargs="?", const="bf16", choices=("bf16", "fp16"), default=None,
        help="mixed precision of the training passes: autocast to bf16 (plain --amp; CUDA, or a CPU, where "
        "evaluation stays float32) or fp16 with loss scaling (CUDA only); default float32",
    )
    parser.add_argument("--data-dir", default=None, help="dataset folder (default $RADIXSNN_DATA_DIR, else ~/.cache/radixsnn/data); "
                        "with --dataset folder: the folder holding train/ and val/, one sub-folder of images per class")
    parser.add_argument("--workers", type=nonnegative_int, default=DEFAULT_WORKERS,
                        help=f"processes decoding folder images (default {DEFAULT_WORKERS}, 0 = decode in this one)")
    parser.add_argument("--download", action="store_true", help="download the official CIFAR archive if the data is missing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (the per-epoch lines stay)")


def run_config(args: argparse.Namespace, defaults: dict) -> tuple[dict, set[str]]:
    """``(config, given)``: the run's options with defaults filled in, and the names set explicitly."""
    config, given = {}, set()
    for key, default in defaults.items():
        value = getattr(args, key, None)
        if value is None:
            config[key] = default
        else:
            config[key] = value
            given.add(key)
    return config, given
