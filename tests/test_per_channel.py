"""Time steps per channel: the neuron, the QANN, both engines and the file agree bit for bit; the
operation count weighs every synapse by its source channel's T."""
import argparse
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from radixsnn import quantize
from radixsnn.cli.options import layer_values
from radixsnn.core.engines import run_integer, run_spikes
from radixsnn.core.steps import per_channel
from radixsnn.core.neuron import neuron_output_value, radix_lif, radix_lif_fused
from radixsnn.core.ops import graph_ops
from radixsnn.core.qann import QANN
from radixsnn.core.snn import IntegerSNN
from radixsnn.errors import ConfigError, SNNFileError
from test_convert import MODELS, NORM, images, randomize_bn


def _model(name="residual"):
    torch.manual_seed(2)
    return randomize_bn(MODELS[name]())


def _assignment(qann, seed=0, top=7):
    """Every other neuron layer gets random per-channel T's in 1..top; one layer a plain T."""
    g = torch.Generator().manual_seed(seed)
    neurons = [n for n in qann.graph.nodes if n.kind == "neuron"]
    steps = {"default": 4}
    for n in neurons[::2]:
        steps[n.name] = torch.randint(1, top + 1, (n.channels,), generator=g).tolist()
    if len(neurons) > 1:
        steps[neurons[1].name] = 3
    return steps


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_neuron_with_its_own_train_length_carries_its_clamped_value(data):
    n = data.draw(st.integers(1, 6))
    top = data.draw(st.integers(1, 6))
    own = torch.tensor(data.draw(st.lists(st.integers(1, top), min_size=n, max_size=n)))
    dt = torch.tensor(data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)))
    steps_in = data.draw(st.integers(1, int((own + dt).min())))
    currents = torch.tensor(data.draw(st.lists(st.lists(st.integers(-40, 40), min_size=n, max_size=n),
                                               min_size=steps_in, max_size=steps_in)))
    bias = torch.tensor(data.draw(st.lists(st.integers(-60, 60), min_size=n, max_size=n)))
    x = bias + sum(currents[t] << t for t in range(steps_in))
    for run in (lambda: radix_lif(currents, bias, top, dt, steps=own),
                lambda: radix_lif(currents.float(), bias, top, dt, state_dtype=torch.int32, out_dtype=torch.float32, steps=own)):
        trains = run()[0].long()
        assert trains.shape == (top, n)
        value = sum(trains[t] << t for t in range(top))
        assert torch.equal(value, neuron_output_value(x, own, dt))  # clamp(floor(x / 2^dT), 0, 2^T_i - 1)
        assert not bool(trains[torch.arange(top).view(-1, 1) >= own.view(1, -1)].any())  # silent past its own T_i
    fused = radix_lif_fused(currents.view(steps_in, 1, n), bias, top, dt, own)
    if fused is not None:
        assert torch.equal(fused[0].view(top, n).long(), radix_lif(currents, bias, top, dt, steps=own)[0].long())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_per_channel_engines_equal_qann(name):
    probe = quantize(_model(name), 4, input_shape=(3, 16, 16), **NORM)
    steps = _assignment(probe)
    qann = quantize(_model(name), steps, input_shape=(3, 16, 16), **NORM)
    assert qann.act_scale == "channel"  # a channel's own levels span its own range
    qann.calibrate(images(32, seed=1), progress=False)
    snn = qann.to_snn()
    lists = {k: v for k, v in steps.items() if isinstance(v, list) and min(v) != max(v)}
    assert snn.channel_time_steps == lists
    assert all(snn.train_length(k) == max(v) for k, v in lists.items())
    x = images(16, seed=3)
    expected = qann.integer_logits(x)
    assert torch.equal(run_integer(snn, x).logits, expected)
    assert torch.equal(run_spikes(snn, x).logits, expected)
    for layer, own in lists.items():  # every channel's window holds the input trains
        node = snn.graph[layer]
        longest = max(snn.train_length(t.src) for t in node.terms)
        dt = snn.delta_t[layer]
        assert all(d >= longest - t for d, t in zip(dt if isinstance(dt, list) else [dt] * len(own), own))


def test_ops_graph_weighs_each_synapse_by_its_source_channels_train():
    qann = quantize(_model("residual"), 4, input_shape=(3, 16, 16), **NORM)
    g = qann.graph
    neurons = [n for n in g.nodes if n.kind == "neuron"]
    uniform = {n.name: [5] * n.channels for n in neurons}
    assert graph_ops(g, 4, 8, {n.name: 5 for n in neurons}, uniform) == graph_ops(g, 4, 8, {n.name: 5 for n in neurons})
    # one channel one step shorter saves the synapses that read it: kernel taps x output positions per term
    layer = neurons[0]
    shorter = [5] * layer.channels
    shorter[0] = 4
    saved = graph_ops(g, 4, 8, {n.name: 5 for n in neurons}) - graph_ops(g, 4, 8, {n.name: 5 for n in neurons}, {layer.name: shorter})
    expected = 0
    for node in g.layers:
        for t in node.terms:
            if t.src != layer.name:
                continue
            positions = node.shape[1] * node.shape[2]
            reads = sum(1 for c in (t.attrs.get("channels") or range(layer.channels)) if c == 0)
            if t.op == "select":
                expected += positions * reads
            else:  # a dense convolution: every output channel reads channel 0 through its kernel
                expected += positions * t.weight_shape[0] * t.weight_shape[2] * t.weight_shape[3] * reads
    assert saved == expected > 0


def test_file_round_trip_and_checks(tmp_path):
    probe = quantize(_model(), 4, input_shape=(3, 16, 16), **NORM)
    steps = _assignment(probe, seed=4)
    qann = quantize(_model(), steps, input_shape=(3, 16, 16), **NORM)
    qann.calibrate(images(16, seed=1), progress=False)
    snn = qann.to_snn()
    back = IntegerSNN.load(snn.save(tmp_path / "m.snn"))
    assert back.equals(snn) and back.channel_time_steps == snn.channel_time_steps
    rebuilt = QANN.from_snn(back)
    assert rebuilt.channel_time_steps == qann.channel_time_steps
    assert torch.equal(rebuilt.integer_logits(images(4)), run_integer(snn, images(4)).logits)
    layer, own = next(iter(snn.channel_time_steps.items()))
    for value, words in (({layer: own[:-1]}, "integers in"), ({layer: [0] + own[1:]}, "integers in"),
                         ({layer: [min(own)] * len(own)}, "the largest"), ({"nope": own}, "neuron layers")):
        with pytest.raises(SNNFileError, match=words):
            IntegerSNN(**{**snn.__dict__, "channel_time_steps": value})
    # a file without per-channel T keeps the header it had (no new field)
    plain = quantize(_model(), 4, input_shape=(3, 16, 16), **NORM)
    plain.calibrate(images(16, seed=1), progress=False)
    assert "channel_time_steps" not in plain.spec and plain.to_snn().channel_time_steps == {}


def test_assignments_with_channel_lists_are_parsed_and_checked(tmp_path):
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"default": 5, "conv1": [3, 4, 5]}))
    assert layer_values(str(f)) == {"default": 5, "conv1": [3, 4, 5]}
    for bad in ({"default": [5], "conv1": 3}, {"default": 5, "conv1": []}, {"default": 5, "conv1": [3, "4"]}):
        f.write_text(json.dumps(bad))
        with pytest.raises(argparse.ArgumentTypeError):
            layer_values(str(f))
    probe = quantize(_model(), 4, input_shape=(3, 16, 16), **NORM)
    layer = next(n for n in probe.graph.nodes if n.kind == "neuron")
    dotted = layer.name.replace("_", ".")
    assert per_channel(probe.graph, {"default": 4, dotted: [2] + [3] * (layer.channels - 1)}) == \
        ({"default": 4, dotted: 3}, {layer.name: [2] + [3] * (layer.channels - 1)})
    with pytest.raises(ConfigError, match=f"list of {layer.channels} integers"):
        quantize(_model(), {"default": 4, layer.name: [2, 3]}, input_shape=(3, 16, 16), **NORM)
    with pytest.raises(ConfigError, match="time_steps must be an integer in 1..16"):
        quantize(_model(), {"default": 4, layer.name: [17] + [3] * (layer.channels - 1)}, input_shape=(3, 16, 16), **NORM)
    with pytest.raises(ConfigError, match="act_scale"):
        quantize(_model(), {"default": 4, layer.name: [2] + [3] * (layer.channels - 1)}, act_scale="layer",
                 input_shape=(3, 16, 16), **NORM)
