"""Sharing a layer's time steps among its channels: the allocation is the least-noise one, and
``search --granularity channel`` keeps its budget with assignments that convert exactly."""
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from radixsnn import quantize
from radixsnn.core.engines import run_spikes
from radixsnn.core.ops import graph_ops
from radixsnn.experiments.channels import allocate, channel_errors, readout_energy
from radixsnn.experiments.search import channel_levels, search_time_steps
from test_convert import MODELS, NORM, randomize_bn
from test_per_layer import labelled  # noqa: F401  (a fixture)


def _model(name="vgg_like"):
    torch.manual_seed(2)
    return randomize_bn(MODELS[name]())


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_allocation_is_the_least_weighted_error(data):
    count = data.draw(st.integers(1, 4))
    highest = data.draw(st.integers(1, 4))
    rows = []
    for _ in range(count):  # convex errors in T (each bit saves less than the one before), as quantization's are
        gains = sorted(data.draw(st.lists(st.integers(0, 50), min_size=highest, max_size=highest)), reverse=True)
        err = [0.0] * (highest + 1)
        err[highest] = float(data.draw(st.integers(0, 5)))
        for t in range(highest - 1, 0, -1):
            err[t] = err[t + 1] + gains[t]
        rows.append(err)
    errors = torch.tensor(rows, dtype=torch.float64)
    energy = torch.tensor(data.draw(st.lists(st.integers(1, 9), min_size=count, max_size=count)), dtype=torch.float64)
    average = data.draw(st.sampled_from([1.0, 1.5, 2.0, 2.5, 3.0, 4.0]))
    got = allocate(errors, energy, average, highest)
    assert all(1 <= t <= highest for t in got) and len(got) == count
    budget = int(average * count)
    assert sum(got) <= max(budget, count)

    def cost(steps):
        return sum(float(energy[c] * errors[c, t]) for c, t in enumerate(steps))

    feasible = [s for s in itertools.product(range(1, highest + 1), repeat=count) if sum(s) <= max(budget, count)]
    assert cost(got) == pytest.approx(min(cost(s) for s in feasible))


def test_channel_errors_and_readout_energy():
    clips, errors = channel_errors({"a": torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.5, 0.5]])}, 3)
    assert clips["a"].shape == (2, 4) and bool((errors["a"][:, 1:] >= 0).all())
    assert float(errors["a"][0, 2]) == 0.0  # 0..3 on the 2-bit grid of clip 3: exact
    qann = quantize(_model("vgg_like"), 4, input_shape=(3, 16, 16), **NORM)
    energy = readout_energy(qann)
    first, second = [n for n in qann.graph.nodes if n.kind == "neuron"][:2]
    term = next(t for t in second.terms)
    if term.src == first.name and term.op == "conv2d":
        w = qann.weights[term.param.replace(".", "/")].detach().double()
        expected = (w ** 2).sum(dim=(0, 2, 3)) * second.shape[1] * second.shape[2]
        assert torch.allclose(energy[first.name], expected)
    assert all(bool((e > 0).all()) for e in energy.values())


def test_channel_search_keeps_its_budget_and_shares_each_layers_steps(labelled):  # noqa: F811
    model, x, y = labelled
    common = dict(method="greedy", base=5, candidates=[2, 3], holdout=100, sensitivity_images=60, calib_images=40, sops_images=4,
                  verify_images=0, granularity="channel", progress=False, quantize_options={"input_shape": (3, 16, 16), **NORM})
    loose = search_time_steps(model, x, y, budget=100.0, **common)
    assert loose["granularity"] == "channel" and channel_levels(5, [2, 3]) == [2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
    assert set(loose["levels"].values()) == {2.0}  # a budget of 100 points takes every layer to the lowest level
    qann = quantize(model, 5, input_shape=(3, 16, 16), **NORM)
    channels = {n.name: n.channels for n in qann.graph.nodes if n.kind == "neuron"}
    for layer, steps in loose["assignment"].items():
        if layer == "default":
            continue
        own = steps if isinstance(steps, list) else [steps] * channels[layer]
        assert len(own) == channels[layer] and sum(own) <= 2.0 * len(own) and max(own) <= 5
    lists = {k: v for k, v in loose["assignment"].items() if isinstance(v, list)}
    layer_steps = {k: max(v) if isinstance(v, list) else v for k, v in loose["assignment"].items() if k != "default"}
    assert loose["ops_graph"] == graph_ops(qann.graph, 5, 8, layer_steps, lists)
    assert loose["ops_graph"] == loose["uniform"][1]["ops_graph"]  # an average of 2 steps per channel costs what T = 2 does
    strict = search_time_steps(model, x, y, budget=0.0, confidence=0.5, **common)
    assert strict["holdout_loss"] <= 0.0 and all(s["kept"] == (s["holdout_loss"] <= 0.0) for s in strict["steps"])
    # the assignment converts: its SNN equals its QANN
    q = quantize(model, strict["assignment"], input_shape=(3, 16, 16), **NORM)
    q.calibrate(x[:32], progress=False)
    snn = q.to_snn()
    assert torch.equal(run_spikes(snn, x[:8]).logits, q.integer_logits(x[:8]))


def test_level_search_lowers_every_layer_together_and_bisects(labelled):  # noqa: F811
    model, x, y = labelled
    common = dict(base=5, candidates=[2, 3], holdout=100, sensitivity_images=60, calib_images=40, sops_images=0,
                  verify_images=0, granularity="channel", method="level", progress=False,
                  quantize_options={"input_shape": (3, 16, 16), **NORM})
    levels = channel_levels(5, [2, 3], 0.125)
    loose = search_time_steps(model, x, y, budget=100.0, **common)
    assert loose["sensitivity"] == [] and len(loose["steps"]) == 1  # the whole path fits: one measurement
    assert set(loose["levels"].values()) == {2.0}
    for budget in (0.0, 3.0):
        res = search_time_steps(model, x, y, budget=budget, confidence=0.5, **common)
        assert len(res["steps"]) <= 1 + (len(levels) - 1).bit_length()
        assert len(set(res["levels"].values())) <= 1  # one level for every layer, or none lowered
        assert all(s["layer"] == "all" and s["kept"] == (s["holdout_loss"] <= budget) for s in res["steps"])
        assert res["holdout_loss"] <= budget
