"""Float training run (what ``radixsnn train`` and the demo call): a registered model trained from scratch
by the shared :class:`~radixsnn.training.trainer.Trainer`, resumable, DDP under ``torchrun``."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from radixsnn.core.inputs import normalize
from radixsnn.data.datasets import num_classes
from radixsnn.data.folder import DEFAULT_WORKERS, preprocess_of
from radixsnn.errors import ConfigError
from radixsnn.models import create_model, list_models, model_config
from radixsnn.outputs import check_folder
from radixsnn.training.run import make_loaders, open_run, seed_everything, train_config
from radixsnn.training.runtime import check_amp, run_in_group
from radixsnn.training.trainer import Trainer

#: The options of a float training run and their defaults (``radixsnn train`` shows these).
TRAIN_DEFAULTS = {
    "model": None,
    "dataset": "cifar10",
    "epochs": None,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 1e-4,
    "schedule": "step",
    "warmup_epochs": 0,
    "step_epochs": 30,
    "label_smoothing": 0.0,
    "mixup": 0.0,
    "ema": 0.0,
    "clip_grad": None,
    "eval_every": 1,
    "seed": 0,
    "train_subset": None,
    "test_subset": None,
    "limit_batches": None,
}


def train_run(
    config: dict,
    out_dir: str | Path,
    *,
    given: set[str] | None = None,
    resume: bool = False,
    data_dir=None,
    download: bool = False,
    device: str = "auto",
    amp: str | None = None,
    progress: bool = True,
    workers: int = DEFAULT_WORKERS,
) -> dict | None:
    """Train ``config['model']`` on ``config['dataset']`` into ``out_dir``; returns the best epoch
    (``{"epoch", "test_acc"}``) or ``None`` when no epoch has run.

    ``config`` holds the keys of :data:`TRAIN_DEFAULTS` (missing ones take the defaults); ``given`` names
    the options set explicitly, which must agree with a resumed run's.
    """
    given = set(config) if given is None else set(given)
    config = {**TRAIN_DEFAULTS, **config}
    out = check_folder(out_dir, "out")
    def work(runtime) -> dict | None:
        nonlocal config  # the resumed run's
        check_amp(amp, runtime.device)
        config, state = open_run(out, config, given, resume=resume, kind="float", announce=runtime.is_main)
        if config["model"] is None:
            raise ConfigError("model", "is required for a new run")
        if config["model"] not in list_models():
            raise ConfigError("model", f"{config['model']!r} is unknown; choose one of: {', '.join(list_models())}")
        tc = train_config(config)
        classes = num_classes(config["dataset"], data_dir)
        train_loader, test_loader = make_loaders(config, runtime, data_dir, download,
                                                 preprocess=preprocess_of(model_config(config["model"])), workers=workers)
        seed_everything(config["seed"])
        model = create_model(config["model"], num_classes=classes)
        cfg = model_config(config["model"])
        meta = {
            "kind": "float",
            "model": config["model"],
            "dataset": config["dataset"],
            "num_classes": classes,
            "input": {"mean": list(cfg.mean), "std": list(cfg.std)},
            "config": config,
        }
        trainer = Trainer(
            model, tc, runtime, out,
            train_loader=train_loader, test_loader=test_loader, preprocess=partial(normalize, mean=cfg.mean, std=cfg.std),
            # channels_last in every precision: oneDNN's CPU convolutions are faster in it in float32 too
            # (VGG-16 by 7 %, ResNet-20 by 31 %: docs/benchmarks.md), and CUDA's tensor cores want it.
            meta=meta, amp=amp, channels_last=True, progress=progress,
        )
        if state is not None:
            trainer.restore(state)
        if runtime.is_main and trainer.start_epoch >= tc.epochs:
            print(f"{out}: all {tc.epochs} epochs are done (raise epochs to train longer)")
        trainer.fit()
        if runtime.is_main and trainer.best is not None:
            print(f"best test accuracy {trainer.best['test_acc']:.2f}% (epoch {trainer.best['epoch']}); checkpoints in {out}")
        return trainer.best

    return run_in_group(device, work)
