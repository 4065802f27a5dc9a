"""The operations of the common CIFAR model zoos, one small network each: the QANN's float mode reproduces
the model, and the spike engine, the integer engine and the QANN's integer logits agree exactly.
Everything a radix neuron cannot compute stops with a ConversionError that names the operation, the
node and why."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import radixsnn as rs
from radixsnn.core.engines import run_integer, run_spikes
from radixsnn.core.inputs import normalize

from test_convert import images, randomize_bn  # the same random BatchNorms and pixels as the per-op tests

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def cbr(cin, cout, k=3, relu=True, **kw):
    layers = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False, **kw), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class Inception(nn.Module):
    """GoogLeNet: branches with their own ReLUs concatenated (spikes), a 3x3 max-pool branch, torch.cat."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 8)
        self.b1 = cbr(8, 4, 1)
        self.b2 = nn.Sequential(cbr(8, 4, 1), cbr(4, 6))
        self.b3 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), cbr(8, 2, 1))
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        x = self.stem(x)
        y = torch.cat([self.b1(x), self.b2(x), self.b3(x)], 1)
        return self.head(F.adaptive_avg_pool2d(y, 1).view(y.size(0), -1))


class DenseBlock(nn.Module):
    """DenseNet: pre-activation bottlenecks concatenate their (non-rectified) output with their input;
    transitions are BN-ReLU-conv1x1-avgpool; kuangliu's layout."""

    def __init__(self, growth=4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 2 * growth, 3, padding=1, bias=False)
        c = 2 * growth
        self.layers = nn.ModuleList()
        for _ in range(2):
            self.layers.append(nn.ModuleDict({"bn1": nn.BatchNorm2d(c), "conv1": nn.Conv2d(c, 4 * growth, 1, bias=False),
                                              "bn2": nn.BatchNorm2d(4 * growth),
                                              "conv2": nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)}))
            c += growth
        self.trans_bn, self.trans = nn.BatchNorm2d(c), nn.Conv2d(c, c // 2, 1, bias=False)
        self.bn, self.fc = nn.BatchNorm2d(c // 2), nn.Linear(c // 2, 5)

    def forward(self, x):
        out = self.conv1(x)
        for layer in self.layers:
            new = layer["conv1"](F.relu(layer["bn1"](out)))
            new = layer["conv2"](F.relu(layer["bn2"](new)))
            out = torch.cat([new, out], 1)
        out = F.avg_pool2d(self.trans(F.relu(self.trans_bn(out))), 2)
        out = F.avg_pool2d(F.relu(self.bn(out)), 8)
        return self.fc(out.view(out.size(0), -1))


class PreActResNet(nn.Module):
    """Pre-activation blocks: BN-ReLU before each conv, identity shortcuts carry the non-rectified sum,
    a projection shortcut reads the block's BN-ReLU output, and `out += shortcut`; the classifier also
    reads the last sum average-pooled and flattened without a ReLU; `+ 0` as RepVGG writes it."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.blocks = nn.ModuleList()
        for cin, cout, s in ((8, 8, 1), (8, 8, 1), (8, 16, 2)):
            blk = nn.Module()
            blk.bn1, blk.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, s, 1, bias=False)
            blk.bn2, blk.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            blk.shortcut = nn.Conv2d(cin, cout, 1, s, bias=False) if s != 1 or cin != cout else None
            self.blocks.append(blk)
        self.bn, self.fc, self.tail = nn.BatchNorm2d(16), nn.Linear(16, 5), nn.Linear(16, 5)

    def forward(self, x):
        out = self.conv1(x) + 0  # RepVGG adds a literal 0 where a branch is missing
        for blk in self.blocks:
            pre = F.relu(blk.bn1(out))
            shortcut = blk.shortcut(pre) if blk.shortcut is not None else out
            y = blk.conv1(pre)
            y = blk.conv2(F.relu(blk.bn2(y)))
            y += shortcut
            out = y
        tail = F.avg_pool2d(out, 8).view(out.size(0), -1)  # the last sum pooled before any ReLU (old kuangliu layout)
        out = F.relu(self.bn(out))
        return self.fc(out.mean((2, 3))) + self.tail(tail)


class MobileNetV2(nn.Module):
    """Inverted residuals: ReLU6 (module and functional), depthwise convs, linear bottlenecks whose
    output is added without a ReLU, a 1x1 conv + BN shortcut of such a pre-activation."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(inplace=True))
        self.blocks = nn.ModuleList()
        for cin, cout in ((8, 8), (8, 12)):
            blk = nn.Module()
            blk.expand = nn.Sequential(nn.Conv2d(cin, 16, 1, bias=False), nn.BatchNorm2d(16))
            blk.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16))
            blk.project = nn.Sequential(nn.Conv2d(16, cout, 1, bias=False), nn.BatchNorm2d(cout))
            blk.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)) if cin != cout else None
            self.blocks.append(blk)
        self.last = nn.Sequential(nn.Conv2d(12, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        out = self.stem(x)
        for blk in self.blocks:
            y = F.relu6(blk.expand(out))
            y = nn.functional.hardtanh(blk.dw(y), 0.0, 6.0)
            y = blk.project(y)
            out = y + (blk.shortcut(out) if blk.shortcut is not None else out)
        out = torch.clamp(self.last(out), 0, 6)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class ShuffleNet(nn.Module):
    """ShuffleNet v1/v2 patterns: a forward computing with sizes, channel shuffles (view + transpose +
    reshape, and permute), chunk and split, channel slices, cat of a pre-activation with a pooled
    shortcut, a grouped 1x1 conv over a concatenation, additions of slices."""

    def __init__(self, groups=2):
        super().__init__()
        self.g = groups
        self.stem = cbr(3, 8)
        self.conv1 = nn.Sequential(nn.Conv2d(8, 8, 1, groups=groups, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False), nn.BatchNorm2d(8))
        self.gconv = nn.Sequential(nn.Conv2d(16, 8, 1, groups=2, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.right = cbr(4, 4, 1)
        self.fc = nn.Linear(8, 5)

    def shuffle(self, x):
        N, C, H, W = x.size()
        g = self.g
        return x.view(N, g, C // g, H, W).transpose(1, 2).contiguous().view(N, C, H, W)

    def forward(self, x):
        x = self.stem(x)
        y = self.shuffle(self.conv1(x))
        y = self.dw(y)
        res = F.avg_pool2d(x, 3, stride=2, padding=1)
        y = F.relu(torch.cat([y, res], 1))          # stride-2 unit: cat of a pre-activation and a pooled shortcut
        y = self.gconv(y)                            # a grouped 1x1 conv over the concatenation
        a, b = y.chunk(2, dim=1)                     # v2 unit: split, transform one half, concatenate
        c = int(y.size(1) * 0.5)
        y = torch.cat([a, self.right(b)], 1)
        n, ch, h, w = y.shape
        y = y.view(n, 2, ch // 2, h, w).permute(0, 2, 1, 3, 4).reshape(n, ch, h, w)
        lo, hi = torch.split(y, [c, ch - c], dim=1)
        y = F.relu(lo + hi[:, :c])                   # an addition of slices
        z = y[:, 1:3]
        return self.fc(torch.cat([y, z, z], 1)[:, :8].mean((2, 3)))


class Misc(nn.Module):
    """nn.Identity, Dropout2d / AlphaDropout in eval, reshape, avg pools of kernel 1 and with padding,
    AdaptiveAvgPool2d(1), a scaled residual, x.view(x.size(0), -1)."""

    def __init__(self):
        super().__init__()
        self.a = cbr(3, 8)
        self.b = cbr(8, 8, relu=False)
        self.drop, self.alpha, self.ident = nn.Dropout2d(0.3), nn.AlphaDropout(0.2), nn.Identity()
        self.pool1, self.pool3 = nn.AvgPool2d(1), nn.AvgPool2d(3, stride=2, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.ident(self.drop(self.a(x)))
        y = F.relu(self.b(x) * 0.5 + x)
        y = self.pool3(self.pool1(y))
        y = self.alpha(self.gap(y)).reshape(y.shape[0], -1)
        return self.fc(y)


ZOO = {"inception": Inception, "densenet": DenseBlock, "preact": PreActResNet, "mobilenetv2": MobileNetV2,
       "shufflenet": ShuffleNet, "misc": Misc}


@pytest.fixture(scope="module", autouse=True)
def few_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_float_mode_reproduces_the_model(name):
    torch.manual_seed(1)
    model = randomize_bn(ZOO[name](), spread=0.2)
    x = images(8)
    qann = rs.quantize(model, 4, input_shape=(3, 16, 16), mean=MEAN, std=STD)
    with torch.no_grad():
        assert torch.allclose(qann.float_forward(x), model(normalize(x, MEAN, STD)), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("T,act_scale", [(2, "layer"), (5, "channel")])
def test_spikes_integer_and_qann_agree(name, T, act_scale):
    torch.manual_seed(2)
    model = randomize_bn(ZOO[name](), spread=0.2)
    qann = rs.quantize(model, T, act_scale=act_scale, input_shape=(3, 16, 16), mean=MEAN, std=STD)
    qann.calibrate(images(32, seed=1), progress=False)
    snn = qann.to_snn()
    x = images(12, seed=3)
    expected = qann.integer_logits(x)
    assert torch.equal(run_integer(snn, x).logits, expected)
    assert torch.equal(run_spikes(snn, x).logits, expected)


def test_relu6_saturation_caps_the_scale():
    """A clip at 6 is realized by the neurons' saturation: scale x (2^T - 1) never exceeds 6."""
    torch.manual_seed(3)
    qann = rs.quantize(randomize_bn(MobileNetV2(), spread=0.2), 3, input_shape=(3, 16, 16), mean=MEAN, std=STD)
    clipped = [n for n in qann.graph.nodes if "clip" in n.attrs]
    assert clipped and all(n.attrs["clip"] == 6.0 for n in clipped)
    with torch.no_grad():
        for node in clipped:
            qann.scales[node.name].fill_(10.0)  # far above the clip
        for node in clipped:
            assert float(qann.scale_of(node.name).max()) * 7 <= 6.0 + 1e-6


def test_concatenations_cost_no_neurons():
    """Slices, shuffles and concatenations of spikes are gathers in the synapses, not layers."""
    qann = rs.quantize(randomize_bn(Inception(), spread=0.2), 4, input_shape=(3, 16, 16), mean=MEAN, std=STD)
    kinds = [n.kind for n in qann.graph.nodes]
    assert kinds.count("neuron") == 5 and kinds.count("maxpool") == 1  # stem, b1, b2 (two), b3
    readout = qann.graph.output
    assert len(readout.terms) == 3 and all("channels" not in t.attrs for t in readout.terms)


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc1, self.fc2 = cbr(3, 8), nn.Conv2d(8, 2, 1), nn.Conv2d(2, 8, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.conv(x)
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return self.head((x * w).mean((2, 3)))


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = cbr(3, 4), cbr(3, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.head((self.a(x) * self.b(x)).mean((2, 3)))


@pytest.mark.parametrize("model, words", [
    (SqueezeExcite(), ["sigmoid", "only sums weighted spikes"]),
    (Gated(), ["mul", "never by another activation"]),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU()), ["SiLU", "ReLU and clips at a constant"]),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU()), ["GELU", "node"]),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LayerNorm(4 * 14 * 14)), ["LayerNorm", "at run time"]),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3), nn.Softmax(1)), ["Softmax"]),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12 * 12, 3)),
     ["Conv2d", "pre-activation", "1x1"]),
])
def test_what_a_radix_neuron_cannot_compute_is_named(model, words):
    with pytest.raises(rs.ConversionError) as err:
        rs.quantize(model.eval(), 4, input_shape=(3, 16, 16), mean=MEAN, std=STD)
    for w in words:
        assert w in str(err.value), str(err.value)
