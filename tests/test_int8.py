"""The integer engine's int8 kernels (radixsnn.core.int8): exact int32 sums of int8 products, checked
against float64 convolutions on random layers, and whole networks equal to the float-kernel engine, the
spike engine and the QANN on real CIFAR-10 images."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import radixsnn as rs
from radixsnn.core import engines
from radixsnn.core.graph import Term
from radixsnn.core.int8 import int8_matmul_exact, rows, synapse_int8, takes_int8, unrows, weight_matrix
from radixsnn.data import load_cifar

needs_exact_kernel = pytest.mark.skipif(not int8_matmul_exact(), reason="this CPU's int8 matrix product is not exact: "
                                        "the integer engine uses its float kernels here (test_float_kernels_...)")


def conv_term(c_in, c_out, k, stride, padding, dilation) -> Term:
    return Term(src="x", param="w", op="conv2d", weight_shape=[c_out, c_in, k, k],
                attrs={"stride": [stride] * 2, "padding": [padding] * 2, "dilation": [dilation] * 2, "groups": 1})


@needs_exact_kernel
@settings(max_examples=40, deadline=None)
@given(c_in=st.integers(1, 9), c_out=st.integers(1, 7), k=st.integers(1, 4), stride=st.integers(1, 3),
       padding=st.integers(0, 2), dilation=st.integers(1, 2), size=st.integers(5, 11), bits=st.sampled_from([1, 7, 8]),
       seed=st.integers(0, 2**16), channels_last=st.booleans())
def test_int8_convolution_is_the_exact_integer_convolution(c_in, c_out, k, stride, padding, dilation, size, bits, seed,
                                                           channels_last):
    gen = torch.Generator().manual_seed(seed)
    if dilation * (k - 1) + 1 > size + 2 * padding:
        return
    term = conv_term(c_in, c_out, k, stride, padding, dilation)
    x = torch.randint(0, 1 << bits, (3, c_in, size, size), generator=gen, dtype=torch.uint8)
    x[0] = (1 << bits) - 1  # the extremes: every input at its top, every weight at -128 and 127
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randint(-128, 128, (c_out, c_in, k, k), generator=gen, dtype=torch.int64)
    w[0] = -128
    w[-1] = 127
    assert takes_int8(term, w, bits)
    got = synapse_int8(term, x, weight_matrix(term, w), shifted=bits == 8)
    want = F.conv2d(x.double(), w.double(), None, stride, padding, dilation)
    assert got.dtype == torch.int32 and torch.equal(got.to(torch.int64), rows(want).to(torch.int64))
    assert torch.equal(unrows(got, list(want.shape[1:])).double(), want)


def test_what_the_int8_kernels_do_not_take():
    w = torch.zeros(4, 2, 3, 3, dtype=torch.int64)
    assert not takes_int8(conv_term(2, 4, 3, 1, 1, 1), w, 9)  # 9-step trains pass 255
    assert not takes_int8(conv_term(2, 4, 3, 1, 1, 1), w + 128, 8)  # weights past int8
    grouped = conv_term(2, 4, 3, 1, 1, 1)
    grouped.attrs["groups"] = 2
    assert not takes_int8(grouped, w[:, :1], 8)
    pooled = Term(src="x", param="w", op="linear", weight_shape=[3, 2], attrs={"mode": "sumpool"})
    assert not takes_int8(pooled, torch.zeros(3, 2, dtype=torch.int64), 4)


@pytest.fixture(scope="module")
def cifar(cifar10_dir):
    x, y = load_cifar("cifar10", cifar10_dir, train=False)
    return x[:64], y[:64]


@pytest.fixture(autouse=True)
def int8_wherever_exact(monkeypatch):
    """The engine takes the int8 kernels wherever they are exact, fast or not: this file tests them."""
    monkeypatch.setattr(engines, "int8_kernels", int8_matmul_exact)


def float_kernels(monkeypatch):
    monkeypatch.setattr(engines, "int8_kernels", lambda: False)


@pytest.mark.parametrize("time_steps", [3, 8])
def test_pretrained_resnet20_int8_engine_equals_float_kernels_spikes_and_qann(time_steps, cifar, resnet20_weights,
                                                                              one_thread, monkeypatch):
    """Option-A shortcuts (integer gains), a per-neuron first-layer bias, per-channel shifts: every image's
    logits equal on the int8 kernels, the float kernels, the spike engine and the QANN."""
    x, _ = cifar
    snn = rs.convert(rs.create_model("resnet20", weights=resnet20_weights), x[:32], time_steps=time_steps, progress=False)
    layers = [n for n in snn.graph.nodes[1:] if n.kind != "maxpool"]
    taken = [engines._int8_weights(snn, n, "cpu") is not None for n in layers]
    # every neuron layer; the readout's global sum-pool passes int8 and keeps to a float kernel
    assert taken == [int8_matmul_exact() and n.kind != "output" for n in layers]
    fast = engines.run_integer(snn, x).logits
    assert torch.equal(fast, rs.QANN.from_snn(snn).integer_logits(x))
    assert torch.equal(fast, engines.run_spikes(snn, x).logits)
    float_kernels(monkeypatch)
    assert not any(engines._int8_weights(snn, n, "cpu") is not None for n in layers)
    assert torch.equal(fast, engines.run_integer(snn, x).logits)


@pytest.mark.parametrize("name, options", [("vgg16", {"weight_bits": 7}), ("mobilenet", {}), ("resnet18", {"time_steps": 9})])
def test_zoo_networks_int8_engine_equals_float_kernels(name, options, cifar, one_thread, monkeypatch):
    """Max pooling on uint8 trains, depthwise convolutions (float kernels beside int8 ones) and 9-step
    trains (float kernels where a source passes 255) give the float kernels' logits."""
    x, _ = cifar
    torch.manual_seed(0)
    options = {"time_steps": 8, **options}
    snn = rs.convert(rs.create_model(name).eval(), x[:16], progress=False, **options)
    fast = engines.run_integer(snn, x[:16]).logits
    assert torch.equal(fast, rs.QANN.from_snn(snn).integer_logits(x[:16]))
    float_kernels(monkeypatch)
    assert torch.equal(fast, engines.run_integer(snn, x[:16]).logits)


def test_float_kernels_split_sums_past_2_24_into_exact_float32_pieces(cifar, resnet20_weights, one_thread, monkeypatch):
    """Where int8 kernels are not taken, layers whose sums can pass 2^24 (T = 8 here) convolve their inputs
    in bit pieces whose float32 products are exact, and sum them in float64: the QANN's logits."""
    x, _ = cifar
    float_kernels(monkeypatch)
    snn = rs.convert(rs.create_model("resnet20", weights=resnet20_weights), x[:32], time_steps=8, progress=False)
    wide = [n for n in snn.graph.nodes[1:] if n.kind != "maxpool" and engines._carrier(snn, n, "cpu") == torch.float64]
    assert wide
    calls = []
    pieces = engines._float32_pieces
    monkeypatch.setattr(engines, "_float32_pieces", lambda *a: calls.append(a[1].param) or pieces(*a))
    assert torch.equal(engines.run_integer(snn, x).logits, rs.QANN.from_snn(snn).integer_logits(x))
    assert len(calls) >= len(wide)


def test_the_kept_int8_plan_follows_changes_to_the_weights(cifar, resnet20_weights, one_thread, monkeypatch):
    """The int8 weight matrices are kept between batches; an in-place change of a weight (here beyond int8)
    or of the kernel check rebuilds them, and the logits stay the spike engine's."""
    x, _ = cifar
    snn = rs.convert(rs.create_model("resnet20", weights=resnet20_weights), x[:16], time_steps=4, progress=False)
    plan = engines._int8_plan(snn, "cpu")
    assert engines._int8_plan(snn, "cpu") is plan
    assert set(vars(snn)) == {f.name for f in dataclasses.fields(snn)}  # kept beside it, not on it
    node = snn.graph.layers[1]
    snn.weights[node.terms[0].param].view(-1)[0] = 200
    changed = engines._int8_plan(snn, "cpu")
    assert changed is not plan and changed[node.name] is None
    assert torch.equal(engines.run_integer(snn, x[:16]).logits, engines.run_spikes(snn, x[:16]).logits)
    float_kernels(monkeypatch)
    assert not any(v is not None for v in engines._int8_plan(snn, "cpu").values())
