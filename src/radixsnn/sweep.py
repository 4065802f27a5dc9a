r"""Accuracy and efficiency of radix SNNs against the number of time steps (paper Fig. 4).

For every weight width ``b`` and time-step count ``T`` the float network is converted with the core
pipeline (``build_qann`` -> ``calibrate`` -> ``to_snn``) and the SNN is evaluated with the integer
engine, whose logits equal the spike simulation's exactly (the evaluator also checks them against the
QANN: ``agreement``). Optionally each QANN is first fine-tuned for a few hundred steps
(quantization-aware training with straight-through estimators, plain SGD with momentum and gradient
clipping on a subset of the training images) -- a short version of ``radixsnn finetune``.

**Efficiency** is images processed per unit time. A radix SNN does ``ops`` = sum N M T synaptic
operations per image (paper Eq. 24, :func:`radixsnn.snn.dense_ops`; it grows linearly with T), and,
as in the paper's comparison of 8-bit and 3-bit weights, an operation on a ``b``-bit weight is
taken to cost ``b`` (bit-serial weights). So

    efficiency  ~  1 / (ops x b),

reported relative to the most efficient point of the sweep. At equal T, 8-bit weights are therefore
``1 - 3/8 = 62.5 %`` less efficient than 3-bit weights (the paper's "63 %") -- a consequence of the
cost model, not a measurement.
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from radixsnn.convert import build_qann
from radixsnn.errors import RadixSNNError
from radixsnn.evaluation import evaluate_snn
from radixsnn.quant import ActQuant, WeightQuant


def finetune_qann(
    qann: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    momentum: float = 0.9,
    seed: int = 0,
    clip_norm: float | None = 1.0,
    progress: bool = True,
) -> list[float]:
    """Quantization-aware fine-tuning: ``steps`` SGD steps on random mini-batches of ``images``.

    The QANN's forward pass quantizes with straight-through gradients, so ordinary cross-entropy
    training adjusts weights, biases and activation scales. The gradient norm is clipped to
    ``clip_norm`` (None: no clipping): right after a coarse post-training quantization the loss can
    be in the tens and unclipped steps wreck the network (measured on ResNet-20 with 5-bit weights,
    T = 4: 45 % -> 11 % after 100 steps at lr 1e-3 without clipping, 45 % -> 84 % with it).
    Returns the loss of every step.
    """
    if steps < 0:
        raise RadixSNNError(f"fine-tuning steps must not be negative, got {steps}")
    if steps and len(images) == 0:
        raise RadixSNNError("no training images to fine-tune on")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(qann.parameters(), lr=lr, momentum=momentum)
    losses = []
    qann.train()
    for _ in tqdm(range(steps), desc="fine-tune", unit="step", disable=not progress, leave=False):
        idx = torch.randint(len(images), (min(batch_size, len(images)),), generator=gen)
        loss = F.cross_entropy(qann(images[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(qann.parameters(), clip_norm)
        opt.step()
        losses.append(loss.item())
    qann.eval()
    return losses


def _check(time_steps, weight_bits) -> None:
    try:
        for t in time_steps:
            ActQuant(t)
        for b in weight_bits:
            WeightQuant(b)
    except ValueError as exc:
        raise RadixSNNError(str(exc)) from None
    if not time_steps or not weight_bits:
        raise RadixSNNError("the sweep needs at least one time-step count and one weight width")


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
) -> list[dict]:
    """One row per (weight bits, T, mode): accuracy, QANN agreement, operations and efficiency.

    ``mode`` is ``"post-training"`` for every point and, with ``finetune_steps > 0``, also
    ``"fine-tuned"`` (the calibrated QANN after ``finetune_steps`` SGD steps on ``train_images``).
    """
    time_steps, weight_bits = sorted(set(time_steps)), sorted(set(weight_bits), reverse=True)
    _check(time_steps, weight_bits)
    if finetune_steps and (train_images is None or train_labels is None):
        raise RadixSNNError("fine-tuning needs training images and labels")
    rows = []
    plan = [(b, t) for b in weight_bits for t in time_steps]
    bar = tqdm(plan, desc="sweep", unit="point", disable=not progress)
    for bits, steps in bar:
        bar.set_postfix(bits=bits, T=steps)
        start = time.perf_counter()
        qann = build_qann(model, steps, weight_bits=bits, input_shape=tuple(images.shape[1:]))
        try:
            qann.calibrate(calib_images, method=calib, progress=False)
        except ValueError as exc:
            raise RadixSNNError(str(exc)) from None
        modes = [("post-training", 0)] + ([("fine-tuned", finetune_steps)] if finetune_steps else [])
        for mode, n_steps in modes:
            losses = []
            if n_steps:
                losses = finetune_qann(qann, train_images, train_labels, n_steps, finetune_batch, lr,
                                       progress=progress)
            qann.eval()
            res = evaluate_snn(qann.to_snn(), images, labels, engine="integer", qann=qann,
                               batch_size=batch_size, progress=False)
            rows.append({
                "weight_bits": bits,
                "time_steps": steps,
                "mode": mode,
                "finetune_steps": n_steps,
                "accuracy": res["accuracy"],
                "qann_accuracy": res["qann_accuracy"],
                "agreement": res["agreement"],
                "ops": res["ops"],
                "final_loss": sum(losses[-20:]) / len(losses[-20:]) if losses else None,
                "seconds": time.perf_counter() - start,
            })
    add_efficiency(rows)
    return rows


def add_efficiency(rows: list[dict]) -> None:
    """Set ``cost = ops x weight_bits`` and ``efficiency = min cost / cost`` (1 = most efficient)."""
    for r in rows:
        r["cost"] = r["ops"] * r["weight_bits"]
    best = min(r["cost"] for r in rows)
    for r in rows:
        r["efficiency"] = best / r["cost"]


def write_csv(rows: list[dict], path) -> None:
    cols = ("weight_bits", "time_steps", "mode", "finetune_steps", "accuracy", "qann_accuracy", "agreement",
            "ops", "cost", "efficiency")
    lines = [",".join(cols)]
    for r in rows:
        lines.append(",".join("" if r[c] is None else (f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]))
                              for c in cols))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
