"""``radixsnn demo``: the whole pipeline in a few minutes on a laptop CPU.

1. data: CIFAR-10 when it is found (``--data-dir``, ``$RADIXSNN_DATA_DIR`` or the cache folder; with
   ``--download`` it is fetched), otherwise scikit-learn's handwritten digits, which need no download;
2. a float network: the pretrained CIFAR-10 ResNet-20 (``--weights`` or
   ``$RADIXSNN_MODELS_DIR/resnet20-12fca82f.th``), otherwise a ResNet-20 trained here for a few epochs;
3. ``radixsnn finetune`` at a small T on a subset: calibration, a short quantization-aware fine-tune,
   conversion to the integer SNN, and a spike-by-spike simulation of test images;
4. a check that the SNN's outputs equal the QANN's exactly, and a Table-2-style summary.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from radixsnn.data import DataError, prepare_dataset
from radixsnn.errors import RadixSNNError

PRETRAINED = "resnet20-12fca82f.th"
MODELS_ENV = "RADIXSNN_MODELS_DIR"

#: How much work each stage does, per dataset (sized for two CPU cores).
PLAN = {
    "cifar10": {"train_subset": 2000, "train_epochs": 3, "finetune_subset": 512, "test_images": 500},
    "digits": {"train_subset": None, "train_epochs": 4, "finetune_subset": 512, "test_images": 300},
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the whole pipeline in a few minutes on a CPU: float net -> QAT -> radix SNN -> exact check",
        description=(
            "Run the pipeline end to end on a small scale: pick the data (CIFAR-10 if found, else scikit-learn's "
            "digits), take the pretrained ResNet-20 or train one briefly, fine-tune its T-step QANN, convert it to "
            "a radix SNN, simulate the spikes on test images, check SNN == QANN exactly and print a summary."
        ),
    )
    p.add_argument("--time-steps", "-T", type=int, default=4, help="time steps T of the SNN (default 4)")
    p.add_argument("--weights", default=None, help=f"float CIFAR-10 ResNet-20 weights (default ${MODELS_ENV}/{PRETRAINED} if present)")
    p.add_argument("--data-dir", default=None, help="dataset folder (default $RADIXSNN_DATA_DIR, else ~/.cache/radixsnn/data)")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 if it is not found (else the digits are used)")
    p.add_argument("--images", type=int, default=None, metavar="N", help="test images to simulate (default 500 CIFAR-10 / 300 digits)")
    p.add_argument("--out", default="runs/demo", help="folder for the demo's runs (default runs/demo; a rerun reuses them)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:INDEX (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument(
        "--threads", type=int, default=1,
        help="CPU threads for PyTorch (default 1: the demo's small batches gain little from more, "
        "and on a busy machine extra threads can make it many times slower)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def choose_dataset(data_dir, download: bool) -> str:
    """``cifar10`` when its test and training splits are there (or downloaded), else ``digits``."""
    try:
        prepare_dataset("cifar10", data_dir, download=download, train=True)
        return "cifar10"
    except DataError as exc:
        print(f"CIFAR-10 not found: {exc}")
        print("Using scikit-learn's 8x8 handwritten digits instead (1,497 training / 300 test images, scaled to 3x32x32).")
        return "digits"


def find_weights(weights: str | None) -> Path | None:
    """``--weights``, else the pretrained ResNet-20 in ``$RADIXSNN_MODELS_DIR``, else ``None``."""
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise RadixSNNError(f"weights file not found: {path}")
        return path
    folder = os.environ.get(MODELS_ENV)
    if folder and (Path(folder) / PRETRAINED).is_file():
        return Path(folder) / PRETRAINED
    return None


def _cli(argv: list[str]) -> None:
    from radixsnn.cli import main

    print("$ radixsnn " + " ".join(argv))
    if main(argv) != 0:
        raise RadixSNNError(f"the demo step `radixsnn {argv[0]}` failed (see above)")


def run(args) -> int:
    if args.images is not None and args.images < 1:
        raise RadixSNNError(f"--images must be at least 1, got {args.images}")
    if args.threads < 1:
        raise RadixSNNError(f"--threads must be at least 1, got {args.threads}")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _demo(args)
    finally:
        torch.set_num_threads(threads)


def _demo(args) -> int:
    start = time.perf_counter()
    dataset = choose_dataset(args.data_dir, args.download)
    plan = PLAN[dataset]
    images = args.images or plan["test_images"]
    weights = find_weights(args.weights)
    if weights is not None and dataset != "cifar10":
        if args.weights:
            raise RadixSNNError("--weights holds a CIFAR-10 network, but CIFAR-10 is not available (pass --data-dir)")
        weights = None
    out = Path(args.out)
    common = ["--device", args.device, "--seed", str(args.seed)]
    if args.data_dir:
        common += ["--data-dir", args.data_dir]
    if args.no_progress:
        common.append("--no-progress")
    if (out / dataset).exists():
        print(f"reusing the earlier demo runs in {out / dataset} (delete it to start over)")

    if weights is None:
        float_dir = out / dataset / "float"
        print(f"\n== 1. train a float ResNet-20 on {dataset} ({plan['train_epochs']} epochs) ==")
        argv = [
            "train", "--model", "resnet20", "--dataset", dataset, "--epochs", str(plan["train_epochs"]),
            "--batch-size", "64", "--lr", "0.05", "--schedule", "cosine", "--test-subset", str(images),
            "--out", str(float_dir), "--resume", *common,
        ]
        if plan["train_subset"]:
            argv += ["--train-subset", str(plan["train_subset"])]
        _cli(argv)
        weights = float_dir / "last.safetensors"
        how = f"trained here for {plan['train_epochs']} epochs"
    else:
        print(f"\n== 1. float network: {weights} ==")
        how = "pretrained"

    snn_dir = out / dataset / f"t{args.time_steps}"
    print(f"\n== 2. fine-tune the {args.time_steps}-step QANN, convert it to a radix SNN, simulate its spikes ==")
    _cli([
        "finetune", "--model", "resnet20", "--dataset", dataset, "--weights", str(weights),
        "--time-steps", str(args.time_steps), "--epochs", "1", "--batch-size", "64",
        "--train-subset", str(plan["finetune_subset"]), "--calib-images", "256", "--test-subset", str(images),
        "--eval-images", str(images), "--out", str(snn_dir), "--resume", *common,
    ])
    result = json.loads((snn_dir / "eval.json").read_text())
    calibrated = json.loads((snn_dir / "last.json").read_text()).get("calibrated") or {}
    print(summary(result, calibrated, dataset, how, time.perf_counter() - start))
    if result["agreement"] != 1.0:
        raise RadixSNNError(f"the SNN's outputs differ from the QANN's on {100 * (1 - result['agreement']):.2f}% of the images")
    return 0


def summary(result: dict, calibrated: dict, dataset: str, how: str, seconds: float) -> str:
    """A Table-2-style summary of the demo's SNN."""

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}%"

    cal = calibrated.get("test_acc")
    rows = [
        ("model", f"ResNet-20 ({how})"),
        ("dataset", f"{dataset}, first {result['images']} test images"),
        ("time steps T / weight bits", f"{result['time_steps']} / {result['weight_bits']}"),
        ("float accuracy", pct(result["fp_accuracy"])),
        ("QANN accuracy, calibrated only", "n/a" if cal is None else f"{cal:.2f}%"),
        ("QANN accuracy, fine-tuned", pct(result["qann_accuracy"])),
        ("SNN accuracy (spike simulation)", pct(result["accuracy"])),
        ("SNN logits == QANN logits", f"{pct(result['agreement'])} of images"),
        ("operations / image (Eq. 24)", f"{result['ops']:.3e}"),
        ("spikes / image", "n/a" if result.get("spikes_per_image") is None else f"{result['spikes_per_image']:.4g}"),
        ("demo wall time", f"{seconds:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 40)
    return "\n".join(["", line, "radix SNN demo summary", line] + [f"{k:<{width}}  {v}" for k, v in rows] + [line])
