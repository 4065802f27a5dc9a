"""One small network per supported operation: the converted graph reproduces the float model, and the
spike engine, the integer engine and the QANN give identical integer logits."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import radixsnn as rs
from radixsnn import ConversionError, quantize
from radixsnn.core.engines import run_integer, run_spikes, spike_maxpool
from radixsnn.core.coding import radix_decode, radix_encode
from radixsnn.core.inputs import normalize
from radixsnn.models.resnet_cifar import OptionAShortcut
from radixsnn.models import IMAGENET_MEAN, IMAGENET_STD

NORM = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}  # the input normalization of these test models


def cbr(cin, cout, **kw):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False, **kw), nn.BatchNorm2d(cout), nn.ReLU())


class Head(nn.Module):
    def __init__(self, c, n=5):
        super().__init__()
        self.fc = nn.Linear(c, n)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Residual(nn.Module):
    """Identity and option-A shortcuts, functional ReLU, ``+=``."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8)
        self.c1, self.b1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16)
        self.down = OptionAShortcut(4)
        self.head = Head(16)

    def forward(self, x):
        x = self.stem(x)
        y = self.b1(self.c1(x))
        y += x
        x = F.relu(y)
        y = self.b2(self.c2(x)) + self.down(x)
        return self.head(torch.relu(y))


class ProjectionShortcut(nn.Module):
    """ResNet-18 style 1x1 conv + BN shortcut, view-based flatten, avg_pool2d, method relu."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8)
        self.conv = nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(12)
        self.short = nn.Sequential(nn.Conv2d(8, 12, 1, stride=2, bias=False), nn.BatchNorm2d(12))
        self.fc = nn.Linear(12 * 2 * 2, 5)  # avg_pool2d(4) of 8x8 is not global: a pooling neuron layer

    def forward(self, x):
        x = self.stem(x)
        out = (self.bn(self.conv(x)) + self.short(x)).relu()
        out = F.avg_pool2d(out, 4)
        return self.fc(out.view(out.size(0), -1))


class VGGLike(nn.Module):
    """MaxPool (module and functional), Flatten, Dropout, hidden Linear + BatchNorm1d + ReLU."""

    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(cbr(3, 8), nn.MaxPool2d(2), cbr(8, 8))
        self.cls = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(8 * 4 * 4, 16), nn.BatchNorm1d(16),
                                 nn.ReLU(inplace=True), nn.Linear(16, 5))

    def forward(self, x):
        x = F.max_pool2d(self.f(x), kernel_size=2, stride=2)
        return self.cls(x)


class Depthwise(nn.Module):
    """MobileNet-style depthwise + pointwise, strided conv with bias, AvgPool2d inside, AdaptiveAvgPool2d."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.pw = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.grouped = nn.Sequential(nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=4), nn.ReLU())
        self.pool = nn.AvgPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.grouped(self.pw(self.dw(self.stem(x))))
        return self.fc(torch.flatten(self.gap(self.pool(x)), 1))


MODELS = {"residual": Residual, "projection": ProjectionShortcut, "vgg_like": VGGLike, "depthwise": Depthwise}


def randomize_bn(model, seed=0, spread=0.1):
    """Non-trivial BatchNorm statistics and affine parameters (means and biases of scale ``spread``), eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * spread)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * spread)
    return model.eval()


def images(n, seed=0, size=16):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_float_graph_reproduces_model(name):
    torch.manual_seed(1)
    model = randomize_bn(MODELS[name]())
    x = images(8)
    qann = quantize(model, 4, input_shape=(3, 16, 16), **NORM)
    with torch.no_grad():
        assert torch.allclose(qann.float_forward(x), model(normalize(x, IMAGENET_MEAN, IMAGENET_STD)), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("T,input_bits,act_scale", [(1, 8, "layer"), (3, 8, "channel"), (6, 4, "layer"), (8, 8, "channel")])
def test_engines_equal_qann(name, T, input_bits, act_scale):
    torch.manual_seed(2)
    model = randomize_bn(MODELS[name]())
    qann = quantize(model, T, input_bits=input_bits, act_scale=act_scale, input_shape=(3, 16, 16), **NORM)
    qann.calibrate(images(32, seed=1), progress=False)
    snn = qann.to_snn()
    x = images(16, seed=3)
    expected = qann.integer_logits(x)
    assert torch.equal(run_integer(snn, x).logits, expected)
    spikes = run_spikes(snn, x)
    assert torch.equal(spikes.logits, expected)
    assert spikes.spikes["input"] > 0


def test_exact_sums_pick_float32_only_below_2_24():
    """Both engines and the QANN's exact mode compute in float32 only where no partial sum can reach 2^24;
    16-bit weights on 12-bit activations overflow that bound and run in float64, still exactly."""
    from radixsnn.core.graph import exact_dtype, peak_input

    assert exact_dtype((1 << 24) - 1, "cpu") == torch.float32
    assert exact_dtype(1 << 24, "cpu") == torch.float64 and exact_dtype(1, "cuda") == torch.float64
    torch.manual_seed(4)
    model = randomize_bn(Residual())
    wide = {}
    for T, bits in [(4, 8), (12, 16)]:
        qann = quantize(model, T, weight_bits=bits, input_shape=(3, 16, 16), **NORM)
        qann.calibrate(images(32, seed=1), progress=False)
        snn = qann.to_snn()
        peaks = [int(snn.biases[n.name].abs().max()) + peak_input(
            snn.graph, n, [snn.weights[t.param] for t in n.terms], lambda s: (1 << snn.train_length(s)) - 1)
            for n in snn.graph.layers]
        wide[T] = max(peaks) >= 1 << 24
        x = images(16, seed=3)
        assert torch.equal(run_integer(snn, x).logits, qann.integer_logits(x))
        assert torch.equal(run_spikes(snn, x).logits, qann.integer_logits(x))
    assert wide == {4: False, 12: True}


def test_qann_float32_training_forward_matches_exact():
    torch.manual_seed(3)
    model = randomize_bn(Residual())
    qann = quantize(model, 4, input_shape=(3, 16, 16), **NORM)
    qann.calibrate(images(32), progress=False)
    qann.eval()
    x = images(16, seed=5)
    _, _, _, delta = qann.layer_integers(qann.graph.output)
    with torch.no_grad():
        assert torch.allclose(qann(x).double(), qann.integer_logits(x).double() * delta, rtol=1e-5, atol=1e-5)


def test_gradients_reach_weights_and_scales():
    torch.manual_seed(4)
    qann = quantize(randomize_bn(Residual()), 3, input_shape=(3, 16, 16), **NORM)
    qann.calibrate(images(16), progress=False)
    qann.train()
    loss = F.cross_entropy(qann(images(8)), torch.arange(8) % 5)
    loss.backward()
    for p in list(qann.weights.values()) + list(qann.scales.values()):
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert any(p.grad.abs().sum() > 0 for p in qann.scales.values())


@pytest.mark.parametrize("n", [1, 2, 3, 1000, 65537, 3_000_001])
def test_skip_randperm_advances_the_generator_as_randperm(n):
    from radixsnn.core.qann import skip_randperm

    a, b = torch.Generator().manual_seed(n), torch.Generator().manual_seed(n)
    torch.randperm(n, generator=a)
    skip_randperm(n, b)
    assert torch.equal(a.get_state(), b.get_state())
    assert torch.equal(torch.randperm(50, generator=a), torch.randperm(50, generator=b))


class _Place:
    """One of ``world_size`` calibrating processes, simulated in this one: the all-reduce is left to the test."""

    def __init__(self, rank, world_size):
        self.rank, self.world_size = rank, world_size

    def all_reduce_sum_(self, t):
        return t


@pytest.mark.parametrize("act_scale", ["layer", "channel"])
@pytest.mark.parametrize("world", [2, 3])
def test_shared_calibration_samples_sum_to_one_process(act_scale, world):
    """Processes that each run the float passes of their own batches (5 batches, uneven shares; with 3
    processes one of them has no batch on a second round) hold samples that sum exactly to one process's."""
    qann = rs.quantize(randomize_bn(MODELS["residual"]()), 3, act_scale=act_scale, input_shape=(3, 16, 16), **NORM)
    x = images(37, seed=4)
    one = qann.activation_samples(x, batch_size=8, samples_per_layer=2000, progress=False)
    parts = [qann.activation_samples(x, batch_size=8, samples_per_layer=2000, progress=False, share=_Place(r, world))
             for r in range(world)]
    assert one.keys() == parts[0].keys()
    for name, a in one.items():
        assert torch.equal(sum(p[name] for p in parts), a)
        assert all(not torch.equal(p[name], a) for p in parts)  # each process held only its share


def test_conversion_does_not_mutate_the_model():
    model = randomize_bn(VGGLike())
    before = copy.deepcopy(model.state_dict())
    model.train()
    quantize(model, 4, input_shape=(3, 16, 16), **NORM).calibrate(images(8), progress=False)
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_zero_padding_means_normalized_zero():
    """A black border pixel and a padded pixel differ; the first layer's bias map keeps that apart."""
    model = randomize_bn(nn.Sequential(cbr(3, 4), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)))
    qann = quantize(model, 8, input_shape=(3, 8, 8), **NORM)
    qann.calibrate(images(64, size=8), progress=False)
    snn = qann.to_snn()
    bias = snn.biases[snn.graph.nodes[1].name]
    assert bias.shape == (4, 8, 8)
    assert not torch.equal(bias[:, 0, 0], bias[:, 4, 4])  # corners see fewer in-image taps
    assert torch.equal(bias[:, 3, 3], bias[:, 4, 4])


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.sigmoid(self.conv(x)).mean((2, 3)))


class ConvAfterConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3)
        self.b = nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.b(self.a(x))), 1).flatten(1))


@pytest.mark.parametrize("model,words", [(Unsupported(), ["sigmoid", "node"]), (ConvAfterConv(), ["Conv2d", "b", "ReLU"]),
                                         (nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU()), ["GELU", "node"])])
def test_unsupported_operations_are_named(model, words):
    with pytest.raises(ConversionError) as err:
        quantize(model, 4, input_shape=(3, 16, 16), **NORM)
    for w in words:
        assert w in str(err.value)


def test_spike_maxpool_is_exact_on_trains():
    g = torch.Generator().manual_seed(0)
    for T in (1, 3, 8):
        q = torch.randint(0, 1 << T, (2, 3, 7, 7), generator=g)
        trains = radix_encode(q, T, dtype=torch.float32)
        for k, s, p in [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((3, 3), (1, 1), (1, 1))]:
            out = spike_maxpool(trains, k, s, (p[1], p[1], p[0], p[0]))
            assert torch.equal(radix_decode(out), F.max_pool2d(q.double(), k, s, p).long())
        for k, s, ends in [((3, 3), (2, 2), (1, 1)), ((2, 2), (2, 2), (1, 1))]:  # ceil_mode: one more window
            out = spike_maxpool(trains, k, s, (0, ends[1], 0, ends[0]))
            assert torch.equal(radix_decode(out), F.max_pool2d(q.double(), k, s, ceil_mode=True).long())


@pytest.mark.parametrize("pool", [nn.MaxPool2d(3, 2, ceil_mode=True), nn.MaxPool2d(2, 2, ceil_mode=True),
                                  nn.MaxPool2d(3, 2, 1, ceil_mode=True), nn.MaxPool2d(2, 2, ceil_mode=True)])
@pytest.mark.parametrize("size", [7, 8])
def test_ceil_mode_max_pooling_converts_exactly_on_every_engine(pool, size):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), pool, nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    images = torch.randint(0, 256, (6, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    snn = rs.convert(model, images, time_steps=3, input_shape=(3, size, size), mean=(0.5,) * 3, std=(0.25,) * 3, progress=False)
    node = next(n for n in snn.graph.nodes if n.kind == "maxpool")
    with torch.no_grad():
        assert node.shape[1:] == list(pool(torch.zeros(1, 4, size, size)).shape[2:])
    qann = rs.QANN.from_snn(snn)
    want = qann.integer_logits(images)
    assert torch.equal(run_integer(snn, images).logits, want) and torch.equal(run_spikes(snn, images).logits, want)
    assert torch.equal(rs.run(snn, images, engine="onnx").logits, want)
