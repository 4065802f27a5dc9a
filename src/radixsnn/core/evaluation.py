"""Evaluate an integer SNN on labelled images: accuracy, exactness against its QANN, spikes, operations."""
from __future__ import annotations

import time
from typing import Callable, Iterable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from radixsnn.core.engines import ENGINES, run
from radixsnn.core.inputs import normalize
from radixsnn.core.ops import graph_ops, layer_sops
from radixsnn.core.qann import QANN
from radixsnn.core.snn import IntegerSNN
from radixsnn.errors import ConfigError


def evaluate(
    snn: IntegerSNN,
    images: torch.Tensor | Iterable[tuple[torch.Tensor, torch.Tensor]],
    labels: torch.Tensor | None = None,
    engine: str = "integer",
    *,
    qann: QANN | None = None,
    float_model: nn.Module | None = None,
    batch_size: int = 250,
    device: str | torch.device = "cpu",
    limit: int | None = None,
    total: int | None = None,
    progress: bool = True,
) -> dict:
    """Run ``engine`` over ``images`` (uint8, N x C x H x W) and compare with the QANN and the float model.

    ``images`` and ``labels`` are tensors, or ``images`` is an iterable of ``(uint8 images, labels)`` batches
    (a streamed image folder, :func:`radixsnn.data.iterate_batches`; ``labels`` then ``None``, ``total``
    the number of images it yields, for the progress bar) and ``batch_size`` is the batches' own.

    Returns the fields of ``radixsnn evaluate --json``: ``accuracy`` (the SNN's), ``qann_accuracy``,
    ``fp_accuracy`` (with ``float_model``), ``agreement`` (the fraction of images whose engine logits equal
    the QANN's integer logits exactly, in every class), ``ops_graph`` (Eq. 24 over the SNN's synapses, see
    :mod:`radixsnn.core.ops`), timings and, from the spike engine, spikes and measured synaptic operations
    (``sops``) per image and per layer. ``qann`` defaults to the QANN stored in the SNN file.

    >>> import torch, radixsnn as rs
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 2))
    >>> images = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    >>> snn = rs.convert(model, images, time_steps=4, input_shape=(3, 8, 8), mean=(0.5,) * 3, std=(0.25,) * 3, progress=False)
    >>> result = rs.evaluate(snn, images, torch.zeros(8, dtype=torch.int64), progress=False)
    >>> result["agreement"], result["ops_graph"] == 3 * 9 * 4 * 36 * 8 + 144 * 2 * 4
    (1.0, True)
    """
    if engine not in ENGINES:
        raise ConfigError("engine", f"must be one of {', '.join(ENGINES)}, got {engine!r}")
    if batch_size < 1:
        raise ConfigError("batch_size", f"must be at least 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ConfigError("limit", f"must be at least 1, got {limit}")
    if isinstance(images, torch.Tensor):
        if labels is None or len(images) != len(labels) or len(images) == 0:
            got = "no" if labels is None else len(labels)
            raise ConfigError("labels", f"must be as many as the images (at least one): {got} labels, {len(images)} images")
        images, labels = images[:limit], labels[:limit]
        total = len(images)
        batches = ((images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, total, batch_size))
    elif labels is not None:
        raise ConfigError("labels", "must be None when images is an iterable of (images, labels) batches")
    else:
        batches = images
        total = min(total, limit) if total is not None and limit is not None else (total or limit)
    device = torch.device(device)
    qann = qann if qann is not None else QANN.from_snn(snn)
    if qann is not None:
        qann = qann.to(device).eval()
    if float_model is not None:
        float_model = float_model.to(device).eval()
    mean, std = snn.graph.input.attrs["mean"], snn.graph.input.attrs["std"]
    snn_dev = snn.to(device)
    correct = {"snn": 0, "qann": 0, "fp": 0}
    agree = 0
    spikes: dict[str, int] = {}
    spike_maps: dict[str, torch.Tensor] = {}
    seconds = 0.0
    n = 0
    bar = tqdm(total=total, desc=f"evaluate ({engine})", unit="img", disable=not progress, leave=False)
    with torch.no_grad():
        for xb, yb in batches:
            if limit is not None and n + len(xb) > limit:
                xb, yb = xb[:limit - n], yb[:limit - n]
            if len(xb) == 0:
                break
            if xb.dtype != torch.uint8 or list(xb.shape[1:]) != list(snn.graph.input.shape):
                raise ConfigError("images", f"must be uint8 of shape (N, {', '.join(map(str, snn.graph.input.shape))}), "
                                            f"got {xb.dtype} {tuple(xb.shape)}")
            n += len(xb)
            xb, yb = xb.to(device), yb.to(device)
            t0 = time.perf_counter()
            res = run(snn_dev, xb, engine)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds += time.perf_counter() - t0
            correct["snn"] += int((res.logits.argmax(1) == yb).sum())
            if qann is not None:
                ql = qann.integer_logits(xb)
                correct["qann"] += int((ql.argmax(1) == yb).sum())
                agree += int((ql == res.logits).all(dim=1).sum())
            if float_model is not None:
                correct["fp"] += int((float_model(normalize(xb, mean, std)).argmax(1) == yb).sum())
            for k, v in res.spikes.items():
                spikes[k] = spikes.get(k, 0) + v
            for k, v in res.spike_maps.items():
                spike_maps[k] = spike_maps[k] + v if k in spike_maps else v
            bar.update(len(xb))
            if limit is not None and n >= limit:
                break
    bar.close()
    if n == 0:
        raise ConfigError("images", "must hold at least one image")
    counts = {
        "images": n,
        "snn_correct": correct["snn"],
        "qann_correct": correct["qann"] if qann is not None else None,
        "fp_correct": correct["fp"] if float_model is not None else None,
        "agreeing": agree if qann is not None else None,
        "spikes": spikes or None,
        "sops": layer_sops(snn.graph, spike_maps) if spikes else None,
    }
    return summarize(snn, engine, counts, seconds)


def summarize(snn: IntegerSNN, engine: str, counts: dict, seconds: float) -> dict:
    """The result fields of :func:`evaluate` from its ``counts`` (kept in the result): images; correct
    predictions of the SNN, QANN and float model; images whose logits equal the QANN's; spikes and
    synaptic operations per layer (``None`` for what was not measured)."""
    n = counts["images"]

    def ratio(key):
        return None if counts[key] is None else counts[key] / n

    result = {
        "engine": engine,
        "images": n,
        "time_steps": snn.time_steps,
        "weight_bits": snn.weight_bits,
        "layer_time_steps": dict(snn.layer_time_steps),
        "layer_weight_bits": dict(snn.layer_weight_bits),
        "channel_time_steps": {k: list(v) for k, v in snn.channel_time_steps.items()},
        "input_bits": snn.input_bits,
        "accuracy": counts["snn_correct"] / n,
        "qann_accuracy": ratio("qann_correct"),
        "fp_accuracy": ratio("fp_correct"),
        "agreement": ratio("agreeing"),
        "ops_graph": graph_ops(snn.graph, snn.time_steps, snn.input_bits, snn.layer_time_steps, snn.channel_time_steps),
        "seconds": seconds,
        "images_per_second": n / seconds if seconds else None,
        "delta_t": dict(snn.delta_t),
        "model": snn.metadata.get("model"),
        "dataset": snn.metadata.get("dataset"),
        "counts": counts,
    }
    spikes, sops = counts["spikes"], counts["sops"]
    if spikes:
        result.update(
            spikes=sum(spikes.values()),
            spikes_per_image=sum(spikes.values()) / n,
            spikes_per_layer=dict(spikes),
            sops_per_image=sum(sops.values()) / n,
            sops_per_layer={k: v / n for k, v in sops.items()},
        )
    else:
        result["spikes"] = None
    return result


def merge_evaluations(snn: IntegerSNN, result: dict, sum_all: Callable[[list[float]], list[float]]) -> dict:
    """The :func:`evaluate` result of the images of every process, from this process's ``result`` on its
    own share: ``sum_all`` sums a list of numbers element-wise over the processes (a float64 all-reduce,
    exact for counts below 2^53), and every ratio is recomputed from the summed counts -- so the totals
    equal one process's on all the images. ``seconds`` becomes the engines' seconds summed over the
    processes."""
    counts = result["counts"]
    keys = ("images", "snn_correct", "qann_correct", "fp_correct", "agreeing")
    layers = sorted(counts["spikes"]) if counts["spikes"] else []
    sop_layers = sorted(counts["sops"]) if counts["sops"] else []
    values = [counts[k] or 0 for k in keys] + [counts["spikes"][k] for k in layers] + [counts["sops"][k] for k in sop_layers]
    summed = sum_all([float(v) for v in values] + [float(result["seconds"])])
    totals = [int(round(v)) for v in summed[:-1]]
    merged = {k: (None if counts[k] is None else totals[i]) for i, k in enumerate(keys)}
    merged["spikes"] = dict(zip(layers, totals[len(keys):len(keys) + len(layers)])) or None
    merged["sops"] = dict(zip(sop_layers, totals[len(keys) + len(layers):])) or None
    return summarize(snn, result["engine"], merged, summed[-1])
