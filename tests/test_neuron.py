"""The Algorithm-1 neuron is exact LSB-first bit-serial arithmetic (property tests)."""
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from radixsnn.core.neuron import neuron_output_value, radix_lif, radix_lif_fused, radix_lif_step, radix_readout


def algorithm1(currents, bias, steps):
    """Algorithm 1 literally, with exact rationals: V_th = 0 on the LSB, V_r = 1, kappa = 1/2."""
    v = Fraction(bias)
    out = []
    for t in range(steps):
        v += currents[t] if t < len(currents) else 0  # integration
        assert v.denominator == 1  # the potential stays an integer
        if int(v) & 1:  # least significant bit > V_th = 0
            out.append(1)
            v -= 1  # V_r
        else:
            out.append(0)
        v *= Fraction(1, 2)  # leakage (Eq. 4: every step)
    return out, v


def draw_case(data, T, dT, lo=-(1 << 12), hi=1 << 12):
    steps_in = data.draw(st.integers(1, T + dT))
    currents = data.draw(st.lists(st.integers(lo, hi), min_size=steps_in, max_size=steps_in))
    bias = data.draw(st.integers(lo * 4, hi * 4))
    return currents, bias


@settings(max_examples=400, deadline=None)
@given(T=st.integers(1, 10), dT=st.integers(0, 12), data=st.data())
def test_neuron_emits_the_sum_lsb_first(T, dT, data):
    currents, bias = draw_case(data, T, dT)
    X = bias + sum(c << t for t, c in enumerate(currents))
    window = T + dT
    ref_bits, ref_v = algorithm1(currents, bias, window)
    trains, v_end = radix_lif(torch.tensor(currents).view(-1, 1), torch.tensor([bias]), T, dT, rectify=False)
    # every emitted bit equals Algorithm 1's; the train is the last T bits (Eq. 13)
    assert trains[:, 0].tolist() == ref_bits[dT:]
    assert int(v_end[0]) == ref_v
    # sum_t 2^t o(t) + 2^T' v(T'-1) = X: the bits are X mod 2^T', the rest is floor(X / 2^T')
    assert sum(b << t for t, b in enumerate(ref_bits)) == X % (1 << window)
    assert ref_v == X >> window
    if 0 <= X < (1 << window):
        assert ref_v == 0  # Lemma 1
    if X < 0:
        assert ref_v < 0  # two's complement: -1 for -2^T' <= X < 0


@settings(max_examples=400, deadline=None)
@given(T=st.integers(1, 10), dT=st.integers(0, 12), data=st.data())
def test_rectified_neuron_is_clamped_floor(T, dT, data):
    currents, bias = draw_case(data, T, dT)
    X = bias + sum(c << t for t, c in enumerate(currents))
    trains, _ = radix_lif(torch.tensor(currents).view(-1, 1), torch.tensor([bias]), T, dT)
    value = sum(int(b) << t for t, b in enumerate(trains[:, 0]))
    assert value == min(max(X >> dT, 0), (1 << T) - 1)
    assert value == int(neuron_output_value(torch.tensor([X]), T, dT)[0])


def test_negative_sum_rectifies_and_overflow_saturates():
    # X = -3 at T = 4, dT = 0: the paper's neuron emits two's-complement bits 1101 and stops at v = -1
    trains, v = radix_lif(torch.tensor([[-3]]), 0, 4, 0, rectify=False)
    assert trains[:, 0].tolist() == [1, 0, 1, 1] and int(v) == -1
    trains, _ = radix_lif(torch.tensor([[-3]]), 0, 4, 0)
    assert trains[:, 0].tolist() == [0, 0, 0, 0]
    # X = 20 >= 2^4 has not finished after 4 steps: it saturates at 15
    trains, v = radix_lif(torch.tensor([[20]]), 0, 4, 0, rectify=False)
    assert int(v) == 1
    trains, _ = radix_lif(torch.tensor([[20]]), 0, 4, 0)
    assert trains[:, 0].tolist() == [1, 1, 1, 1]


@settings(max_examples=100, deadline=None)
@given(T=st.integers(1, 10), dT=st.integers(0, 12), data=st.data())
def test_batched_run_equals_pure_steps_and_int32_state(T, dT, data):
    n = data.draw(st.integers(1, 6))
    steps_in = data.draw(st.integers(1, T + dT))
    cur = torch.tensor(data.draw(st.lists(st.integers(-500, 500), min_size=n * steps_in, max_size=n * steps_in))).view(steps_in, n)
    bias = torch.tensor(data.draw(st.lists(st.integers(-5000, 5000), min_size=n, max_size=n)))
    v = bias.clone()
    bits = []
    for t in range(T + dT):
        v, o = radix_lif_step(v, cur[t] if t < steps_in else torch.zeros_like(v))
        bits.append(o)
    trains64, v64 = radix_lif(cur, bias, T, dT, rectify=False)
    assert torch.equal(trains64, torch.stack(bits[dT:]).to(torch.uint8)) and torch.equal(v64, v)
    trains32, v32 = radix_lif(cur.float(), bias, T, dT, state_dtype=torch.int32, out_dtype=torch.float32)
    assert torch.equal(trains32.to(torch.uint8), radix_lif(cur, bias, T, dT)[0]) and torch.equal(v32.long(), v)


@given(data=st.data())
def test_readout_accumulates_radix_weighted_currents(data):
    steps = data.draw(st.integers(1, 10))
    cur = data.draw(st.lists(st.integers(-1000, 1000), min_size=steps, max_size=steps))
    bias = data.draw(st.integers(-10**6, 10**6))
    assert int(radix_readout(torch.tensor(cur).view(-1, 1), bias)[0]) == bias + sum(c << t for t, c in enumerate(cur))


def test_input_must_fit_the_window():
    with pytest.raises(ValueError):
        radix_lif(torch.zeros(9, 1, dtype=torch.int64), 0, 4, 4)


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 10), dT=st.integers(0, 12), data=st.data())
def test_fused_cpu_loop_equals_the_reference(T, dT, data):
    steps_in = data.draw(st.integers(1, min(T + dT, 10)))
    n, c, h = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31)))
    cur = torch.randint(-600, 600, (steps_in, n, c, h, h), generator=g).float()
    bias = torch.randint(-5000, 5000, (c, 1, 1), generator=g)
    fused = radix_lif_fused(cur, bias, T, dT)
    assert fused is not None  # numba is a dependency
    ref, _ = radix_lif(cur, bias, T, dT)
    assert torch.equal(fused[0], ref.float())
    assert torch.equal(fused[1], ref.long().sum((0, 1)))
