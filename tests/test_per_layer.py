"""Time steps and weight bits per layer: parsing, the QANN, both engines and the file agree bit for bit;
the operation count follows each source's train length; ``search`` keeps its budget on held-out images."""
import argparse
import json
import math
from statistics import NormalDist

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from radixsnn import quantize
from radixsnn.cli.options import layer_values
from radixsnn.core.engines import run_integer, run_spikes
from radixsnn.core.steps import per_layer, train_lengths
from radixsnn.core.inputs import normalize
from radixsnn.core.ops import graph_ops, term_fan_in
from radixsnn.core.qann import QANN
from radixsnn.core.snn import IntegerSNN
from radixsnn.errors import ConfigError, SNNFileError
from radixsnn.experiments.search import check_search_options, loss_bound, search_time_steps, split_training_set
from test_convert import MODELS, NORM, images, randomize_bn


def _model(name="residual"):
    torch.manual_seed(2)
    return randomize_bn(MODELS[name]())


def _neurons(qann):
    return [n.name for n in qann.graph.nodes if n.kind == "neuron"]


def test_layer_values_parse_numbers_assignments_and_files(tmp_path):
    assert layer_values("4") == 4
    assert layer_values("default=4, layer3.2.conv2=6") == {"default": 4, "layer3.2.conv2": 6}
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"default": 5, "conv1": 3}))
    assert layer_values(str(f)) == {"default": 5, "conv1": 3}
    for bad in ("four", "default=4,conv1", "conv1=3", "default=x", str(tmp_path / "missing.json")):
        with pytest.raises(argparse.ArgumentTypeError):
            layer_values(bad)
    f.write_text('{"conv1": 3}')
    with pytest.raises(argparse.ArgumentTypeError, match="default"):
        layer_values(str(f))


def test_per_layer_names_layers_by_graph_or_module_name():
    qann = quantize(_model(), 4, input_shape=(3, 16, 16), **NORM)
    name = _neurons(qann)[1]
    dotted = name.replace("_", ".")
    assert per_layer(qann.graph, {"default": 4, dotted: 6, _neurons(qann)[0]: 4}, "time_steps") == (4, {name: 6})
    with pytest.raises(ConfigError, match="nonexistent"):
        per_layer(qann.graph, {"default": 4, "nonexistent": 6}, "time_steps")
    with pytest.raises(ConfigError, match="default"):
        per_layer(qann.graph, {name: 6}, "time_steps")
    with pytest.raises(ConfigError, match="time_steps must be an integer in 1..16"):
        quantize(_model(), {"default": 4, name: 17}, input_shape=(3, 16, 16), **NORM)
    with pytest.raises(ConfigError, match="weight_bits"):
        quantize(_model(), 4, weight_bits={"default": 8, "output": 1}, input_shape=(3, 16, 16), **NORM)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_per_layer_engines_equal_qann(name):
    probe = quantize(_model(name), 4, input_shape=(3, 16, 16), **NORM)
    neurons = _neurons(probe)
    steps = {"default": 4, **{n: t for n, t in zip(neurons, [7, 2, 5, 3, 6, 1, 8])}}
    bits = {"default": 6, "output": 3, neurons[-1]: 4, neurons[0]: 8}
    qann = quantize(_model(name), steps, weight_bits=bits, input_shape=(3, 16, 16), **NORM)
    qann.calibrate(images(32, seed=1), progress=False)
    snn = qann.to_snn()
    assert snn.layer_time_steps == {k: v for k, v in steps.items() if k != "default" and v != 4}
    assert snn.layer_weight_bits == {k: v for k, v in bits.items() if k != "default"}
    x = images(16, seed=3)
    expected = qann.integer_logits(x)
    assert torch.equal(run_integer(snn, x).logits, expected)
    assert torch.equal(run_spikes(snn, x).logits, expected)
    lengths = train_lengths(snn.graph, 4, snn.layer_time_steps, 8)
    for node in snn.graph.layers:  # weights within each layer's own width
        qmax = (1 << (snn.bits_of(node.name) - 1)) - 1
        for t in node.terms:
            w = snn.split_gain(t.param)[0] if t.op == "select" else snn.weights[t.param]
            assert int(w.abs().max()) <= qmax
        if node.kind == "neuron":  # the window holds the longest input train
            assert min(snn.delta_t[node.name]) >= max(lengths[t.src] for t in node.terms) - lengths[node.name]


def test_ops_graph_reads_each_sources_train_length():
    first = _neurons(quantize(_model("vgg_like"), 4, input_shape=(3, 16, 16), **NORM))[0]
    qann = quantize(_model("vgg_like"), {"default": 4, first: 7}, input_shape=(3, 16, 16), **NORM)
    lengths = train_lengths(qann.graph, 4, qann.layer_time_steps, 8)
    expected = 0
    for node in qann.graph.layers:
        m = 1
        for d in node.shape:
            m *= d
        for t in node.terms:
            assert t.op != "select"
            expected += term_fan_in(t, qann.graph[t.src].shape) * m * lengths[t.src]
    assert graph_ops(qann.graph, 4, 8, qann.layer_time_steps) == expected
    assert graph_ops(qann.graph, 4, 8, qann.layer_time_steps) > graph_ops(qann.graph, 4, 8)


def test_file_round_trip_and_checks(tmp_path):
    probe = quantize(_model(), 4, input_shape=(3, 16, 16), **NORM)
    name = _neurons(probe)[2]
    qann = quantize(_model(), {"default": 4, name: 6}, weight_bits={"default": 8, "output": 5}, input_shape=(3, 16, 16), **NORM)
    qann.calibrate(images(16, seed=1), progress=False)
    snn = qann.to_snn()
    back = IntegerSNN.load(snn.save(tmp_path / "m.snn"))
    assert back.equals(snn) and back.layer_time_steps == {name: 6} and back.layer_weight_bits == {"output": 5}
    rebuilt = QANN.from_snn(back)
    assert rebuilt.layer_time_steps == {name: 6}
    assert torch.equal(rebuilt.integer_logits(images(4)), run_integer(snn, images(4)).logits)
    for field, value, words in (("layer_time_steps", {name: 17}, "1..16"), ("layer_time_steps", {"nope": 3}, "layers of the graph"),
                                ("layer_weight_bits", {"output": 1}, "2..16")):
        with pytest.raises(SNNFileError, match=words):
            IntegerSNN(**{**snn.__dict__, field: value})


def test_search_options_are_checked():
    for args, words in (((6, [6, 7], 0.5, 8), "below the base"), ((6, [4], -1, 8), "budget"), ((17, [4], 0.5, 8), "base"),
                        ((6, [4], float("nan"), 8), "budget"), ((6, [0], 0.5, 8), "candidates"), ((6, [4], 0.5, 1), "weight_bits"),
                        ((6, [4], 0.5, 8, 1, 0.3), "confidence"), ((6, [4], 0.5, 8, 1, 1.0), "confidence"),
                        ((6, [4], 0.5, 8, 1, 0.95, "random"), "method"), ((6, [4], 0.5, 8, 1, 0.95, "greedy", "neuron"), "granularity"),
                        ((6, [4], 0.5, 8, 1, 0.95, "level", "channel", "layer"), "act_scale")):
        with pytest.raises(ConfigError, match=words):
            check_search_options(*args)


@pytest.fixture(scope="module")
def labelled():
    """Images labelled by the float model itself, so that accuracy means something for a random model."""
    model = _model("vgg_like")
    x = images(240, seed=7)
    with torch.no_grad():
        y = model(normalize(x, NORM["mean"], NORM["std"])).argmax(1)
    return model, x, y


def test_search_keeps_its_budget_and_lowers_layers(labelled):
    model, x, y = labelled
    common = dict(method="greedy", granularity="layer", base=5, candidates=[2, 3], holdout=160, sensitivity_images=80, calib_images=64, sops_images=8,
                  verify_images=0, progress=False)
    loose = search_time_steps(model, x, y, budget=100.0, quantize_options={"input_shape": (3, 16, 16), **NORM}, **common)
    neurons = [k for k in loose["assignment"] if k != "default"]
    assert loose["assignment"]["default"] == 5 and neurons  # a budget of 100 points lowers every layer it can
    assert all(v == 2 for k, v in loose["assignment"].items() if k != "default")
    assert loose["ops_graph"] == min(r["ops_graph"] for r in loose["uniform"])
    strict = search_time_steps(model, x, y, budget=0.0, confidence=0.5, quantize_options={"input_shape": (3, 16, 16), **NORM},
                               **common)
    assert strict["holdout_accuracy"] >= strict["base_holdout_accuracy"]
    assert strict["ops_graph"] <= strict["uniform"][0]["ops_graph"]
    assert all(s["kept"] == (strict["base_holdout_accuracy"] - s["holdout_accuracy"] <= 0.0) for s in strict["steps"])
    assert all(s["loss_bound"] == s["holdout_loss"] for s in strict["steps"])  # confidence 0.5: the loss itself
    assert set(strict["sops_per_image"]) == {"chosen", "base"}
    # at 95 % a step is kept only if its bound, never below its loss, is within the budget
    sure = search_time_steps(model, x, y, budget=3.0, quantize_options={"input_shape": (3, 16, 16), **NORM}, **common)
    assert sure["confidence"] == sure["holdout_confidence"] == 0.95 and sure["steps"]
    assert all(s["loss_bound"] >= s["holdout_loss"] and s["kept"] == (s["loss_bound"] <= 3.0) for s in sure["steps"])
    assert sure["loss_bound"] <= 3.0


def test_path_search_bisects_the_divergence_order(labelled):
    model, x, y = labelled
    common = dict(granularity="layer", base=5, candidates=[2, 3], holdout=160, sensitivity_images=80, calib_images=64, sops_images=0,
                  verify_images=0, progress=False, method="path", quantize_options={"input_shape": (3, 16, 16), **NORM})
    loose = search_time_steps(model, x, y, budget=100.0, **common)
    assert len(loose["steps"]) == 1 and loose["steps"][0]["kept"]  # the whole path fits: one measurement
    assert all(v == 2 for k, v in loose["assignment"].items() if k != "default")
    moves = 2 * (len(loose["assignment"]) - 1)
    assert loose["steps"][0]["path_index"] == moves
    for budget in (0.0, 2.0):
        res = search_time_steps(model, x, y, budget=budget, confidence=0.5, **common)
        steps = res["steps"]
        assert len(steps) <= 1 + math.ceil(math.log2(moves + 1))
        kept = [s["path_index"] for s in steps if s["kept"]]
        dropped = [s["path_index"] for s in steps if not s["kept"]]
        assert max(kept, default=0) < min(dropped, default=moves + 1)  # bisection: every kept prefix is shorter
        assert all(s["kept"] == (s["holdout_loss"] <= budget) for s in steps)
        lowered = sum({3: 1, 2: 2}[t] for k, t in res["assignment"].items() if k != "default")
        assert lowered == max(kept, default=0)  # the chosen assignment is the kept prefix of the path
        assert res["holdout_loss"] <= budget and res["method"] == "path"


def test_verification_takes_the_longest_verified_prefix_of_the_kept_path(labelled):
    model, x, y = labelled
    common = dict(granularity="layer", base=5, candidates=[2, 3], holdout=100, sensitivity_images=60, calib_images=40, sops_images=0,
                  verify_images=100, progress=False, quantize_options={"input_shape": (3, 16, 16), **NORM})
    loose = search_time_steps(model, x, y, budget=100.0, method="greedy", **common)
    check = loose["verification"]
    assert check["images"] == loose["verify_images"] == 100 and len(check["steps"]) == 1  # the whole kept path fits
    assert all(v == 2 for k, v in loose["assignment"].items() if k != "default")
    assert [r["time_steps"] for r in check["uniform"]] == [r["time_steps"] for r in loose["uniform"]] == [5, 2, 3] and check["uniform"][0]["loss"] == 0.0
    for method in ("greedy", "path"):
        res = search_time_steps(model, x, y, budget=2.0, confidence=0.9, method=method, **common)
        check = res["verification"]
        # the held-out images pick the path by the measured loss; the verification images apply the confidence
        assert all(s["kept"] == (s["holdout_loss"] <= 2.0) and s["loss_bound"] == s["holdout_loss"] for s in res["steps"])
        assert all(r["kept"] == (r["loss_bound"] <= 2.0) and r["loss_bound"] >= r["loss"] for r in check["steps"])
        kept = [r["path_index"] for r in check["steps"] if r["kept"]]
        dropped = [r["path_index"] for r in check["steps"] if not r["kept"]]
        assert max(kept, default=0) < min(dropped, default=10**9)  # bisection
        assert check["loss_bound"] <= 2.0 and res["confidence"] == 0.9 and res["holdout_confidence"] == 0.5
        if method == "greedy":  # the chosen assignment is that prefix of the kept moves
            layers = {}
            for s in [s for s in res["steps"] if s["kept"]][:max(kept, default=0)]:
                layers[s["layer"]] = s["time_steps"]
            assert res["assignment"] == {"default": 5, **dict(sorted(layers.items()))}
        assert res["ops_graph"] <= res["uniform"][0]["ops_graph"]


def test_training_split_parts_are_disjoint():
    held, calib, check = split_training_set(500, 200, 100, 3, 150)
    assert (len(held), len(calib), len(check)) == (200, 100, 150)
    assert len(set(torch.cat([held, calib, check]).tolist())) == 450
    assert torch.equal(split_training_set(500, 200, 100, 3)[0], held)  # verification images do not move the others
    for args, name in (((500, 200, 301, 0), "calib_images"), ((500, 200, 100, 0, 201), "verify_images")):
        with pytest.raises(ConfigError, match=name):
            split_training_set(*args)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=2, max_size=60), st.floats(0.5, 0.999))
def test_loss_bound_is_the_paired_difference_and_its_normal_bound(pairs, confidence):
    base = torch.tensor([a for a, _ in pairs])
    trial = torch.tensor([b for _, b in pairs])
    loss, bound = loss_bound(base, trial, confidence)
    d = [int(a) - int(b) for a, b in pairs]
    n = len(d)
    mean = sum(d) / n
    assert loss == pytest.approx(100 * mean)
    assert loss == pytest.approx(100 * (float(base.float().mean()) - float(trial.float().mean())))
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / n)
    assert bound == pytest.approx(100 * (mean + NormalDist().inv_cdf(confidence) * sd / math.sqrt(n)), abs=1e-9)
    assert bound >= loss - 1e-12
    if all(v == 0 for v in d):  # no prediction changed: nothing to be unsure about
        assert bound == loss == 0
