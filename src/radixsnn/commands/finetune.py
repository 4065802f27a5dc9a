"""``radixsnn finetune``: quantization-aware fine-tuning of a float checkpoint into a radix SNN.

The float network is traced into its QANN (T-bit activations, b-bit weights), the activation scales
are calibrated on training images, and the QANN is trained with straight-through estimators by the
same loop as ``radixsnn train`` (same checkpoints, metrics and ``--resume``). The final QANN is
converted to the integer SNN ``OUT/model.snn`` and simulated on the test set by the core evaluator
(the spike engine by default); the results go to ``OUT/eval.json``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from radixsnn.checkpoint import load_weights
from radixsnn.commands._training_options import (
    add_run_options,
    add_runtime_options,
    make_loaders,
    run_config,
    seed_everything,
    train_config,
)
from radixsnn.commands.convert import check_bits, file_sha256
from radixsnn.convert import build_qann
from radixsnn.data import DATASETS, load_dataset, num_classes
from radixsnn.engines import ENGINES
from radixsnn.errors import RadixSNNError
from radixsnn.evaluation import evaluate_snn
from radixsnn.models import create_model, list_models
from radixsnn.qann import QANN
from radixsnn.training import (
    Trainer,
    code_version,
    normalize_pixels,
    open_run,
    pixels_as_float,
    start_runtime,
    stop_runtime,
)
from radixsnn.training.state import write_json

DEFAULTS = {
    "model": None,
    "weights": None,
    "dataset": "cifar10",
    "time_steps": None,
    "weight_bits": 8,
    "input_bits": 8,
    "act_scale": "channel",
    "calib": "mse",
    "calib_images": 1024,
    "epochs": 3,
    "batch_size": 128,
    "lr": None,  # default_lr(T)
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "schedule": "cosine",
    "step_epochs": 30,
    "label_smoothing": 0.0,
    "clip_grad": 1.0,
    "distill": 1.0,
    "seed": 0,
    "train_subset": None,
    "test_subset": None,
    "limit_batches": None,
}


def default_lr(time_steps: int) -> float:
    """The default base learning rate at T steps: 0.03 for T <= 2, else 1e-3.

    Measured on ResNet-20 / CIFAR-10, 3 epochs (docs/results.md): at T = 2 the calibrated QANN starts
    21 points below the float network and needs large steps (85.45 % at 1e-2, 86.30 % at 3e-2); at
    T = 4 it starts 1 point below, and large steps only disturb it (91.29 % at 1e-3, 90.68 % at 3e-2).
    """
    return 3e-2 if time_steps <= 2 else 1e-3


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="quantization-aware fine-tuning (STE) of a float checkpoint, then conversion to an SNN file",
        description=(
            "Build the T-bit QANN of a float checkpoint, calibrate it, fine-tune it with straight-through "
            "estimators (resumable, DDP under torchrun), convert it to OUT/model.snn and evaluate the SNN on "
            "the test set (OUT/eval.json)."
        ),
    )
    p.add_argument("--model", help=f"architecture: {', '.join(list_models())} (required for a new run)")
    p.add_argument("--weights", help="float checkpoint: a radixsnn train checkpoint or a torch file (read with weights_only)")
    p.add_argument("--dataset", choices=DATASETS, help=f"dataset (default {DEFAULTS['dataset']})")
    p.add_argument("--time-steps", "-T", type=int, help="T, the length of every spike train (1..16; required)")
    p.add_argument("--weight-bits", type=int, help=f"signed integer weight width (default {DEFAULTS['weight_bits']})")
    p.add_argument("--input-bits", type=int, help=f"pixel train length, 8 = exact pixels (default {DEFAULTS['input_bits']})")
    p.add_argument(
        "--act-scale", choices=("layer", "channel"),
        help=f"one activation scale per layer or per output channel (default {DEFAULTS['act_scale']})",
    )
    p.add_argument("--calib", help="calibration before fine-tuning: 'mse' (default) or 'percentile:P'")
    p.add_argument("--calib-images", type=int, help=f"training images used for calibration (default {DEFAULTS['calib_images']})")
    add_run_options(p, DEFAULTS, lr_default="0.03 for T <= 2, else 0.001")
    p.add_argument(
        "--distill", type=float, metavar="D",
        help="weight of knowledge distillation from the float network: loss = (1-D) cross-entropy + "
        f"D KL(float || QANN), 0 = plain cross-entropy (default {DEFAULTS['distill']})",
    )
    add_runtime_options(p, amp=False)
    p.add_argument("--engine", choices=ENGINES, default="spikes", help="engine of the final SNN evaluation (default spikes)")
    p.add_argument("--eval-images", type=int, metavar="N", help="final SNN evaluation on the first N test images (default all)")
    p.set_defaults(func=run)


def _float_model(config: dict) -> torch.nn.Module:
    model = create_model(config["model"], num_classes(config["dataset"]))
    return load_weights(model, config["weights"]).eval()


def _teacher(float_model: torch.nn.Module | None, config: dict, qann: QANN, device: torch.device):
    """The frozen float network as a function of uint8 pixels (the distillation target)."""
    if float_model is None:
        raise RadixSNNError(f"--distill needs the float checkpoint {config['weights']}, which is missing")
    model = float_model.to(device).requires_grad_(False)
    attrs = qann.graph.input.attrs
    normalize = normalize_pixels(attrs["mean"], attrs["std"])
    return lambda images: model(normalize(images))


def _build_qann(
    float_model: torch.nn.Module, config: dict, train_images: torch.Tensor, device: torch.device, progress: bool
) -> QANN:
    """The calibrated QANN of the float network (the starting point of fine-tuning)."""
    try:
        qann = build_qann(
            float_model, config["time_steps"], config["weight_bits"], config["input_bits"],
            act_scale=config["act_scale"],
        )
    except ValueError as exc:
        raise RadixSNNError(str(exc)) from None
    if config["calib_images"] < 1:
        raise RadixSNNError(f"--calib-images must be at least 1, got {config['calib_images']}")
    draw = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(config["seed"]))
    qann.to(device)
    try:
        qann.calibrate(train_images[draw[: config["calib_images"]]].to(device), method=config["calib"], progress=progress)
    except ValueError as exc:
        raise RadixSNNError(str(exc)) from None
    return qann


def run(args) -> int:
    config, given = run_config(args, DEFAULTS)
    runtime = start_runtime(args.device)
    try:
        out = Path(args.out)
        config, state = open_run(out, config, given, resume=args.resume, kind="qann", announce=runtime.is_main)
        for key in ("model", "weights", "time_steps"):
            if config[key] is None:
                raise RadixSNNError(f"--{key.replace('_', '-')} is required for a new run")
        if config["model"] not in list_models():
            raise RadixSNNError(f"unknown model {config['model']!r}; choose one of: {', '.join(list_models())}")
        check_bits(config["time_steps"], config["weight_bits"])
        if config["lr"] is None:
            config["lr"] = default_lr(config["time_steps"])
        if args.eval_images is not None and args.eval_images < 1:
            raise RadixSNNError(f"--eval-images must be at least 1, got {args.eval_images}")
        tc = train_config(config)
        train_loader, test_loader = make_loaders(config, args, runtime)
        seed_everything(config["seed"])
        # Loaded once: the start of a new run, the distillation teacher and the final float accuracy.
        # A resumed run goes on without the file unless it distils.
        float_model = _float_model(config) if state is None or Path(config["weights"]).is_file() else None
        if state is None:
            qann = _build_qann(
                float_model, config, train_loader.images, runtime.device, progress=runtime.is_main and not args.no_progress
            )
        else:
            qann = QANN.from_spec(state.meta["spec"])
        meta = {
            "kind": "qann",
            "model": config["model"],
            "dataset": config["dataset"],
            "num_classes": num_classes(config["dataset"]),
            "spec": qann.spec,
            "config": config,
        }
        teacher = _teacher(float_model, config, qann, runtime.device) if tc.distill > 0 else None
        trainer = Trainer(
            qann, tc, runtime, out,
            train_loader=train_loader, test_loader=test_loader, preprocess=pixels_as_float,
            meta=meta, progress=not args.no_progress, teacher=teacher,
        )
        if state is not None:
            trainer.restore(state)
            meta["calibrated"] = state.meta.get("calibrated")
        else:
            # The post-training (calibrated, not yet fine-tuned) QANN on the same test images.
            meta["calibrated"] = trainer.evaluate()
            if runtime.is_main:
                print(
                    f"calibrated {config['time_steps']}-step QANN before fine-tuning: test loss "
                    f"{meta['calibrated']['test_loss']:.4f} acc {meta['calibrated']['test_acc']:.2f}%"
                )
        ran = trainer.start_epoch < tc.epochs
        trainer.fit()
        if runtime.is_main:
            if not ran and _evaluated(out, len(trainer.history), args):
                print(f"{out}: all {tc.epochs} epochs are done and evaluated (see {out / 'eval.json'})")
            else:
                _convert_and_evaluate(
                    trainer.model, float_model, config, args, out, runtime.device, len(trainer.history)
                )
    finally:
        stop_runtime(runtime)
    return 0


def _evaluated(out: Path, epochs: int, args) -> bool:
    """Whether ``OUT/eval.json`` already reports this run's final SNN under the same evaluation options."""
    try:
        done = json.loads((out / "eval.json").read_text())
    except (OSError, ValueError):
        return False
    return (out / "model.snn").is_file() and done.get("run_epochs") == epochs and done.get("engine") == args.engine \
        and done.get("eval_images_option") == args.eval_images


def _convert_and_evaluate(
    qann: QANN, float_model: torch.nn.Module | None, config: dict, args, out: Path, device: torch.device, epochs: int
) -> dict:
    """Write ``OUT/model.snn`` from the fine-tuned QANN and ``OUT/eval.json`` from simulating it."""
    qann.eval()
    weights = Path(config["weights"])
    metadata = {
        "model": config["model"],
        "dataset": config["dataset"],
        "num_classes": num_classes(config["dataset"]),
        "weights": str(weights.resolve()),
        "weights_sha256": file_sha256(weights) if weights.is_file() else None,
        "how": "quantization-aware fine-tuning",
        "finetune_run": str(out.resolve()),
        "epochs": epochs,
        "config": config,
        "code": code_version(),
    }
    snn = qann.to_snn(metadata)
    path = snn.save(out / "model.snn")
    images, labels = load_dataset(config["dataset"], args.data_dir, train=False)
    start = time.perf_counter()
    result = evaluate_snn(
        snn, images, labels, args.engine, qann=qann, float_model=float_model,
        device=device, limit=args.eval_images, progress=not args.no_progress,
    )
    result.update(
        file=str(path), dataset=config["dataset"], run_epochs=epochs, eval_images_option=args.eval_images,
        wall_seconds=time.perf_counter() - start,
    )
    write_json(out / "eval.json", result)
    fp = result["fp_accuracy"]
    print(
        f"{config['model']} T={snn.time_steps}: SNN {100 * result['accuracy']:.2f}%  QANN {100 * result['qann_accuracy']:.2f}%  "
        f"float {'n/a' if fp is None else f'{100 * fp:.2f}%'}  SNN == QANN on {100 * result['agreement']:.2f}% of "
        f"{result['images']} images ({args.engine} engine); wrote {path} and {out / 'eval.json'}"
    )
    return result
