"""The conversion rules, one family at a time (radixsnn.core.rules), and the registry users extend.

Each family's rules are checked on a small network that exercises them: the graph they build (which
nodes, which terms), the QANN's float mode against the model, and SNN == QANN on both engines. The
registry is checked on rules registered from outside the package, as a user would."""
from __future__ import annotations

import operator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import radixsnn as rs
from radixsnn.core.engines import run_integer, run_spikes
from radixsnn.core.inputs import normalize
from radixsnn.core.rules import RULES, Rules
from radixsnn.core.rules.refusals import WHY
from radixsnn.core.trace import trace_graph

from test_convert import images, randomize_bn

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
SHAPE = (3, 8, 8)


def exact(model: nn.Module, T: int = 4, shape=SHAPE) -> rs.QANN:
    """Quantize ``model``; check its float mode and that both engines give the QANN's integer logits."""
    torch.manual_seed(0)
    model = randomize_bn(model, spread=0.2).eval()
    qann = rs.quantize(model, T, input_shape=shape, mean=MEAN, std=STD)
    x = images(8, size=shape[1])
    with torch.no_grad():
        assert torch.allclose(qann.float_forward(x), model(normalize(x, MEAN, STD)), atol=1e-4, rtol=1e-4)
    qann.calibrate(images(32, seed=1, size=shape[1]), progress=False)
    snn = qann.to_snn()
    expected = qann.integer_logits(x)
    assert torch.equal(run_integer(snn, x).logits, expected)
    assert torch.equal(run_spikes(snn, x).logits, expected)
    return qann


def kinds(qann) -> list[str]:
    return [n.kind for n in qann.graph.nodes]


def refused(model: nn.Module, *words, shape=SHAPE):
    with pytest.raises(rs.ConversionError) as err:
        rs.quantize(model.eval(), 4, input_shape=shape, mean=MEAN, std=STD)
    for w in words:
        assert w in str(err.value), str(err.value)
    return str(err.value)


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def head(c, positions=1):
    return [nn.Flatten(), nn.Linear(c * positions, 5)]


# ---- convolutions -----------------------------------------------------------------------------------


def test_conv_bn_relu_is_one_layer_with_the_batchnorm_folded():
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                       nn.AdaptiveAvgPool2d(1), *head(4)), spread=0.2).eval()
    graph, params = trace_graph(model, SHAPE, MEAN, STD)
    layer = graph.nodes[1]
    assert [n.kind for n in graph.nodes] == ["input", "neuron", "output"]
    assert [(t.src, t.op) for t in layer.terms] == [("input", "conv2d")]
    conv, bn = model[0], model[1]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    assert torch.allclose(params[layer.terms[0].param], conv.weight * scale.view(-1, 1, 1, 1))
    assert torch.allclose(params[f"{layer.name}.bias"], (conv.bias - bn.running_mean) * scale + bn.bias)


def test_depthwise_and_grouped_convolutions_over_a_concatenation():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.gc = nn.Conv2d(8, 4, 1, groups=2)
            self.fc = nn.Linear(4, 5)

        def forward(self, x):
            y = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], 1)
            return self.fc(F.relu(self.gc(F.relu(self.dw(y)))).mean((2, 3)))

    qann = exact(Net())
    dw = [n for n in qann.graph.nodes if n.name.startswith("dw")]  # one layer per source layer it reads
    assert [[(t.src, t.attrs["groups"]) for t in n.terms] for n in dw] == [[("a", 4)], [("b", 4)]]


def test_a_1x1_convolution_of_a_pre_activation_is_composed():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.proj, self.fc = nn.Conv2d(4, 6, 1, stride=2), nn.Linear(6, 5)

        def forward(self, x):
            y = F.relu(self.a(x))
            return self.fc(F.relu(self.proj(self.b(y) + y)).mean((2, 3)))

    qann = exact(Net())
    assert kinds(qann) == ["input", "neuron", "neuron", "output"]
    proj = qann.graph.nodes[2]
    assert {t.op for t in proj.terms} == {"conv2d"} and all(t.attrs["stride"] == [2, 2] for t in proj.terms)


def test_a_3x3_convolution_of_a_pre_activation_is_refused():
    refused(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.ReLU(), *head(4, 16)), "Conv2d", "1x1")


def test_circular_padding_is_refused():
    refused(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"), nn.ReLU(), *head(4, 64)),
            "zero padding")


# ---- linear layers ----------------------------------------------------------------------------------


def test_linear_reads_flattened_spikes_and_pools_as_sumpools():
    flat = exact(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), *head(4, 16)))
    assert flat.graph.output.terms[0].attrs["mode"] == "flatten"
    pooled = exact(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), *head(4)))
    assert pooled.graph.output.terms[0].attrs["mode"] == "sumpool"


def test_two_linear_layers_in_a_row_are_one_map():
    qann = exact(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                               nn.Linear(4, 7), nn.Linear(7, 5)))
    assert kinds(qann) == ["input", "neuron", "output"] and qann.graph.output.terms[0].weight_shape == [5, 4]


def test_linear_of_an_unflattened_layer_is_refused():
    refused(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Linear(8, 5)), "linear layer input")


# ---- BatchNorm and constants ------------------------------------------------------------------------


def test_batchnorm_and_constant_scales_of_spikes_and_pre_activations():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.bn, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 5)

        def forward(self, x):
            y = F.relu(self.a(x) * 0.5)
            return self.fc(F.relu(self.bn(y) / 4 + y * 2).mean((2, 3)))

    qann = exact(Net())
    assert kinds(qann) == ["input", "neuron", "neuron", "output"]


def test_batchnorm_without_running_statistics_is_refused():
    refused(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(), *head(4, 36)),
            "running statistics")


def test_division_by_zero_is_refused():
    refused(nn.Sequential(nn.Conv2d(3, 4, 3), Lambda(lambda x: x / 0), nn.ReLU(), *head(4, 36)), "div")


# ---- ReLU and clips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("act, clip", [(nn.ReLU(), None), (nn.ReLU6(), 6.0), (nn.Hardtanh(0, 2.5), 2.5),
                                       (Lambda(lambda x: x.clamp(0, 3)), 3.0), (Lambda(torch.relu), None)])
def test_relus_and_clips_make_neurons_that_saturate_at_the_clip(act, clip):
    qann = exact(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), act, nn.AdaptiveAvgPool2d(1), *head(4)))
    assert qann.graph.nodes[1].attrs.get("clip") == clip


def test_a_relu_of_spikes_costs_nothing_and_a_clip_of_spikes_is_a_layer():
    relu = exact(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.ReLU(), nn.AdaptiveAvgPool2d(1), *head(4)))
    assert kinds(relu).count("neuron") == 1
    clip = exact(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), *head(4)))
    assert kinds(clip).count("neuron") == 2


@pytest.mark.parametrize("act", [nn.Hardtanh(-1, 1), Lambda(lambda x: x.clamp(-1, 1))])
def test_clips_with_a_negative_floor_are_refused(act):
    refused(nn.Sequential(nn.Conv2d(3, 4, 3), act, *head(4, 36)), "ReLU and clips at a constant")


# ---- additions --------------------------------------------------------------------------------------


def test_identity_shortcuts_are_select_terms_and_constants_move_the_bias():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 5)

        def forward(self, x):
            y = F.relu(self.a(x))
            return self.fc(F.relu((self.b(y) + 0.25) + y).mean((2, 3)))

    qann = exact(Net())
    block = qann.graph.nodes[2]
    assert sorted(t.op for t in block.terms) == ["conv2d", "select"]


def test_option_a_shortcuts_subsample_and_pad_channels():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.Linear(8, 5)

        def forward(self, x):
            y = F.relu(self.a(x))
            short = F.pad(y[:, :, ::2, ::2], (0, 0, 0, 0, 2, 2))
            return self.fc(F.relu(self.b(y) + short).mean((2, 3)))

    qann = exact(Net())
    select = next(t for t in qann.graph.nodes[2].terms if t.op == "select")
    assert select.attrs == {"stride": 2, "pad": [2, 2]}


def test_add_with_alpha_is_refused():
    refused(nn.Sequential(nn.Conv2d(3, 4, 3), Lambda(lambda x: torch.add(x, x, alpha=2)), nn.ReLU(), *head(4, 36)),
            "alpha")


# ---- pooling ----------------------------------------------------------------------------------------


def test_a_max_pool_is_one_node_per_source_shared_by_its_readers():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.pool, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2), nn.Linear(8, 5)

        def forward(self, x):
            y = F.relu(self.a(x))
            return self.fc(torch.cat([self.pool(y), F.max_pool2d(y, 2)], 1).mean((2, 3)))

    assert kinds(exact(Net())) == ["input", "neuron", "maxpool", "output"]


def test_average_pools_are_pooling_neurons_or_composed_into_a_pre_activation():
    spikes = exact(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), *head(4, 16)))
    assert kinds(spikes) == ["input", "neuron", "neuron", "output"]
    pre = exact(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.AvgPool2d(2),
                              nn.ReLU(), *head(4, 16)))
    assert kinds(pre) == ["input", "neuron", "neuron", "output"]
    assert pre.graph.nodes[2].terms[0].attrs["stride"] == [2, 2]


@pytest.mark.parametrize("model, words", [
    (nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(3, 4, 3), *head(4, 4)), ["max-pooling of the input"]),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AvgPool2d(2, ceil_mode=True), *head(4, 9)), ["ceil_mode"]),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(4), *head(4, 16)), ["does not divide"]),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), Lambda(lambda x: x.mean(1)), *head(1, 36)), ["spatial dimensions"]),
])
def test_pools_a_radix_neuron_cannot_compute_are_refused(model, words):
    refused(model, *words)


# ---- channel layout ---------------------------------------------------------------------------------


def test_shuffles_slices_and_chunks_cost_no_neurons():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(8, 5)

        def forward(self, x):
            y = F.relu(self.a(x))
            n, c, h, w = y.size()
            y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)  # channel shuffle
            left, right = y.chunk(2, dim=1)
            return self.fc(torch.cat([F.relu(self.b(left)), right[:, :2], right[:, 2:]], 1).mean((2, 3)))

    qann = exact(Net())
    assert kinds(qann) == ["input", "neuron", "neuron", "output"]
    assert any("channels" in t.attrs for t in qann.graph.nodes[2].terms)


@pytest.mark.parametrize("fn, words", [
    (lambda x: torch.cat([x, x], 2), ["along a dimension other than the channels"]),
    (lambda x: x.permute(0, 2, 3, 1).flatten(1), ["reorders"]),
    (lambda x: F.pad(x, (1, 1, 1, 1)), ["channel padding"]),
])
def test_layouts_a_radix_snn_cannot_read_are_refused(fn, words):
    refused(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), Lambda(fn), nn.Flatten(), nn.LazyLinear(5)), *words)


# ---- refusals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("op, kind", [(nn.SiLU(), "activation"), (nn.GELU(), "activation"), (nn.Tanh(), "activation"),
                                      (nn.GroupNorm(2, 4), "norm"), (Lambda(torch.sigmoid), "activation"),
                                      (Lambda(lambda x: x * x), "product"), (Lambda(lambda x: x.exp()), "activation")])
def test_refusals_give_their_reason(op, kind):
    refused(nn.Sequential(nn.Conv2d(3, 4, 3), op, *head(4, 36)), WHY[kind])


def test_the_first_refused_operation_is_named_before_anything_is_built():
    # the max-pool of a pre-activation comes first, but the SiLU is what no rule could ever convert
    message = refused(nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.SiLU(), *head(4, 9)), "SiLU")
    assert "max-pooling" not in message


def test_a_torch_module_without_a_rule_is_named():
    refused(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Upsample(scale_factor=2), *head(4, 144)),
            "unsupported operation Upsample (2) at node")


# ---- the registry -----------------------------------------------------------------------------------


class Fused(nn.Module):
    """A user's fused Conv-BN-ReLU whose forward torch.fx cannot trace (it branches on the data)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return y.clamp(min=0) if bool((y < 0).any()) else y


def _fused_rule(ctx, m, args, kwargs):
    return ctx.call(nn.ReLU(), ctx.call(m.bn, ctx.call(m.conv, args[0])))


@pytest.fixture
def rules():
    """The global table, with whatever a test registers taken out again."""
    before = (dict(RULES._modules), dict(RULES._functions), dict(RULES._methods))
    yield RULES
    RULES._modules, RULES._functions, RULES._methods = before


def test_a_user_module_converts_through_a_rule_registered_from_outside(rules):
    model = nn.Sequential(Fused(3, 6), nn.MaxPool2d(2), Fused(6, 6), nn.AdaptiveAvgPool2d(1), *head(6))
    refused(model, "torch.fx cannot trace")
    rs.register_rule(Fused, _fused_rule)
    qann = exact(model)
    assert kinds(qann) == ["input", "neuron", "maxpool", "neuron", "output"]
    assert [n.name for n in qann.graph.nodes][1] == "0_conv"  # named after the block's own convolution


def gate(x):
    """A user's function: a fixed gain fx would otherwise trace into (and refuse: a product of tensors)."""
    return x * torch.ones_like(x) * 0.5


class UsesGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(F.relu(gate(self.a(x))).mean((2, 3)))


def test_a_user_function_converts_through_its_rule(rules):
    refused(UsesGate(), WHY["product"])
    rs.register_rule(gate, lambda ctx, f, args, kwargs: ctx.call(operator.mul, args[0], 0.5))
    assert gate in rules.wrapped_functions()
    exact(UsesGate())


def test_a_subclass_shares_its_base_rule_only_while_it_keeps_its_forward(rules):
    class Plain(nn.Conv2d):
        pass

    class Noisy(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) + 1

    assert rules.lookup(Plain(3, 4, 1)) is rules.lookup(nn.Conv2d(3, 4, 1)) is not None
    assert rules.lookup(Noisy(3, 4, 1)) is None
    exact(nn.Sequential(Plain(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), *head(4)))


def test_replacing_and_removing_rules(rules):
    with pytest.raises(rs.ConfigError, match="already has a rule"):
        rs.register_rule(nn.ReLU, lambda *a: None)
    rs.register_rule(nn.ReLU6, rules.lookup(nn.ReLU()), replace=True)  # ReLU6 as a plain ReLU
    qann = rs.quantize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU6(), *head(4, 36)).eval(), 4, input_shape=SHAPE,
                       mean=MEAN, std=STD)
    assert "clip" not in qann.graph.nodes[1].attrs
    rs.unregister_rule(nn.ReLU6)  # now ReLU6 takes the rule of its base class Hardtanh, whose forward it keeps
    qann = rs.quantize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU6(), *head(4, 36)).eval(), 4, input_shape=SHAPE,
                       mean=MEAN, std=STD)
    assert qann.graph.nodes[1].attrs["clip"] == 6.0
    rs.unregister_rule(nn.Hardtanh)
    refused(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU6(), *head(4, 36)), "unsupported operation ReLU6 (1) at node")
    with pytest.raises(rs.ConfigError, match="has no rule"):
        rs.unregister_rule(nn.ReLU6)


@pytest.mark.parametrize("target, handler, words", [
    (int, lambda *a: None, "target must be an nn.Module subclass"),
    (3, lambda *a: None, "target must be an nn.Module subclass"),
    ("not a name", lambda *a: None, "target must be a tensor method name"),
    (Fused, "handler", "handler must be callable"),
])
def test_bad_registrations_name_the_argument(rules, target, handler, words):
    with pytest.raises(rs.ConfigError, match=words):
        rs.register_rule(target, handler)


def test_a_private_table_leaves_the_global_one_alone():
    mine = Rules()
    with pytest.raises(rs.ConversionError, match="Conv2d"):
        trace_graph(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), SHAPE, MEAN, STD, rules=mine)
    assert RULES.lookup(nn.Conv2d(3, 4, 1)) is not None
