r"""Accuracy and efficiency of radix SNNs against the number of time steps (paper Fig. 4).

For every weight width ``b`` and time-step count ``T`` the float network is converted with the core
pipeline (``quantize`` -> ``calibrate`` -> ``to_snn``) and the SNN is evaluated with the integer
engine, whose logits equal the spike simulation's exactly (the evaluator also checks them against the
QANN: ``agreement``). Optionally each QANN is first fine-tuned for a few hundred steps by the shared
trainer (:func:`radixsnn.training.finetune`: quantization-aware training with straight-through
estimators, SGD with momentum at a constant rate and gradient clipping, on a subset of the training
images) -- a short version of ``radixsnn finetune``.

**Efficiency** is images processed per unit time. A radix SNN does ``ops_graph`` = sum N M T synaptic
operations per image (paper Eq. 24 over its synapses, :func:`radixsnn.core.ops.graph_ops`; it grows
linearly with T), and,
as in the paper's comparison of 8-bit and 3-bit weights, an operation on a ``b``-bit weight is
taken to cost ``b`` (bit-serial weights). So

    efficiency  ~  1 / (ops_graph x b),

reported relative to the most efficient point of the sweep. At equal T, 8-bit weights are therefore
``1 - 3/8 = 62.5 %`` less efficient than 3-bit weights (the paper's "63 %") -- a consequence of the
cost model, not a measurement.

An earlier sweep's ``sweep.json`` can supply the points it already has (:func:`reusable_rows`): a row is
reused only when every setting it depends on (:data:`ROW_SETTINGS`, the weights' sha256 among them)
matches, and only the missing points are converted and evaluated.

SNNs made elsewhere join the figure through their evaluation results (:func:`rows_from_results`): SNNs
fine-tuned by ``radixsnn finetune`` (its ``eval.json``) and SNNs with per-layer time steps from
``radixsnn search`` (``radixsnn evaluate --json``). A per-layer SNN is placed at its *equivalent T*, the
uniform T with the same ``ops_graph`` (:func:`equivalent_time_steps`).
"""
from __future__ import annotations

import json
import time
from typing import Callable

import torch
import torch.nn as nn
from tqdm import tqdm

from radixsnn.core.convert import quantize
from radixsnn.core.evaluation import evaluate
from radixsnn.core.qann import DEFAULT_ACT_SCALE, DEFAULT_GAINS, DEFAULT_SHIFT, DEFAULT_WEIGHT_GRID
from radixsnn.core.quant import ActQuant, WeightQuant
from radixsnn.data.loader import DeviceLoader
from radixsnn.errors import ConfigError, DataError
from radixsnn.experiments.report import load_results_json
from radixsnn.outputs import write_text
from radixsnn.training.qat import finetune
from radixsnn.training.trainer import TrainConfig


#: What a sweep row depends on besides its weight width and T: an earlier sweep's rows are reused only when
#: its ``sweep.json`` records the same value of each (the command's options, and the weights' checksum).
ROW_SETTINGS = ("model", "model_args", "mean", "std", "input_shape", "weights_sha256", "dataset", "images", "calib",
                "calib_images", "act_scale", "shift", "weight_grid", "gains", "seed")

#: What a fine-tuned row depends on besides :data:`ROW_SETTINGS`.
FINETUNE_SETTINGS = ("finetune_steps", "finetune_epochs", "finetune_batch", "lr", "train_images")

#: The modes of the rows a sweep computes itself (others come from evaluation files, :func:`rows_from_results`).
SWEEP_MODES = ("post-training", "fine-tuned")


def reusable_rows(path, settings: dict) -> list[dict]:
    """The computed rows of an earlier sweep's ``sweep.json``, each marked with its ``source`` (the file it
    was first computed for): its ``post-training`` rows, and its ``fine-tuned`` ones if it records the
    :data:`FINETUNE_SETTINGS` that ``settings`` gives. The file must record every :data:`ROW_SETTINGS` key
    with the value ``settings`` gives it, and every row must be well-formed and show its SNN equal to its
    QANN on every image; anything else raises :class:`DataError` naming the file (and the row or setting)."""
    data = load_results_json(path)
    config, rows = data.get("config"), data.get("rows")
    if not isinstance(config, dict) or config.get("command") != "sweep" or not isinstance(rows, list):
        raise DataError(f"{path}: not a sweep.json of radixsnn sweep (no config of command 'sweep' and rows)")
    settings = json.loads(json.dumps(settings))  # compared as the file holds them: tuples become lists
    for key in ROW_SETTINGS:
        if key not in config:
            raise DataError(f"{path}: records no {key}, so its rows cannot be matched to this sweep; run that sweep again")
        if config[key] != settings.get(key):
            raise DataError(f"{path}: its {key} is {config[key]!r}, this sweep's is {settings.get(key)!r}: "
                            "its rows are not this sweep's")
    modes = SWEEP_MODES if all(config.get(k) == settings.get(k) for k in FINETUNE_SETTINGS) else SWEEP_MODES[:1]
    reused = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {i} is not an object")
        if row.get("mode") not in SWEEP_MODES:
            continue  # an evaluation file's row: it joins again through --points
        if row["mode"] not in modes:
            continue  # fine-tuned differently
        problem = _row_problem(row)
        if problem:
            raise DataError(f"{path}: row {i} {problem}")
        reused.append({**row, "source": row.get("source") or str(path)})
    return reused


def _row_problem(row: dict) -> str | None:
    """What is wrong with a computed sweep row read from a file, or ``None``."""
    for key, spec in (("time_steps", ActQuant), ("weight_bits", WeightQuant)):
        value = row.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            return f"has no integer {key}"
        try:
            spec(value)
        except ConfigError as exc:
            return f"{key} {exc.problem}"
    for key in ("accuracy", "qann_accuracy", "agreement"):
        value = row.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            return f"has no {key} in [0, 1]"
    if row["agreement"] != 1.0:
        return f"shows its SNN equal to its QANN on only {100 * row['agreement']:.2f} % of the images (must be all)"
    ops = row.get("ops_graph")
    if isinstance(ops, bool) or not isinstance(ops, int) or ops <= 0:
        return "has no positive integer ops_graph"
    steps = row.get("finetune_steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0 or (steps > 0) != (row["mode"] == "fine-tuned"):
        return "has no finetune_steps that fit its mode"
    return None


def sweep(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    calib_images: torch.Tensor,
    time_steps,
    weight_bits,
    finetune_steps: int = 0,
    train_images: torch.Tensor | None = None,
    train_labels: torch.Tensor | None = None,
    batch_size: int = 250,
    finetune_batch: int = 64,
    lr: float = 1e-3,
    calib: str = "mse",
    progress: bool = True,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    seed: int = 0,
    mean=None,
    std=None,
    act_scale: str = DEFAULT_ACT_SCALE,
    shift: str = DEFAULT_SHIFT,
    weight_grid: str = DEFAULT_WEIGHT_GRID,
    gains: str = DEFAULT_GAINS,
    reuse: list[dict] | None = None,
) -> list[dict]:
    """One row per (weight bits, T, mode): accuracy, QANN agreement, operations and efficiency.

    ``mode`` is ``"post-training"`` for every point and, with ``finetune_steps > 0``, also
    ``"fine-tuned"`` (the calibrated QANN after ``finetune_steps`` SGD steps on ``train_images``, batches
    of ``finetune_batch`` augmented by ``augment``). ``mean`` / ``std``: the model's input normalization
    (default: its registry config). ``reuse``: rows made with the same settings (:func:`reusable_rows`);
    a (weight bits, T) point that has all its modes there is taken from them instead of computed.
    """
    time_steps, weight_bits = sorted(set(time_steps)), sorted(set(weight_bits), reverse=True)
    if not time_steps or not weight_bits:
        raise ConfigError("time_steps", "and weight_bits need at least one value each")
    for t in time_steps:
        ActQuant(t)
    for b in weight_bits:
        WeightQuant(b)
    if finetune_steps < 0:
        raise ConfigError("finetune_steps", f"must not be negative, got {finetune_steps}")
    if finetune_steps and (train_images is None or train_labels is None or len(train_images) == 0):
        raise ConfigError("train_images", "and train_labels are needed for fine-tuning")
    tune = None
    if finetune_steps:
        tune = TrainConfig(epochs=1, batch_size=finetune_batch, lr=lr, momentum=0.9, weight_decay=0.0,
                           schedule="constant", clip_grad=1.0, seed=seed, max_steps=finetune_steps)
    modes = ["post-training"] + (["fine-tuned"] if finetune_steps else [])
    known = {(r["weight_bits"], r["time_steps"], r["mode"]): r for r in reuse or []}
    grid = [(b, t) for b in weight_bits for t in time_steps]
    rows = []
    plan = []
    for point in grid:
        if all((*point, mode) in known for mode in modes):
            rows += [dict(known[(*point, mode)]) for mode in modes]
        else:
            plan.append(point)
    bar = tqdm(plan, desc="sweep", unit="point", disable=not progress)
    for bits, steps in bar:
        bar.set_postfix(bits=bits, T=steps)
        start = time.perf_counter()
        qann = quantize(model, steps, weight_bits=bits, input_shape=tuple(images.shape[1:]), mean=mean, std=std,
                        act_scale=act_scale, shift=shift, weight_grid=weight_grid, gains=gains)
        qann.calibrate(calib_images, method=calib, progress=False)
        for mode, n_steps in zip(modes, (0, finetune_steps)):
            final_loss = None
            if n_steps:
                loader = DeviceLoader(train_images, train_labels, finetune_batch, train=True, seed=seed, augment=augment)
                trainer = finetune(qann, loader, tune, progress=progress, progress_lines=False)
                final_loss = trainer.history[-1]["train_loss"]
            qann.eval()
            res = evaluate(qann.to_snn(), images, labels, engine="integer", qann=qann, batch_size=batch_size,
                           progress=False)
            rows.append({
                "weight_bits": bits,
                "time_steps": steps,
                "mode": mode,
                "finetune_steps": n_steps,
                "accuracy": res["accuracy"],
                "qann_accuracy": res["qann_accuracy"],
                "agreement": res["agreement"],
                "ops_graph": res["ops_graph"],
                "final_loss": final_loss,
                "seconds": time.perf_counter() - start,
            })
    rows.sort(key=lambda r: grid.index((r["weight_bits"], r["time_steps"])))  # stable: the modes keep their order
    add_efficiency(rows)
    return rows


def rows_from_results(paths, model: str | None = None, dataset: str | None = None) -> list[dict]:
    """Sweep rows from evaluation results: ``radixsnn finetune``'s ``OUT/eval.json`` (mode ``fine-tuned``,
    with its ``epochs``) or ``radixsnn evaluate --json`` (mode ``per-layer T`` when the SNN has per-layer
    time steps, else ``converted``). Every file must come from ``model`` / ``dataset`` when they are given,
    hold one weight width, and show its SNN equal to its QANN on every image (``agreement`` 1.0): a point
    that breaks exactness is refused, not drawn. Raises :class:`DataError` naming the file."""
    rows = []
    for path in paths:
        data = load_results_json(path)
        missing = [k for k in ("accuracy", "agreement", "ops_graph", "time_steps", "weight_bits") if data.get(k) is None]
        if missing:
            raise DataError(f"{path}: not an SNN evaluation (no {', '.join(missing)}); give radixsnn evaluate --json "
                            "or finetune's eval.json")
        for key, want in (("model", model), ("dataset", dataset)):
            if want is not None and data.get(key) not in (None, want):
                raise DataError(f"{path}: {key} is {data[key]!r}, the sweep's is {want!r}")
        if data["agreement"] != 1.0:
            raise DataError(f"{path}: its SNN equals its QANN on only {100 * data['agreement']:.2f} % of the images "
                            "(must be all): not a radix SNN result")
        if data.get("layer_weight_bits"):
            raise DataError(f"{path}: per-layer weight bits have no single weight width for the efficiency axis")
        per_layer = bool(data.get("layer_time_steps") or data.get("channel_time_steps"))  # a per-channel T is one too
        epochs = data.get("run_epochs")
        rows.append({
            "weight_bits": data["weight_bits"],
            "time_steps": data["time_steps"],
            "mode": "per-layer T" if per_layer else ("fine-tuned" if epochs else "converted"),
            "finetune_steps": None,
            "epochs": epochs,
            "accuracy": data["accuracy"],
            "qann_accuracy": data.get("qann_accuracy"),
            "agreement": data["agreement"],
            "ops_graph": data["ops_graph"],
            "images": data.get("images"),
            "final_loss": None,
            "source": str(path),
        })
    return rows


def equivalent_time_steps(ops_graph: float, uniform: list[dict]) -> float:
    """The uniform T whose ``ops_graph`` equals ``ops_graph``, by linear interpolation (or extrapolation
    from the two nearest) over ``uniform`` rows of one model. ``ops_graph`` is affine in a uniform T
    (every synapse but the first layer's reads T-step trains), so the interpolation is exact.

    >>> equivalent_time_steps(250, [{"time_steps": 2, "ops_graph": 100}, {"time_steps": 4, "ops_graph": 300}])
    3.5
    """
    points = sorted({(r["time_steps"], r["ops_graph"]) for r in uniform})
    if len({t for t, _ in points}) < 2:
        raise ConfigError("time_steps", "need at least two uniform T in the sweep to place a per-layer point")
    i = 1
    while i < len(points) - 1 and points[i][1] < ops_graph:
        i += 1
    (t0, o0), (t1, o1) = points[i - 1], points[i]
    return t0 + (t1 - t0) * (ops_graph - o0) / (o1 - o0)


def add_results(rows: list[dict], results: list[dict]) -> list[dict]:
    """``rows`` of a sweep followed by ``results`` (from :func:`rows_from_results`), per-layer ones placed
    at their equivalent T among the sweep's uniform rows, efficiencies recomputed over them all."""
    uniform = [r for r in rows if r["mode"] == "post-training"]
    for r in results:
        if r["mode"] == "per-layer T":
            r["equivalent_time_steps"] = equivalent_time_steps(r["ops_graph"], uniform)
    rows = rows + results
    add_efficiency(rows)
    return rows


def add_efficiency(rows: list[dict]) -> None:
    """Set ``cost = ops_graph x weight_bits`` and ``efficiency = min cost / cost`` (1 = most efficient)."""
    for r in rows:
        r["cost"] = r["ops_graph"] * r["weight_bits"]
    best = min(r["cost"] for r in rows)
    for r in rows:
        r["efficiency"] = best / r["cost"]


def write_csv(rows: list[dict], path) -> None:
    cols = ("weight_bits", "time_steps", "mode", "finetune_steps", "accuracy", "qann_accuracy", "agreement",
            "ops_graph", "cost", "efficiency", "source")
    lines = [",".join(cols)]
    for r in rows:
        lines.append(",".join("" if r.get(c) is None else (f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]))
                              for c in cols))
    write_text(path, "\n".join(lines) + "\n", "out")
