"""Time steps per channel within a layer: which channels get the longer trains (``radixsnn search
--granularity channel``, docs/design.md).

A layer whose channels share ``a C`` channel-steps on average (``a`` the layer's average T) spends them
where they cut the most error: channel ``c`` at ``T_c`` bits adds quantization noise of variance
``mse_c(T_c)`` (its float activations against their ``T_c``-bit values at the calibrated clip), and every
synapse that reads it passes that noise on, weighted by the square of its float weight. So the
allocation minimizes ``sum_c e_c mse_c(T_c)``, with ``e_c`` the channel's *readout energy* (the sum of
the squared weights of every synapse reading it, shortcut gains 1), under ``sum_c T_c <= a C``: a greedy
that shortens, one step at a time, the train whose step costs the least noise.

Spending trains where the noise lands is what lets a per-channel assignment beat a per-layer one with
the same operations (docs/notebook.md): the channels of a layer differ by orders of magnitude in range and
in how much the next layer reads them.
"""
from __future__ import annotations

import heapq
import math

import torch

from radixsnn.core.graph import input_channel_index
from radixsnn.core.qann import QANN
from radixsnn.core.quant import ActQuant, Calibration, quant_mse


def channel_errors(samples: dict[str, torch.Tensor], highest: int, method: str = "mse") -> tuple[dict, dict]:
    """``(clips, errors)``: for every layer's ``(C, n)`` activation samples (:meth:`QANN.activation_samples`
    with per-channel scales), the calibrated clip of each channel at every ``T`` in ``1..highest`` and the
    mean squared quantization error at that clip; ``(C, highest + 1)`` float64 tensors, column ``T``
    (column 0 unused).

    The clips are those :meth:`QANN.calibrate` sets from the same samples, so a channel's scale at ``T``
    is the one a uniform-``T`` calibration gives it.

    >>> clips, errors = channel_errors({"a": torch.tensor([[0.0, 1.0, 2.0, 3.0]])}, 2)
    >>> clips["a"][0, 2].item(), errors["a"][0, 2].item(), errors["a"][0, 1].item() > 0
    (3.0, 0.0, True)
    """
    rule = Calibration.parse(method)
    clips, errors = {}, {}
    for name, a in samples.items():
        c = torch.zeros(a.shape[0], highest + 1, dtype=torch.float64)
        e = torch.zeros_like(c)
        for t in range(1, highest + 1):
            qmax = ActQuant(t).qmax
            for i, row in enumerate(a):
                clip = rule.clip(row, qmax)
                c[i, t] = float(clip)
                e[i, t] = float(quant_mse(row.double(), clip.double().view(1), qmax)[0])
        clips[name], errors[name] = c, e
    return clips, errors


def readout_energy(qann: QANN) -> dict[str, torch.Tensor]:
    """Per neuron layer, per channel: ``sum W^2`` over every synapse that reads the channel (float,
    BatchNorm-folded weights; a shortcut's gain is 1), each term counted at every output position (a
    convolution's kernel taps, a summing readout's positions) -- the variance that unit noise on the
    channel adds to the sums of the layers that read it."""
    graph = qann.graph
    owner = {}  # spiking node -> the neuron layer whose channels it carries (max-pools pass them on)
    for node in graph.nodes:
        if node.kind == "neuron":
            owner[node.name] = node.name
        elif node.kind == "maxpool" and node.src in owner:
            owner[node.name] = owner[node.src]
    energy = {n.name: torch.zeros(n.channels, dtype=torch.float64) for n in graph.nodes if n.kind == "neuron"}
    with torch.no_grad():
        for node in graph.layers:
            positions = math.prod(node.shape[1:])  # output positions per output channel (1 for a linear map)
            for t in node.terms:
                if t.src not in owner:
                    continue
                src_shape = graph[t.src].shape
                index = input_channel_index(t, src_shape)
                if t.op == "select":
                    w2 = torch.ones(index.shape, dtype=torch.float64)
                else:
                    w2 = qann.weights[t.param.replace(".", "/")].double() ** 2
                    index = index.expand_as(w2)
                taps = positions * (src_shape[1] * src_shape[2] if t.op == "linear" and t.attrs["mode"] == "sumpool" else 1)
                keep = index.reshape(-1) >= 0
                energy[owner[t.src]].index_add_(0, index.reshape(-1)[keep], w2.reshape(-1)[keep] * taps)
    return energy


def allocate(errors: torch.Tensor, energy: torch.Tensor, average: float, highest: int, lowest: int = 1) -> list[int]:
    """Channel train lengths in ``lowest..highest`` with ``sum T_c <= average C`` that minimize
    ``sum_c energy_c errors[c, T_c]``: start every channel at ``highest`` and shorten, one step at a time,
    the train whose step adds the least weighted error (ties: the lower channel index).

    >>> errors = torch.tensor([[0.0, 4.0, 1.0, 0.0], [0.0, 9.0, 2.0, 0.0]])   # columns T = 0..3
    >>> allocate(errors, torch.tensor([1.0, 1.0]), 2.5, highest=3), allocate(errors, torch.tensor([1.0, 1.0]), 1.5, highest=3)
    ([2, 3], [1, 2])
    """
    count = len(energy)
    steps = [highest] * count
    budget = math.floor(average * count + 1e-9)
    total = highest * count
    heap = [(float(energy[c] * (errors[c, highest - 1] - errors[c, highest])), c) for c in range(count) if highest > lowest]
    heapq.heapify(heap)
    while total > budget and heap:
        _, c = heapq.heappop(heap)
        steps[c] -= 1
        total -= 1
        if steps[c] > lowest:
            t = steps[c]
            heapq.heappush(heap, (float(energy[c] * (errors[c, t - 1] - errors[c, t])), c))
    return steps
