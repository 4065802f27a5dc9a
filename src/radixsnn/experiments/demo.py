"""The demo: the whole pipeline in a few minutes on a laptop CPU (what ``radixsnn demo`` runs).

1. data: CIFAR-10 when it is found (``data_dir``, ``$RADIXSNN_DATA_DIR`` or the cache folder; with
   ``download`` it is fetched), otherwise scikit-learn's handwritten digits, which need no download;
2. a float network: the pretrained CIFAR-10 ResNet-20 (``weights`` or
   ``$RADIXSNN_MODELS_DIR/resnet20-12fca82f.th``), otherwise a ResNet-20 trained here for a few epochs
   (:func:`radixsnn.training.train_run`);
3. a fine-tuning run at a small T on a subset (:func:`radixsnn.training.finetune_run`): calibration, a
   short quantization-aware fine-tune, conversion to the integer SNN, and a spike-by-spike simulation
   of test images;
4. a check that the SNN's outputs equal the QANN's exactly.
"""
from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from radixsnn.core.quant import ActQuant
from radixsnn.data.datasets import prepare_dataset
from radixsnn.errors import ConfigError, ConversionError, DataError
from radixsnn.outputs import check_folder
from radixsnn.training.float_run import train_run
from radixsnn.training.qat import finetune_run

PRETRAINED = "resnet20-12fca82f.th"
MODELS_ENV = "RADIXSNN_MODELS_DIR"

#: How much work each stage does, per dataset (sized for two CPU cores).
PLAN = {
    "cifar10": {"train_subset": 2000, "train_epochs": 3, "finetune_subset": 512, "test_images": 500},
    "digits": {"train_subset": None, "train_epochs": 4, "finetune_subset": 512, "test_images": 300},
}


@dataclass
class DemoResult:
    """What the demo measured: the SNN's evaluation, the calibrated QANN's test metrics, and how it got there."""

    evaluation: dict
    calibrated: dict
    dataset: str
    how: str
    seconds: float


def choose_dataset(data_dir, download: bool) -> str:
    """``cifar10`` when its test and training splits are there (or downloaded), else ``digits``."""
    try:
        prepare_dataset("cifar10", data_dir, download=download, train=True)
        return "cifar10"
    except DataError as exc:
        print(f"CIFAR-10 not found: {exc}")
        print("Using scikit-learn's 8x8 handwritten digits instead (1,497 training / 300 test images, scaled to 3x32x32).")
        return "digits"


def find_weights(weights: str | os.PathLike | None) -> Path | None:
    """``weights``, else the pretrained ResNet-20 in ``$RADIXSNN_MODELS_DIR``, else ``None``."""
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise ConfigError("weights", f"file not found: {path}")
        return path
    folder = os.environ.get(MODELS_ENV)
    if folder and (Path(folder) / PRETRAINED).is_file():
        return Path(folder) / PRETRAINED
    return None


def _command(name: str, config: dict, extra: dict) -> str:
    """The ``radixsnn`` command line that runs the same step (printed for the user to rerun)."""
    argv = ["radixsnn", name]
    for key, value in {**config, **extra}.items():
        if value is None or value is False:
            continue
        argv.append("--" + key.replace("_", "-"))
        if value is not True:
            argv.append(str(value))
    return shlex.join(argv)


def run_demo(
    *,
    time_steps: int = 4,
    weights: str | os.PathLike | None = None,
    data_dir=None,
    download: bool = False,
    images: int | None = None,
    out: str | os.PathLike = "runs/demo",
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> DemoResult:
    """Run the demo into ``out`` (a rerun reuses the finished runs); raises :class:`ConversionError` when the
    SNN's outputs differ from the QANN's on any image."""
    if images is not None and images < 1:
        raise ConfigError("images", f"must be at least 1, got {images}")
    ActQuant(time_steps)
    out = check_folder(out, "out")
    start = time.perf_counter()
    dataset = choose_dataset(data_dir, download)
    plan = PLAN[dataset]
    images = images or plan["test_images"]
    given = weights
    weights = find_weights(weights)
    if weights is not None and dataset != "cifar10":
        if given:
            raise ConfigError("weights", "holds a CIFAR-10 network, but CIFAR-10 is not available (give its data folder)")
        weights = None
    out = Path(out)
    runtime = {"device": device, "data_dir": data_dir}
    if (out / dataset).exists():
        print(f"reusing the earlier demo runs in {out / dataset} (delete it to start over)")

    if weights is None:
        float_dir = out / dataset / "float"
        print(f"\n== 1. train a float ResNet-20 on {dataset} ({plan['train_epochs']} epochs) ==")
        config = {"model": "resnet20", "dataset": dataset, "epochs": plan["train_epochs"], "batch_size": 64, "lr": 0.05,
                  "schedule": "cosine", "test_subset": images, "seed": seed, "train_subset": plan["train_subset"]}
        config = {k: v for k, v in config.items() if v is not None}
        print("$ " + _command("train", config, {"out": float_dir, "resume": True, **runtime}))
        train_run(config, float_dir, resume=True, data_dir=data_dir, device=device, progress=progress)
        weights = float_dir / "last.safetensors"
        how = f"trained here for {plan['train_epochs']} epochs"
    else:
        print(f"\n== 1. float network: {weights} ==")
        how = "pretrained"

    snn_dir = out / dataset / f"t{time_steps}"
    print(f"\n== 2. fine-tune the {time_steps}-step QANN, convert it to a radix SNN, simulate its spikes ==")
    config = {"model": "resnet20", "dataset": dataset, "weights": str(weights), "time_steps": time_steps, "epochs": 1,
              "batch_size": 64, "train_subset": plan["finetune_subset"], "calib_images": 256, "test_subset": images,
              "seed": seed}
    print("$ " + _command("finetune", config, {"eval_images": images, "out": snn_dir, "resume": True, **runtime}))
    finetune_run(config, snn_dir, resume=True, data_dir=data_dir, device=device, engine="spikes", eval_images=images,
                 progress=progress)
    result = json.loads((snn_dir / "eval.json").read_text())
    calibrated = json.loads((snn_dir / "last.json").read_text()).get("calibrated") or {}
    if result["agreement"] != 1.0:
        raise ConversionError(f"the SNN's outputs differ from the QANN's on {100 * (1 - result['agreement']):.2f}% of the images")
    return DemoResult(result, calibrated, dataset, how, time.perf_counter() - start)
