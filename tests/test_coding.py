import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from radixsnn.core.coding import (
    radix_decode,
    radix_encode,
    radix_quantize,
    rate_decode,
    rate_encode,
    rate_quantize,
    wpt,
    wpt_inverse,
)


@settings(max_examples=200, deadline=None)
@given(T=st.integers(1, 16), data=st.data())
def test_radix_round_trip(T, data):
    values = data.draw(st.lists(st.integers(0, (1 << T) - 1), min_size=1, max_size=64))
    x = torch.tensor(values)
    trains = radix_encode(x, T)
    assert trains.shape == (T, len(values))
    assert set(trains.unique().tolist()) <= {0, 1}
    assert torch.equal(radix_decode(trains), x)


@settings(max_examples=100, deadline=None)
@given(T=st.integers(1, 12), value=st.integers(0, 4095))
def test_radix_train_is_lsb_first(T, value):
    value %= 1 << T
    trains = radix_encode(torch.tensor([value]), T)
    for t in range(T):
        assert trains[t, 0] == (value >> t) & 1  # WDT^-1: floor(X / 2^t) mod 2


def test_radix_encode_rejects_out_of_range():
    with pytest.raises(ValueError):
        radix_encode(torch.tensor([16]), 4)
    with pytest.raises(ValueError):
        radix_encode(torch.tensor([-1]), 4)


@given(x=st.integers(-1000, 1000), dt=st.integers(0, 12))
def test_wpt_inverse(x, dt):
    assert wpt_inverse(wpt(x, dt), dt) == x


@settings(max_examples=100, deadline=None)
@given(T=st.integers(1, 300), x=st.floats(0, 1))
def test_rate_code_counts(T, x):
    trains = rate_encode(torch.tensor([x], dtype=torch.float64), T)
    assert trains.shape == (T, 1)
    assert int(trains.sum()) == int(torch.floor(torch.tensor(x * T, dtype=torch.float64) + 0.5))
    assert float(rate_decode(trains)[0]) == pytest.approx(float(rate_quantize(torch.tensor([x], dtype=torch.float64), T)[0]), abs=1e-6)


@given(T=st.integers(1, 16), x=st.floats(0, 1))
def test_radix_quantize_error_bound(T, x):
    q = float(radix_quantize(torch.tensor([x], dtype=torch.float64), T)[0])
    assert abs(q - x) <= 0.5 / ((1 << T) - 1) + 1e-12
