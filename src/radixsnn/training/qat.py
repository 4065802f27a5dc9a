"""Quantization-aware fine-tuning of a QANN, and the fine-tuning run behind ``radixsnn finetune``.

:func:`finetune` trains a calibrated :class:`~radixsnn.core.qann.QANN` with straight-through estimators
by the shared :class:`~radixsnn.training.trainer.Trainer` (optionally distilling from the float
network): the ``finetune`` command, the sweep and the demo all go through it. :func:`finetune_run` is
the whole run: trace and calibrate the float checkpoint, fine-tune (resumable), convert the final QANN
to ``OUT/model.snn`` and evaluate the SNN on the test set (``OUT/eval.json``).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
from tqdm import tqdm

from radixsnn.core.convert import quantize
from radixsnn.core.evaluation import evaluate
from radixsnn.core.inputs import CONFIG_ATTRIBUTE, normalize
from radixsnn.core.qann import ACT_SCALES, DEFAULT_ACT_SCALE, DEFAULT_GAINS, DEFAULT_SHIFT, DEFAULT_WEIGHT_GRID, GAINS, QANN, SHIFTS, WEIGHT_GRIDS
from radixsnn.core.quant import ActQuant, Calibration, WeightQuant, check_each
from radixsnn.data.datasets import num_classes
from radixsnn.data.folder import DEFAULT_WORKERS, Preprocess, folder_classes, preprocess_of
from radixsnn.data.splits import first_images, iterate_batches, open_split
from radixsnn.data.loader import DeviceLoader
from radixsnn.errors import ConfigError
from radixsnn.models import list_models, load_model
from radixsnn.models.weights import file_sha256
from radixsnn.training.run import make_loaders, open_run, seed_everything, train_config
from radixsnn.training.runtime import Runtime, check_amp, start_runtime, stop_runtime
from radixsnn.outputs import check_folder, write_json
from radixsnn.training.state import RunState, code_version
from radixsnn.training.trainer import TrainConfig, Trainer, pixels_as_float

#: The options of a fine-tuning run and their defaults (``radixsnn finetune`` shows these).
FINETUNE_DEFAULTS = {
    "model": None,
    "model_args": None,
    "mean": None,
    "std": None,
    "input_shape": None,
    "crop_pct": None,
    "interpolation": None,
    "weights": None,
    "dataset": "cifar10",
    "time_steps": None,
    "weight_bits": 8,
    "input_bits": 8,
    "act_scale": DEFAULT_ACT_SCALE,
    "shift": DEFAULT_SHIFT,
    "weight_grid": DEFAULT_WEIGHT_GRID,
    "gains": DEFAULT_GAINS,
    "calib": "mse",
    "calib_images": 1024,
    "epochs": 3,
    "batch_size": 128,
    "lr": None,  # default_lr(T)
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 1e-4,
    "schedule": "cosine",
    "warmup_epochs": 0,
    "step_epochs": 30,
    "label_smoothing": 0.0,
    "mixup": 0.0,
    "ema": 0.0,
    "scale_lr": 1.0,
    "clip_grad": 1.0,
    "distill": 1.0,
    "distill_temperature": 1.0,
    "teachers": [],  # NAME=WEIGHTS of float networks distilled from with the model's own (an ensemble)
    "eval_every": 1,
    "seed": 0,
    "train_subset": None,
    "test_subset": None,
    "limit_batches": None,
}


def default_lr(time_steps: int, weight_bits: int = 8) -> float:
    """The default base learning rate: 0.03 for T <= 2, else 0.01 for weights of 3 bits or fewer, else 1e-3.

    At T = 2, or with few weight bits, the calibrated QANN starts far below the float network and needs
    large steps; otherwise it starts close to it, and large steps only disturb it (the measurements are
    in docs/notebook.md).

    >>> default_lr(2), default_lr(8, weight_bits=3), default_lr(8)
    (0.03, 0.01, 0.001)
    """
    if time_steps <= 2:
        return 3e-2
    return 1e-2 if weight_bits <= 3 else 1e-3


def float_teacher(model: nn.Module, mean, std, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The frozen float network as a function of uint8 pixels: the distillation target."""
    model = model.to(device).eval().requires_grad_(False)
    return lambda images: model(normalize(images, mean, std))


def ensemble_teacher(teachers: list[Callable[[torch.Tensor], torch.Tensor]]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Several teachers as one: the log of the mean of their softmaxes, which the distillation loss takes
    as logits (their log-softmax is themselves). One teacher is returned as it is.

    >>> a, b = (lambda x: torch.tensor([[2.0, 0.0]])), (lambda x: torch.tensor([[0.0, 2.0]]))
    >>> ensemble_teacher([a, b])(None).exp().round(decimals=6).tolist()
    [[0.5, 0.5]]
    """
    if len(teachers) == 1:
        return teachers[0]
    return lambda images: torch.log(sum(t(images).float().softmax(1) for t in teachers) / len(teachers))


def load_teachers(specs: list[str], dataset: str, data_dir=None) -> list[nn.Module]:
    """The float networks of ``--teacher NAME=WEIGHTS`` entries: registered models (which carry their input
    normalization) with ``dataset``'s classes and the weights loaded. Raises :class:`ConfigError`
    naming ``teachers``."""
    models = []
    for spec in specs:
        name, sep, path = str(spec).partition("=")
        if not sep or not name or not path:
            raise ConfigError("teachers", f"must be NAME=WEIGHTS (a registered model and its checkpoint), got {spec!r}")
        if name not in list_models():
            raise ConfigError("teachers", f"{name!r} is not a registered model (a teacher needs its normalization): "
                                         f"one of {', '.join(list_models())}")
        try:
            models.append(load_model(name, num_classes=num_classes(dataset, data_dir), weights=path))
        except ConfigError as exc:
            raise ConfigError("teachers", f"{spec}: {exc}") from None
    return models


def finetune(
    qann: QANN,
    train_loader: DeviceLoader,
    config: TrainConfig,
    *,
    test_loader: DeviceLoader | None = None,
    teacher: Callable[[torch.Tensor], torch.Tensor] | None = None,
    runtime: Runtime | None = None,
    out_dir: str | Path | None = None,
    meta: dict | None = None,
    state: RunState | None = None,
    amp: str | None = None,
    progress: bool = True,
    progress_lines: bool = True,
) -> Trainer:
    """Fine-tune ``qann`` (calibrated) on ``train_loader``'s uint8 batches by the shared trainer.

    The QANN's forward pass quantizes with straight-through gradients, so ordinary (cross-entropy or
    distillation, ``config.distill``) training adjusts weights, biases and activation scales. With
    ``test_loader`` the calibrated QANN is evaluated first (``meta["calibrated"]``) and every epoch after;
    with ``out_dir`` checkpoints are written there, and ``state`` resumes from one. ``amp="bf16"``
    autocasts the training passes (the integer weights and activations are exact in bf16; sums are rounded
    to its 8-bit mantissa); evaluation, conversion and the SNN stay exact. Returns the trainer
    (its ``history``; ``qann`` itself is trained in place and left in eval mode).
    """
    if runtime is None:
        runtime = Runtime(next(qann.parameters()).device)
    meta = {} if meta is None else meta
    trainer = Trainer(
        qann, config, runtime, out_dir,
        train_loader=train_loader, test_loader=test_loader, preprocess=pixels_as_float, meta=meta,
        amp=amp, progress=progress, teacher=teacher, progress_lines=progress_lines,
    )
    if state is not None:
        trainer.restore(state)
        meta["calibrated"] = state.meta.get("calibrated")
    elif test_loader is not None:
        meta["calibrated"] = trainer.evaluate()
        if runtime.is_main and progress_lines:
            tqdm.write(
                f"calibrated {qann.time_steps}-step QANN before fine-tuning: test loss "
                f"{meta['calibrated']['test_loss']:.4f} acc {meta['calibrated']['test_acc']:.2f}%"
            )
    trainer.fit()
    qann.eval()
    return trainer


def run_preprocess(config: dict, float_model: nn.Module | None) -> Preprocess:
    """How a folder's images become the run's input: the float model's config (a resumed run without the
    weights file: the recorded ``input_shape``), ``crop_pct`` and ``interpolation`` overriding it."""
    model_cfg = getattr(float_model, CONFIG_ATTRIBUTE, None)
    return preprocess_of(model_cfg, None if model_cfg is not None else (config["input_shape"] or (3, 32, 32)),
                         config.get("crop_pct"), config.get("interpolation"))


def calibrated_qann(float_model: nn.Module, config: dict, train_images: torch.Tensor, device: torch.device,
                    progress: bool = True, train_classes: Sequence[str] | None = None) -> QANN:
    """The calibrated QANN of the float network (the starting point of fine-tuning), from ``config``."""
    qann = quantize(float_model, config["time_steps"], weight_bits=config["weight_bits"],
                    input_bits=config["input_bits"], act_scale=config["act_scale"], shift=config.get("shift", "layer"),
                    weight_grid=config.get("weight_grid", "max"), gains=config.get("gains", "plain"))
    classes = len(train_classes) if train_classes is not None else num_classes(config["dataset"])
    if qann.graph.output.channels != classes or qann.graph.input.shape != list(train_images.shape[1:]):
        raise ConfigError("dataset", f"{config['dataset']} ({classes} classes, images {list(train_images.shape[1:])}) does "
                                     f"not fit a model with {qann.graph.output.channels} outputs and inputs {qann.graph.input.shape}")
    if config["calib_images"] < 1:
        raise ConfigError("calib_images", f"must be at least 1, got {config['calib_images']}")
    draw = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(config["seed"]))
    qann.to(device)
    qann.calibrate(train_images[draw[: config["calib_images"]]].to(device), method=config["calib"], progress=progress)
    return qann


def finetune_run(
    config: dict,
    out_dir: str | Path,
    *,
    given: set[str] | None = None,
    resume: bool = False,
    data_dir=None,
    download: bool = False,
    device: str = "auto",
    engine: str = "spikes",
    eval_images: int | None = None,
    amp: str | None = None,
    progress: bool = True,
    workers: int = DEFAULT_WORKERS,
) -> dict | None:
    """Fine-tune ``config['model']`` (float weights ``config['weights']``) at ``config['time_steps']`` into
    ``out_dir``, convert it to ``OUT/model.snn`` and evaluate it with ``engine``; returns the evaluation
    (also ``OUT/eval.json``), or ``None`` when this run's final SNN was already evaluated so.

    ``config`` holds the keys of :data:`FINETUNE_DEFAULTS` (missing ones take the defaults; ``lr`` defaults
    to :func:`default_lr`); ``given`` names the options set explicitly, which must agree with a resumed run's.
    """
    given = set(config) if given is None else set(given)
    config = {**FINETUNE_DEFAULTS, **config}
    if eval_images is not None and eval_images < 1:
        raise ConfigError("eval_images", f"must be at least 1, got {eval_images}")
    out = check_folder(out_dir, "out")
    runtime = start_runtime(device)
    try:
        check_amp(amp, runtime.device)
        config, state = open_run(out, config, given, resume=resume, kind="qann", announce=runtime.is_main)
        for key in ("model", "weights", "time_steps"):
            if config[key] is None:
                raise ConfigError(key, "is required for a new run")
        check_each(config["time_steps"], ActQuant)
        check_each(config["weight_bits"], WeightQuant)
        Calibration.parse(config["calib"])
        if config["act_scale"] not in ACT_SCALES:
            raise ConfigError("act_scale", f"must be one of {', '.join(ACT_SCALES)}, got {config['act_scale']!r}")
        if config.get("shift", "layer") not in SHIFTS:
            raise ConfigError("shift", f"must be one of {', '.join(SHIFTS)}, got {config['shift']!r}")
        for key, allowed, old in (("weight_grid", WEIGHT_GRIDS, "max"), ("gains", GAINS, "plain")):
            if config.get(key, old) not in allowed:
                raise ConfigError(key, f"must be one of {', '.join(allowed)}, got {config[key]!r}")
        if not isinstance(config["input_bits"], int) or not 1 <= config["input_bits"] <= 8:
            raise ConfigError("input_bits", f"must be an integer in 1..8, got {config['input_bits']!r}")
        if config["lr"] is None:
            config["lr"] = default_lr(*(v["default"] if isinstance(v, dict) else v
                                        for v in (config["time_steps"], config["weight_bits"])))
        tc = train_config(config)
        # Loaded once (before the data, so a bad file fails at once): the start of a new run, the
        # distillation teacher and the final float accuracy. A resumed run goes on without the file
        # unless it distils.
        float_model = None
        if state is None or Path(config["weights"]).is_file():
            float_model = load_model(config["model"], model_args=config["model_args"],
                                     num_classes=num_classes(config["dataset"], data_dir), weights=config["weights"],
                                     mean=config["mean"], std=config["std"], input_shape=config["input_shape"],
                                     crop_pct=config.get("crop_pct"), interpolation=config.get("interpolation"))
        config["teachers"] = list(config.get("teachers") or [])  # a run saved before the option has none
        if config["teachers"] and not tc.distill > 0:
            raise ConfigError("teachers", "needs distillation (--distill > 0)")
        teachers = load_teachers(config["teachers"], config["dataset"], data_dir)
        preprocess = run_preprocess(config, float_model)
        train_loader, test_loader = make_loaders(config, runtime, data_dir, download, preprocess=preprocess, workers=workers)
        seed_everything(config["seed"])
        if state is None:
            qann = calibrated_qann(float_model, config, train_loader.images, runtime.device,
                                   progress=runtime.is_main and progress,
                                   train_classes=folder_classes(data_dir) if config["dataset"] == "folder" else None)
        else:
            qann = QANN.from_spec(state.meta["spec"])
        meta = {
            "kind": "qann",
            "model": config["model"],
            "dataset": config["dataset"],
            "num_classes": num_classes(config["dataset"], data_dir),
            "spec": qann.spec,
            "config": config,
        }
        teacher = None
        if tc.distill > 0:
            if float_model is None:
                raise ConfigError("weights", f"file {config['weights']} is needed for distillation, and it is missing")
            attrs = qann.graph.input.attrs
            teacher = ensemble_teacher([float_teacher(float_model, attrs["mean"], attrs["std"], runtime.device)] + [
                float_teacher(m, getattr(m, CONFIG_ATTRIBUTE).mean, getattr(m, CONFIG_ATTRIBUTE).std, runtime.device)
                for m in teachers])
        ran = state is None or int(state.meta["epoch"]) < tc.epochs
        trainer = finetune(qann, train_loader, tc, test_loader=test_loader, teacher=teacher, runtime=runtime,
                           out_dir=out, meta=meta, state=state, amp=amp, progress=progress)
        runtime.barrier()  # every process done training before the others leave rank 0 to convert and evaluate
        result = None
        if runtime.is_main:
            if not ran and _evaluated(out, len(trainer.history), engine, eval_images):
                print(f"{out}: all {tc.epochs} epochs are done and evaluated (see {out / 'eval.json'})")
            else:
                result = _convert_and_evaluate(qann, float_model, config, out, runtime.device, len(trainer.history),
                                               data_dir, engine, eval_images, progress, preprocess, workers)
        return result
    finally:
        stop_runtime(runtime)


def _evaluated(out: Path, epochs: int, engine: str, eval_images: int | None) -> bool:
    """Whether ``OUT/eval.json`` already reports this run's final SNN under the same evaluation options."""
    try:
        done = json.loads((out / "eval.json").read_text())
    except (OSError, ValueError):
        return False
    return (out / "model.snn").is_file() and done.get("run_epochs") == epochs and done.get("engine") == engine \
        and done.get("eval_images_option") == eval_images


def _convert_and_evaluate(qann: QANN, float_model: nn.Module | None, config: dict, out: Path, device: torch.device,
                          epochs: int, data_dir, engine: str, eval_images: int | None, progress: bool,
                          preprocess: Preprocess, workers: int) -> dict:
    """Write ``OUT/model.snn`` from the fine-tuned QANN and ``OUT/eval.json`` from simulating it."""
    qann.eval()
    weights = Path(config["weights"])
    metadata = {
        "model": config["model"],
        "dataset": config["dataset"],
        "num_classes": num_classes(config["dataset"], data_dir),
        "preprocess": preprocess.as_dict(),
        **({"classes": list(folder_classes(data_dir))} if config["dataset"] == "folder" else {}),
        "weights": str(weights.resolve()),
        "weights_sha256": file_sha256(weights) if weights.is_file() else None,
        "teachers_sha256": [file_sha256(spec.partition("=")[2]) for spec in config["teachers"]],
        "how": "quantization-aware fine-tuning",
        "finetune_run": str(out.resolve()),
        "epochs": epochs,
        "config": config,
        "code": code_version(),
    }
    snn = qann.to_snn(metadata)
    path = snn.save(out / "model.snn")
    split = open_split(config["dataset"], data_dir, train=False, preprocess=preprocess)
    chosen = first_images(split, eval_images)
    start = time.perf_counter()
    result = evaluate(snn, iterate_batches(split, chosen, 250, workers), None, engine, qann=qann,
                      float_model=float_model, device=device, total=len(chosen), progress=progress)
    result.update(file=str(path), dataset=config["dataset"], run_epochs=epochs, eval_images_option=eval_images,
                  wall_seconds=time.perf_counter() - start)
    write_json(out / "eval.json", result, "out")
    fp = result["fp_accuracy"]
    print(
        f"{config['model']} T={snn.time_steps}{' (default; per layer: ' + str(snn.layer_time_steps) + ')' if snn.layer_time_steps else ''}: SNN {100 * result['accuracy']:.2f}%  QANN {100 * result['qann_accuracy']:.2f}%  "
        f"float {'n/a' if fp is None else f'{100 * fp:.2f}%'}  SNN == QANN on {100 * result['agreement']:.2f}% of "
        f"{result['images']} images ({engine} engine); wrote {path} and {out / 'eval.json'}"
    )
    return result
