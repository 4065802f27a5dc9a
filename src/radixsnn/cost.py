"""Operation counts, normalized latency and energy of a network as an ANN and as a radix SNN.

**SNN operations** follow the paper's Eq. 24, ``sum N * M * T`` over all layers, where ``N`` is a
neuron's fan-in, ``M`` the number of output neurons and ``T`` the number of time steps: the
network's multiply-accumulates times ``T`` (every synapse delivers a spike at every step, so this
is the dense upper bound; :func:`synaptic_ops` counts the operations a given set of spikes causes).

**ANN "effective operations"** (Table 2's ANN rows) are ``66 * MACs``. The paper gives no formula,
but the factor is pinned down by its own numbers: with the MAC counts of :mod:`radixsnn.macs`,
36.7e9 / 555.4 M, 20.7e9 / 313.2 M and 3.07e9 / 46.35 M give 66.1, 66.1 and 66.2, and 66 is the
only integer whose products round to the printed ResNet-18 and VGG-16 values (65 and 67 give
20.4e9 and 21.0e9 for VGG-16). Why 66 is not stated in the paper; our best explanation, a
hypothesis: the ANN's MAC runs on the same adder-based processing elements as the SNN, and an
8-bit x 8-bit multiplication done by shift-and-add counts as 8 x 8 = 64 bit-level additions, plus 2
for accumulating the product. None of the Horowitz (2014) 45 nm energy ratios comes close (fp32 MAC
/ int32 add = 46, fp32 MAC / int8 add = 153, int32 mult+add / int32 add = 32). The paper's "88 %
less latency" of the T = 8 SNNs is 1 - 8/66.

**Latency** is proportional to operations (same number of processing elements for ANN and SNN)
and normalized to the VGG-16 ANN, whose latency is 1.00 by definition.

**Energy** uses Horowitz (ISSCC 2014) 45 nm figures. An ANN MAC is a 32-bit float multiply plus
add (4.6 pJ). A synaptic operation of the SNN is one integer addition of an 8-bit weight into the
membrane accumulator; the accumulator is wider than 8 bits, so a 32-bit integer add (0.1 pJ) is
the conservative figure, an 8-bit integer add (0.03 pJ) the optimistic one; both are reported.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import torch

from radixsnn.errors import RadixSNNError
from radixsnn.macs import count_macs
from radixsnn.models import create_model, list_models

#: Effective ANN operations per multiply-accumulate, read off the paper's Table 2.
ANN_OPS_PER_MAC = 66
#: Network whose ANN latency is 1.00.
REFERENCE_MODEL = "vgg16"

#: Energy per operation in picojoules, 45 nm, 0.9 V (Horowitz, ISSCC 2014).
HOROWITZ_45NM_PJ = {
    "fp32_mult": 3.7,
    "fp32_add": 0.9,
    "fp32_mac": 4.6,  # fp32 mult + fp32 add
    "int8_add": 0.03,
    "int32_add": 0.1,
    "int8_mult": 0.2,
    "int32_mult": 3.1,
}

DATASET_CLASSES = {"cifar10": 10, "cifar100": 100}


def num_classes(dataset: str) -> int:
    try:
        return DATASET_CLASSES[dataset]
    except KeyError:
        raise RadixSNNError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASET_CLASSES)}") from None


def snn_operations(macs: int, time_steps: int) -> int:
    """Eq. 24: ``sum N*M*T`` = MACs x T."""
    if time_steps < 1:
        raise RadixSNNError(f"time steps must be at least 1, got {time_steps}")
    return int(macs) * int(time_steps)


def ann_operations(macs: int) -> int:
    """The ANN's effective operations: ``ANN_OPS_PER_MAC`` x MACs."""
    return ANN_OPS_PER_MAC * int(macs)


def latency(operations: float, reference_operations: float) -> float:
    """Latency normalized so that ``reference_operations`` (the VGG-16 ANN) takes 1.00."""
    return operations / reference_operations


def energy_ann(macs: float) -> float:
    """Joules for ``macs`` 32-bit floating-point multiply-accumulates."""
    return macs * HOROWITZ_45NM_PJ["fp32_mac"] * 1e-12


def energy_snn(synaptic_ops: float, accumulator_bits: int = 32) -> float:
    """Joules for ``synaptic_ops`` integer additions of a weight into a ``accumulator_bits``-wide
    membrane accumulator (32: 0.1 pJ each, the conservative figure; 8: 0.03 pJ)."""
    key = {32: "int32_add", 8: "int8_add"}.get(accumulator_bits)
    if key is None:
        raise RadixSNNError(f"accumulator width must be 8 or 32 bits, got {accumulator_bits}")
    return synaptic_ops * HOROWITZ_45NM_PJ[key] * 1e-12


def synaptic_ops(fanout: torch.Tensor, spikes: torch.Tensor) -> int:
    """Synaptic operations caused by ``spikes``: ``sum(spikes x fan-out)``.

    ``fanout`` is :func:`radixsnn.macs.fanout_map` of the layer that receives the spikes (shape of
    one input sample); ``spikes`` holds spike counts per input neuron with the same trailing shape,
    optionally with leading batch / time dimensions, which are summed. For a dense input (every
    neuron spikes once) the result is the layer's synapse count.
    """
    if tuple(spikes.shape[spikes.dim() - fanout.dim():]) != tuple(fanout.shape):
        raise RadixSNNError(f"spike shape {tuple(spikes.shape)} does not end with fan-out shape {tuple(fanout.shape)}")
    if spikes.dtype.is_floating_point:
        return int(round(float((spikes.double() * fanout.double()).sum())))
    return int((spikes.long() * fanout.long()).sum())


@lru_cache(maxsize=None)
def model_macs(model: str, dataset: str = "cifar10", layers: str = "all") -> int:
    """MACs of a registered model for one 32x32 image; ``layers="conv"`` counts convolutions only."""
    if model not in list_models():
        raise RadixSNNError(f"unknown model {model!r}; choose one of: {', '.join(list_models())}")
    counted = count_macs(create_model(model, num_classes(dataset)))
    if layers == "all":
        return counted.total
    if layers in ("conv", "linear"):
        return counted.total_of(layers)
    raise RadixSNNError(f"layers must be 'all', 'conv' or 'linear', got {layers!r}")


def reference_operations(dataset: str = "cifar10") -> int:
    """Effective operations of the VGG-16 ANN (latency 1.00) for ``dataset``."""
    return ann_operations(model_macs(REFERENCE_MODEL, dataset))


@dataclass(frozen=True)
class Cost:
    """Cost of one network on one image, as an ANN and as a radix SNN with ``time_steps`` steps."""

    model: str
    dataset: str
    time_steps: int
    macs: int
    snn_ops: int
    ann_ops: int
    snn_latency: float
    ann_latency: float
    ann_energy_j: float  # fp32 MACs
    snn_energy_j_int32: float  # dense Eq. 24 operations x 32-bit integer add
    snn_energy_j_int8: float  # dense Eq. 24 operations x 8-bit integer add

    def as_dict(self) -> dict:
        return asdict(self)


def model_cost(model: str, time_steps: int, dataset: str = "cifar10", layers: str = "all") -> Cost:
    """Every cost column for ``model`` on ``dataset`` at ``time_steps`` (dense spike trains)."""
    macs = model_macs(model, dataset, layers)
    snn = snn_operations(macs, time_steps)
    ann = ann_operations(macs)
    ref = reference_operations(dataset)
    return Cost(model, dataset, time_steps, macs, snn, ann, latency(snn, ref), latency(ann, ref),
                energy_ann(macs), energy_snn(snn, 32), energy_snn(snn, 8))
