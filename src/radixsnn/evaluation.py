"""Evaluate an integer SNN on labelled images: accuracy, exactness against its QANN, spikes, operations."""
from __future__ import annotations

import time

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from radixsnn.data import MEAN, STD
from radixsnn.engines import run
from radixsnn.graph import fanout_map
from radixsnn.snn import IntegerSNN, dense_ops


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> the float models' input ``(x / 255 - mean) / std``."""
    mean = torch.tensor(MEAN, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, -1, 1, 1)
    return (images.to(torch.float32) / 255.0 - mean) / std


def synaptic_ops(snn: IntegerSNN, spike_maps: dict[str, torch.Tensor]) -> dict[str, float]:
    """Measured synaptic operations per receiving node: ``sum spikes x fan-out`` over its terms."""
    out = {}
    for node in snn.graph.nodes:
        total = 0.0
        for t in node.terms:
            total += float((spike_maps[t.src] * fanout_map(t, snn.graph[t.src].shape)).sum())
        if node.terms:
            out[node.name] = total
    return out


def evaluate_snn(
    snn: IntegerSNN,
    images: torch.Tensor,
    labels: torch.Tensor,
    engine: str = "spikes",
    qann=None,
    float_model: nn.Module | None = None,
    batch_size: int = 250,
    device: str | torch.device = "cpu",
    limit: int | None = None,
    progress: bool = True,
) -> dict:
    """Run ``engine`` over ``images`` (uint8, N x 3 x H x W) and compare with the QANN and float model.

    ``qann`` defaults to the QANN stored in the SNN file. ``agreement`` is the fraction of images whose
    engine logits equal the QANN's integer logits exactly (all classes).
    """
    device = torch.device(device)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    qann = qann if qann is not None else snn.load_qann()
    if qann is not None:
        qann = qann.to(device).eval()
    if float_model is not None:
        float_model = float_model.to(device).eval()
    snn_dev = snn.to(device)
    correct = {"snn": 0, "qann": 0, "fp": 0}
    agree = 0
    spikes: dict[str, int] = {}
    spike_maps: dict[str, torch.Tensor] = {}
    seconds = 0.0
    n = len(images)
    bar = tqdm(total=n, desc=f"evaluate ({engine})", unit="img", disable=not progress, leave=False)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            xb = images[start:start + batch_size].to(device)
            yb = labels[start:start + batch_size].to(device)
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
                correct["fp"] += int((float_model(normalize(xb)).argmax(1) == yb).sum())
            for k, v in res.spikes.items():
                spikes[k] = spikes.get(k, 0) + v
            for k, v in res.spike_maps.items():
                spike_maps[k] = spike_maps[k] + v if k in spike_maps else v
            bar.update(len(xb))
    bar.close()
    result = {
        "engine": engine,
        "images": n,
        "time_steps": snn.time_steps,
        "weight_bits": snn.weight_bits,
        "input_bits": snn.input_bits,
        "accuracy": correct["snn"] / n,
        "qann_accuracy": correct["qann"] / n if qann is not None else None,
        "fp_accuracy": correct["fp"] / n if float_model is not None else None,
        "agreement": agree / n if qann is not None else None,
        "ops": dense_ops(snn),
        "seconds": seconds,
        "images_per_second": n / seconds if seconds else None,
        "delta_t": dict(snn.delta_t),
        "model": snn.metadata.get("model"),
        "dataset": snn.metadata.get("dataset"),
    }
    if spikes:
        sops = synaptic_ops(snn, spike_maps)
        result.update(
            spikes=sum(spikes.values()),
            spikes_per_image=sum(spikes.values()) / n,
            spikes_per_layer=spikes,
            sops_per_image=sum(sops.values()) / n,
            sops_per_layer={k: v / n for k, v in sops.items()},
        )
    else:
        result["spikes"] = None
    return result
