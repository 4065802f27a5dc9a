"""MAC counter and fan-out maps: known totals, an independent FLOP counter, exact connection counts."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from radixsnn.core.ops import synaptic_ops
from radixsnn.errors import RadixSNNError
from radixsnn.core.ops import LayerGeometry, count_macs, fanout_map
from radixsnn.models import create_model, list_models


pytestmark = pytest.mark.usefixtures("one_thread")


# Exact MACs per 32x32 image with 10 classes, computed by hand from the layer shapes.
EXPECTED_MACS = {
    "vgg16": 313_201_664,  # ~313 M
    "resnet18": 555_422_720,  # ~556 M
    "mobilenet": 46_354_432,  # 46-47 M
    "resnet20": 40_551_040,  # ~41 M
    "resnet44": 97_174_144,
    "vgg9": 194_717_696,  # 190_513_152 in the convolutions
}


def test_issue_targets():
    macs = {name: count_macs(create_model(name, num_classes=10)).total for name in EXPECTED_MACS}
    assert macs == EXPECTED_MACS
    assert abs(macs["vgg16"] / 313e6 - 1) < 0.005
    assert abs(macs["resnet18"] / 556e6 - 1) < 0.005
    assert 46e6 <= macs["mobilenet"] <= 47e6
    assert abs(macs["resnet20"] / 41e6 - 1) < 0.02
    assert count_macs(create_model("vgg9", num_classes=10)).total_of("conv") == 190_513_152


def test_hand_count_of_the_first_vgg16_layer():
    layer = count_macs(create_model("vgg16", num_classes=10)).layers[0]
    assert (layer.kind, layer.fan_in, layer.neurons) == ("conv", 3 * 3 * 3, 64 * 32 * 32)
    assert layer.macs == 27 * 65536
    # 3x3 taps that land inside a 32x32 map, summed over the outputs: 94 per axis (96 - 2 at the border)
    assert layer.synapses == 64 * 3 * 94 * 94


@pytest.mark.parametrize("name", list_models())
def test_total_matches_torch_flop_counter(name):
    """FlopCounterMode counts 2 FLOPs per conv/matmul multiply-accumulate (biases not counted)."""
    model = create_model(name, num_classes=100).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    assert counter.get_total_flops() == 2 * count_macs(model).total


@pytest.mark.parametrize("name", ["vgg16", "resnet18", "mobilenet", "resnet20", "vgg9"])
def test_fanout_maps_sum_to_synapses(name):
    for layer in count_macs(create_model(name, num_classes=10)).layers:
        fan = fanout_map(layer, layer.in_shape)
        assert fan.shape == layer.in_shape and fan.dtype == torch.int64
        assert int(fan.sum()) == layer.synapses
        assert synaptic_ops(fan, torch.ones(layer.in_shape, dtype=torch.int64)) == layer.synapses
        if layer.kind == "linear" or layer.geometry.padding == (0, 0):
            assert layer.synapses == layer.macs


def test_count_macs_batch_and_mode():
    model = create_model("resnet20", num_classes=10).train()
    a = count_macs(model, (4, 3, 32, 32))
    b = count_macs(model, (3, 32, 32))
    assert model.training
    assert a.total == b.total == EXPECTED_MACS["resnet20"]
    assert [layer.name for layer in a.layers][:2] == ["conv1", "layer1.0.conv1"]
    with pytest.raises(RadixSNNError):
        count_macs(model, (32, 32))


def _brute_fanout(geo: LayerGeometry, shape):
    c, h, w = shape
    oh, ow = geo.output_hw(h, w)
    fan = torch.zeros(shape, dtype=torch.int64)
    cout_g = geo.out_channels // geo.groups
    for ic in range(c):
        for y in range(oh):
            for x in range(ow):
                for ky in range(geo.kernel_size[0]):
                    for kx in range(geo.kernel_size[1]):
                        iy = y * geo.stride[0] - geo.padding[0] + ky * geo.dilation[0]
                        ix = x * geo.stride[1] - geo.padding[1] + kx * geo.dilation[1]
                        if 0 <= iy < h and 0 <= ix < w:
                            fan[ic, iy, ix] += cout_g  # every output channel of the group reads it
    return fan


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 2))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    h = draw(st.integers(dilation[0] * (k[0] - 1) + 1, 9))
    w = draw(st.integers(dilation[1] * (k[1] - 1) + 1, 9))
    conv = nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias=False)
    spikes = draw(st.lists(st.integers(0, 3), min_size=cin * h * w, max_size=cin * h * w))
    return conv, (cin, h, w), torch.tensor(spikes, dtype=torch.int64).reshape(cin, h, w)


@settings(max_examples=60, deadline=None)
@given(conv_cases())
def test_fanout_map_is_exact(case):
    conv, shape, spikes = case
    geo = LayerGeometry.from_module(conv)
    fan = fanout_map(conv, shape)
    assert torch.equal(fan, _brute_fanout(geo, shape))
    assert int(fan.sum()) == geo.synapses(shape)
    # Spikes x fan-out = additions the layer performs = sum over outputs of the spikes in their window.
    ones = torch.ones_like(conv.weight, dtype=torch.float64)
    direct = F.conv2d(spikes[None].double(), ones, None, conv.stride, conv.padding, conv.dilation, conv.groups).sum()
    assert synaptic_ops(fan, spikes) == int(direct)
    assert synaptic_ops(fan, spikes[None, None].repeat(2, 3, 1, 1, 1)) == 6 * int(direct)
    # Without padding every tap is real: synapses == MACs.
    out = conv(torch.zeros(1, *shape))
    if conv.padding == (0, 0):
        assert geo.synapses(shape) == geo.fan_in * out[0].numel()


def test_fanout_of_linear_and_dict_geometry():
    fan = fanout_map(nn.Linear(6, 4), (6,))
    assert torch.equal(fan, torch.full((6,), 4))
    spec = {"kind": "conv", "in_channels": 2, "out_channels": 5, "kernel_size": 3, "padding": 1}
    assert torch.equal(fanout_map(spec, (2, 4, 4)), fanout_map(nn.Conv2d(2, 5, 3, padding=1), (2, 4, 4)))
    assert synaptic_ops(fan, torch.tensor([0.0, 1, 2, 0, 0, 1])) == 16


def test_fanout_errors():
    with pytest.raises(RadixSNNError):
        fanout_map(nn.Linear(6, 4), (5,))
    with pytest.raises(RadixSNNError):
        fanout_map(nn.Conv2d(2, 3, 3), (3, 8, 8))
    with pytest.raises(RadixSNNError):
        fanout_map(nn.ReLU(), (3, 8, 8))
    with pytest.raises(RadixSNNError):
        fanout_map({"kind": "pool"}, (3, 8, 8))
    with pytest.raises(RadixSNNError):
        synaptic_ops(torch.ones(3, 4, 4), torch.ones(3, 4, 5))
