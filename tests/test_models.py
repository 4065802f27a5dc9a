"""Every registered model: output shape, torch.fx tracing, converter-supported operations, size."""
import operator

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from radixsnn.models import create_model, list_models

# Parameter counts with 10 classes; the kuangliu/pytorch-cifar and He et al. figures where they exist.

pytestmark = pytest.mark.usefixtures("one_thread")


PARAMS_10 = {
    "resnet18": 11_173_962,
    "mobilenet": 3_217_226,
    "vgg16": 14_724_042,  # convolutions without bias (BatchNorm follows each one)
    "vgg9": 5_942_218,
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
}

SUPPORTED_MODULES = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d,
                     nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity)
SUPPORTED_FUNCTIONS = {F.relu, F.avg_pool2d, F.adaptive_avg_pool2d, torch.flatten, operator.add,
                       # the parameter-free option-A shortcut of the He et al. CIFAR ResNets
                       operator.getitem, F.pad}
SUPPORTED_METHODS = {"flatten", "view", "relu", "add"}


def test_registry_has_the_paper_models():
    assert {"vgg16", "vgg9", "resnet18", "mobilenet", "resnet20", "resnet44"} <= set(list_models())


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("classes", [10, 100])
def test_forward_shape(name, classes):
    model = create_model(name, num_classes=classes).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list_models())
def test_fx_traceable_with_supported_ops(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))
    modules = dict(traced.named_modules())
    for node in traced.graph.nodes:
        if node.op == "call_module":
            assert isinstance(modules[node.target], SUPPORTED_MODULES), (node.target, type(modules[node.target]))
        elif node.op == "call_function":
            assert node.target in SUPPORTED_FUNCTIONS, node.target
        elif node.op == "call_method":
            assert node.target in SUPPORTED_METHODS, node.target


@pytest.mark.parametrize("name", list_models())
def test_parameter_count(name):
    n10 = sum(p.numel() for p in create_model(name, num_classes=10).parameters())
    assert n10 == PARAMS_10.get(name, n10)
    assert 10_000 < n10 < 50_000_000
    # 100 classes add 90 rows to the last linear layer (weights and biases).
    fc_in = [m for m in create_model(name, num_classes=100).modules() if isinstance(m, nn.Linear)][-1].in_features
    assert sum(p.numel() for p in create_model(name, num_classes=100).parameters()) == n10 + 90 * (fc_in + 1)


def test_vgg9_layout_is_lee_et_al():
    """7 convolutions 64-64-128-128-256-256-256 with 2x2 average pooling, then 4096-1024-classes."""
    model = create_model("vgg9", num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert [(m.in_features, m.out_features) for m in linears] == [(4096, 1024), (1024, 10)]
    assert sum(isinstance(m, nn.AvgPool2d) for m in model.modules()) == 3
