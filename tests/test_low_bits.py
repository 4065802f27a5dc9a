"""Low-bit weights: the least-error weight grid, shortcut gains as b-bit weights on delayed spikes, their
file format, and the engines and the QANN agreeing bit for bit with them (small networks and real images)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from radixsnn import quantize
from radixsnn.core.engines import run_integer, run_spikes
from radixsnn.core.neuron import radix_lif, radix_lif_fused
from radixsnn.core.qann import QANN
from radixsnn.core.quant import WeightQuant
from radixsnn.core.snn import IntegerSNN
from radixsnn.errors import ConfigError, SNNFileError
from test_convert import MODELS, NORM, images, randomize_bn


@settings(max_examples=200, deadline=None)
@given(bits=st.integers(2, 8), x=st.floats(-1e6, 1e6, allow_nan=False), max_delay=st.integers(0, 20))
def test_gain_is_the_nearest_b_bit_weight_on_delayed_spikes(bits, x, max_delay):
    wq = WeightQuant(bits)
    g = float(wq.quantize_gain(torch.tensor([x], dtype=torch.float64), max_delay)[0])
    m, k = wq.split_gain(torch.tensor([int(g)]))
    assert float(g).is_integer() and int(m) << int(k) == int(g)
    assert abs(int(m)) <= wq.qmax and int(k) <= max_delay
    # no value m 2^k with |m| <= qmax and k <= max_delay is nearer (brute force)
    candidates = [m * 2.0**k for k in range(max_delay + 1) for m in range(-wq.qmax, wq.qmax + 1)]
    assert abs(g - x) <= min(abs(c - x) for c in candidates) + 1e-9 * max(1.0, abs(x))


@settings(max_examples=100, deadline=None)
@given(bits=st.integers(2, 16), m=st.integers(-(2**15) + 1, 2**15 - 1), k=st.integers(0, 40))
def test_split_gain_inverts_any_b_bit_weight_times_a_power_of_two(bits, m, k):
    wq = WeightQuant(bits)
    m = max(-wq.qmax, min(wq.qmax, m))
    mm, kk = wq.split_gain(torch.tensor([m << k]))
    assert int(mm) << int(kk) == m << k and abs(int(mm)) <= wq.qmax and int(kk) <= k


def test_split_gain_rejects_other_integers():
    with pytest.raises(ValueError):
        WeightQuant(3).split_gain(torch.tensor([5]))  # 5 is not m 2^k with |m| <= 3
    with pytest.raises(ValueError):
        WeightQuant(3).split_gain(torch.tensor([7 << 3]))


def _snn(name="residual", T=4, bits=3, **kw):
    torch.manual_seed(2)
    model = randomize_bn(MODELS[name]())
    qann = quantize(model, T, weight_bits=bits, input_shape=(3, 16, 16), **NORM, **kw)
    qann.calibrate(images(32, seed=1), progress=False)
    return qann, qann.to_snn()


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("T,bits,shift,grid,gains", [(4, 3, "channel", "mse", "delayed"), (8, 3, "layer", "mse", "delayed"),
                                                      (3, 4, "channel", "max", "plain"), (6, 2, "channel", "mse", "plain")])
def test_low_bit_engines_equal_qann(name, T, bits, shift, grid, gains):
    qann, snn = _snn(name, T, bits, shift=shift, weight_grid=grid, gains=gains)
    x = images(16, seed=3)
    expected = qann.integer_logits(x)
    assert torch.equal(run_integer(snn, x).logits, expected)
    assert torch.equal(run_spikes(snn, x).logits, expected)
    for node in snn.graph.layers:
        for t in node.terms:
            w = snn.weights[t.param]
            if t.op == "select" and gains == "delayed":
                m, _ = snn.split_gain(t.param)
                assert int(m.abs().max()) <= WeightQuant(bits).qmax
            else:
                assert int(w.abs().max()) <= WeightQuant(bits).qmax


def test_delayed_gains_let_the_convolution_set_the_shift():
    """With plain 3-bit gains an identity shortcut caps dT (gain ~ 2^dT <= 3); delayed gains do not."""
    _, plain = _snn(gains="plain", weight_grid="max")
    _, delayed = _snn(gains="delayed", weight_grid="max")
    residual = [n.name for n in plain.graph.layers if any(t.op == "select" for t in n.terms)]
    assert residual
    assert all(max(delayed.delta_t[n]) >= max(plain.delta_t[n]) for n in residual)
    assert any(max(delayed.delta_t[n]) > max(plain.delta_t[n]) for n in residual)
    delays = [snn_k for n in residual for t in delayed.graph[n].terms if t.op == "select"
              for snn_k in [delayed.split_gain(t.param)[1]]]
    assert any(int(k.max()) > 0 for k in delays)


@pytest.mark.parametrize("shift", ["channel", "layer"])
def test_least_error_grid_is_never_worse_than_the_largest_weight(shift):
    """Per output channel (or layer), the shift that ``weight_grid="mse"`` picks has no larger squared
    weight error than the no-clipping shift of ``"max"``."""
    for grid in ("max", "mse"):
        qann, _ = _snn("vgg_like", 4, 3, shift=shift, weight_grid=grid, gains="plain")
        errors = {}
        for node in qann.graph.layers:
            if node.kind != "neuron":
                continue
            ws, _, dt, scale = qann.layer_integers(node)
            dt = torch.as_tensor(dt, dtype=torch.float64).reshape(-1, 1)
            err = 0
            for i, (t, w) in enumerate(zip(node.terms, ws)):
                real = qann.weights[t.param.replace(".", "/")].double()
                s_in = qann.scale_of(t.src).double()[qann._channel_index(node, i).clamp_min(0)]
                ratio = (real * s_in / scale.double().view(-1, *([1] * (real.dim() - 1)))).reshape(len(w), -1)
                err = err + ((w.reshape(len(w), -1) / 2.0**dt - ratio) ** 2).sum(1)
            errors[node.name] = err if shift == "channel" else err.sum()  # one shift: the layer's total error
        if grid == "max":
            worst = errors
    for name, err in errors.items():
        assert bool((err <= worst[name] * (1 + 1e-9) + 1e-15).all()), name


def test_options_are_checked_and_recorded():
    for key, bad in (("weight_grid", "min"), ("gains", "fast")):
        with pytest.raises(ConfigError, match=key):
            _snn(**{key: bad})
    qann, snn = _snn(weight_grid="mse", gains="delayed")
    assert snn.qann_spec["weight_grid"] == "mse" and snn.qann_spec["gains"] == "delayed"
    old = {k: v for k, v in qann.spec.items() if k not in ("weight_grid", "gains")}
    rebuilt = QANN.from_spec(old)  # a file written before these options: the old behaviour
    assert (rebuilt.weight_grid, rebuilt.gains) == ("max", "plain")


def test_file_stores_weights_and_delays_and_round_trips(tmp_path):
    _, snn = _snn(weight_grid="mse", gains="delayed")
    path = snn.save(tmp_path / "m.snn")
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        delays = {k: f.get_tensor(k) for k in keys if k.startswith("d/")}
        assert delays and all(d.dtype == torch.uint8 for d in delays.values())
        assert all(f.get_tensor(k).dtype == torch.int8 for k in keys if k.startswith("w/"))
    back = IntegerSNN.load(path)
    assert back.equals(snn)
    x = images(8, seed=5)
    assert torch.equal(run_spikes(back, x).logits, run_integer(snn, x).logits)


def _rewrite(path, out, change):
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    change(tensors)
    save_file(tensors, str(out), metadata=meta)


@pytest.mark.parametrize("change,words", [
    (lambda t: t.update({k: v.to(torch.int16) for k, v in t.items() if k.startswith("d/")}), "uint8"),
    (lambda t: t.update({k: torch.cat([v, v]) for k, v in t.items() if k.startswith("d/")}), "shape"),
    (lambda t: t.update({k: torch.full_like(v, 63) for k, v in t.items() if k.startswith("d/")}), "longer than any window"),
])
def test_bad_delay_tensors_are_rejected(tmp_path, change, words):
    _, snn = _snn(weight_grid="mse", gains="delayed")
    path = snn.save(tmp_path / "m.snn")
    _rewrite(path, tmp_path / "bad.snn", change)
    with pytest.raises(SNNFileError):
        IntegerSNN.load(tmp_path / "bad.snn")


def test_gains_are_checked_in_memory():
    _, snn = _snn(weight_grid="mse", gains="delayed")
    node = next(n for n in snn.graph.layers if any(t.op == "select" for t in n.terms))
    term = next(t for t in node.terms if t.op == "select")
    weights = dict(snn.weights)
    weights[term.param] = torch.full_like(weights[term.param], 5)  # not m 2^k at 3 bits
    with pytest.raises(SNNFileError, match="delayed spikes"):
        IntegerSNN(**{**snn.__dict__, "weights": weights})
    dt = snn.delta_t[node.name]
    room = (max(dt) if isinstance(dt, list) else dt) + snn.time_steps - snn.train_length(term.src)
    weights[term.param] = torch.full_like(weights[term.param], 1 << (room + 1))  # arrives after the window
    with pytest.raises(SNNFileError, match="window"):
        IntegerSNN(**{**snn.__dict__, "weights": weights})


@pytest.mark.parametrize("fused", [False, True])
def test_a_neuron_refuses_input_after_its_own_window(fused):
    """Delayed spikes make a layer's currents longer than its shortest window; they must be zero past
    each neuron's own window."""
    dt = torch.tensor([1, 3]).view(2, 1)
    ok = torch.zeros(6, 1, 2, 1)
    ok[:4, 0, 0] = 1  # neuron 0: window T + 1 = 4 steps
    ok[:6, 0, 1] = 1  # neuron 1: window 6 steps
    run = (lambda c: radix_lif_fused(c, torch.zeros(2, 1), 3, dt)) if fused else (lambda c: radix_lif(c, 0, 3, dt))
    assert run(ok) is not None  # numba is a dependency: the fused loop runs
    late = ok.clone()
    late[4, 0, 0] = 1
    with pytest.raises(ConfigError, match="window"):
        run(late)


@pytest.mark.slow
def test_resnet20_three_bit_weights_on_real_images(resnet20_weights, cifar10_dir):
    """Post-training 3-bit weights at T = 8 on real CIFAR-10 images: the spike engine (delayed spikes on
    the shortcuts), the integer engine and the QANN agree on every logit."""
    from radixsnn.data import load_cifar
    from radixsnn.models import create_model

    model = create_model("resnet20", weights=resnet20_weights)
    train, _ = load_cifar("cifar10", cifar10_dir, train=True)
    test, _ = load_cifar("cifar10", cifar10_dir, train=False)
    qann = quantize(model, 8, weight_bits=3)
    qann.calibrate(train[:256], progress=False)
    snn = qann.to_snn()
    x = test[:200]
    expected = qann.integer_logits(x)
    assert torch.equal(run_integer(snn, x).logits, expected)
    assert torch.equal(run_spikes(snn, x).logits, expected)
