"""Rate-coded IF baseline: exact convergence to the float network, operation counts, a real-CIFAR check."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from radixsnn.core.inputs import normalize
from radixsnn.errors import RadixSNNError
from radixsnn.experiments.rate import RateSNN
from radixsnn.models import IMAGENET_MEAN, IMAGENET_STD

NORM = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}  # the input normalization of these test models


class OneHidden(nn.Module):
    """Analog input -> one IF layer (1x1 conv + ReLU) -> average pool -> linear readout."""

    def __init__(self, hidden=6, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, hidden, 1)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x):
        h = F.relu(self.conv(x))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


class Deep(nn.Module):
    """Conv/BN, a residual block, max pooling, average pooling: the ops the conversion must handle."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        a = F.relu(self.bn1(self.conv1(x)))
        a = F.max_pool2d(a, 2)
        b = F.relu(self.conv2(a))
        c = F.relu(self.conv3(b) + a)
        return self.fc(F.adaptive_avg_pool2d(c, 1).flatten(1))


def _images(n, size=4, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _hidden(model: OneHidden, images):
    with torch.no_grad():
        return F.relu(model.conv(normalize(images, IMAGENET_MEAN, IMAGENET_STD)))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), steps=st.integers(1, 160), half=st.booleans())
def test_one_layer_error_is_bounded_by_threshold_over_T(seed, steps, half):
    # Constant current z into an IF neuron with reset by subtraction fires floor(T z / lam) times
    # (from v0 = 0; round with v0 = lam/2) while 0 <= z <= lam, so each rate value is within
    # lam / T (lam / 2T) of z and the readout within sum_j |W_ij| lam / T of the float output.
    torch.manual_seed(seed)
    model = OneHidden().eval()
    images = _images(5, seed=seed)
    lam = float(_hidden(model, images).max()) + 1e-3  # threshold at the maximum: no clipping
    snn = RateSNN(model, {"relu": lam}, init_membrane=0.5 if half else 0.0, **NORM)
    logits, activity = snn.run(images, [steps])
    with torch.no_grad():
        ann = model(normalize(images, IMAGENET_MEAN, IMAGENET_STD))
    per_pos = (1.0 if half else 2.0) * lam / (2 * steps)
    bound = model.fc.weight.abs().sum(1) * per_pos + 1e-4
    assert torch.all((logits[steps] - ann).abs() <= bound)


def test_one_layer_spike_counts_are_floors():
    # dyadic currents and threshold: every membrane value is exact in float32
    model = OneHidden(hidden=2, classes=1).eval()
    with torch.no_grad():
        model.conv.weight.zero_()
        model.conv.bias.copy_(torch.tensor([0.375, 0.8125]))
    images = _images(1)
    snn = RateSNN(model, {"relu": 1.0}, **NORM)
    state_counts = {}
    for steps in (1, 7, 16, 100):
        _, activity = snn.run(images, [steps])
        positions = 16
        expected = positions * (int(steps * 0.375) + int(steps * 0.8125))
        state_counts[steps] = activity[steps]["spikes"]
        assert activity[steps]["spikes"] == expected


def test_operation_counts_follow_fan_out():
    # conv (1x1, 3 -> 6) fed by the analog input: 16 positions x 6 x 3 MACs per step; each hidden
    # spike then reaches the 3 readout units through the average pool: 3 accumulates per spike.
    model = OneHidden().eval()
    images = _images(2)
    snn = RateSNN(model, {"relu": 0.5}, **NORM)
    _, activity = snn.run(images, [10])
    a = activity[10]
    assert a["input_macs"] == 2 * 16 * 6 * 3 * 10
    assert a["synaptic_ops"] == 3 * a["spikes"]
    assert snn.ann_ops(normalize(images, IMAGENET_MEAN, IMAGENET_STD)) == 2 * (16 * 6 * 3 + 16 * 6 * 3)


def test_residual_spikes_count_one_accumulate_each():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 2, 1)
            self.conv2 = nn.Conv2d(2, 2, 1)
            self.fc = nn.Linear(2, 1)

        def forward(self, x):
            a = F.relu(self.conv1(x))
            b = F.relu(self.conv2(a) + a)
            return self.fc(b.mean((2, 3)))

    torch.manual_seed(1)
    model = Res().eval()
    images = _images(3)
    snn = RateSNN(model, {"relu": 0.3, "relu_1": 0.3}, **NORM)
    _, activity = snn.run(images, [12])
    # the same network with one layer's neurons silenced (threshold beyond reach) isolates each total
    s_b = activity[12]["spikes"] - RateSNN(model, {"relu": 0.3, "relu_1": 1e9}, **NORM).run(images, [12])[1][12]["spikes"]
    s_a = activity[12]["spikes"] - s_b
    assert activity[12]["spikes"] == s_a + s_b
    # a: 2 synapses through conv2 plus 1 through the shortcut; b: 1 readout synapse
    assert activity[12]["synaptic_ops"] == 3 * s_a + 1 * s_b


def test_deep_network_converges_to_float_network():
    torch.manual_seed(0)
    model = Deep().eval()
    with torch.no_grad():  # a non-trivial BatchNorm to fold
        model.bn1.running_mean.uniform_(-0.2, 0.2)
        model.bn1.running_var.uniform_(0.5, 2.0)
        model.bn1.weight.uniform_(0.5, 1.5)
    images = _images(8, size=8)
    snn = RateSNN.from_calibration(model, images, percentile=100.0, init_membrane=0.5, **NORM)
    logits, _ = snn.run(images, [8, 64, 512])
    with torch.no_grad():
        ann = model(normalize(images, IMAGENET_MEAN, IMAGENET_STD))
    err = {t: float((logits[t] - ann).abs().max()) for t in logits}
    scale = float(ann.abs().max())
    assert err[512] < err[64] < err[8]
    assert err[512] < 0.02 * scale


def test_float_logits_match_model_after_bn_folding():
    torch.manual_seed(0)
    model = Deep().eval()
    images = _images(4, size=8)
    snn = RateSNN(model, **NORM)
    with torch.no_grad():
        assert torch.allclose(snn.float_logits(images), model(normalize(images, IMAGENET_MEAN, IMAGENET_STD)), atol=1e-5)


def test_bad_thresholds_are_rejected():
    model = OneHidden().eval()
    with pytest.raises(RadixSNNError):
        RateSNN(model, {"relu": 0.0}, **NORM)
    with pytest.raises(RadixSNNError):
        RateSNN(model, {"other": 1.0}, **NORM)
    with pytest.raises(RadixSNNError):
        RateSNN(model, None, init_membrane=1.5, **NORM)


@pytest.mark.cifar
@pytest.mark.pretrained
@pytest.mark.slow
def test_resnet20_rate_snn_on_cifar10(cifar10_dir, resnet20_weights):
    from radixsnn.data import load_cifar
    from radixsnn.models import create_model

    model = create_model("resnet20", weights=resnet20_weights)
    images, labels = load_cifar("cifar10", cifar10_dir, train=False)
    calib, _ = load_cifar("cifar10", cifar10_dir, train=True)
    snn = RateSNN.from_calibration(model, calib[:128], percentile=99.9, init_membrane=0.5)
    rows = snn.evaluate(images[:128], labels[:128], [8, 24], progress=False)
    by_t = {r.time_steps: r for r in rows}
    # measured: 27 % at T = 8, 80 % at T = 24 (the float network: 91.7 % on the full test set)
    assert by_t[24].agreement > by_t[8].agreement
    assert by_t[24].accuracy >= 0.6
    assert by_t[24].spikes > by_t[8].spikes > 0
