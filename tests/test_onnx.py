"""The ONNX export: onnxruntime computes the integer engine's logits bit for bit.

* the qlinear lowering's requantization floors every sum at every edge its condition admits (and a plain
  2^-dT multiplier would not: the test can see the difference);
* uint8 x int8 products are exact up to the int16 pair bound the lowering respects;
* exactness on real CIFAR-10 images (ResNet-20 at T = 4 and 8, VGG-16), on per-channel, 3-bit and
  per-layer networks, on every random-init zoo model the suite converts, and on random small graphs;
* what ONNX's 8-bit operators cannot hold is refused with one line naming the layer; the file's
  metadata gives the float logits without radixsnn; the README's script runs with numpy and onnxruntime
  alone; the command line exports and evaluates.
"""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open

import radixsnn as rs
from radixsnn.cli import main
from radixsnn.core.engines import run_integer
from radixsnn.core.onnx_export import (FLOAT_LIMIT, PAIR_LIMIT, _split_channel, float_tail_holds, pairs_exact, plan,
                                       qlinear_requantization, rounding_holds, to_onnx)
from radixsnn.data import load_cifar
from radixsnn.errors import ConfigError, ConversionError
from test_convert import MODELS, NORM, images, randomize_bn
from test_per_channel import _assignment
from test_zoo_layers import MEAN, STD, ZOO

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread")  # small networks: one thread is fastest


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _qlinear_conv(w: np.ndarray, bias: np.ndarray, scale: np.ndarray, w_type=np.int8) -> ort.InferenceSession:
    """One QLinearConv with unit input / output scales, zero input zero point and the given weights."""
    h, tp = onnx.helper, onnx.TensorProto
    zero = np.zeros(w.shape[0], np.int8) if w_type == np.int8 else np.array(128, np.uint8)
    weights = w.astype(np.int8) if w_type == np.int8 else (w + 128).astype(np.uint8)
    consts = {"xs": np.array(1.0, np.float32), "xz": np.array(0, np.uint8), "w": weights, "ws": scale, "wz": zero,
              "ys": np.array(1.0, np.float32), "yz": np.array(0, np.uint8), "b": bias.astype(np.int32)}
    pads = [w.shape[2] // 2] * 4
    node = h.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], pads=pads)
    graph = h.make_graph([node], "g", [h.make_tensor_value_info("x", tp.UINT8, None)],
                         [h.make_tensor_value_info("y", tp.UINT8, None)],
                         [onnx.numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 21)])
    model.ir_version = 10
    return _session(model)


def _edge_sums() -> tuple[list[int], list[int], list[int]]:
    """(sum, dT, T) at both ends of every output value's range of sums, for every dT in 0..24 and T in 1..8,
    up to the largest sum the rounding condition admits (and, where it admits every sum, far beyond)."""
    sums, shifts, steps = [], [], []
    for d in range(25):
        for t in range(1, 9):
            top = (1 << t) - 1
            unlimited = rounding_holds(d, t, 1 << 30)
            for q in range(-2, top + 3):
                for r in (0, (1 << d) - 1):
                    s = q * (1 << d) + r
                    if unlimited or rounding_holds(d, t, s):
                        sums.append(s), shifts.append(d), steps.append(t)
            if unlimited:
                sums.append((1 << 30) - 1), shifts.append(d), steps.append(t)
    return sums, shifts, steps


def test_qlinear_requantization_floors_every_edge_its_condition_admits():
    """QLinearConv with zero weights computes round(fl((bias') * scale)) of its bias alone: every sum at
    both ends of every output's range of sums floors and saturates like the integer engine. Rounding is
    monotone, so the sums in between follow: the lowering is exact wherever ``rounding_holds``."""
    sums, shifts, steps = _edge_sums()
    bias, scale = qlinear_requantization(np.array(sums), shifts)
    w = np.zeros((len(sums), 1, 1, 1), np.int64)
    got = _qlinear_conv(w, bias, scale).run(None, {"x": np.zeros((1, 1, 1, 1), np.uint8)})[0].reshape(-1).astype(np.int64)
    caps = (1 << np.array(steps)) - 1
    want = np.clip(np.floor_divide(np.array(sums), 1 << np.array(shifts)), 0, caps)
    assert np.array_equal(np.minimum(got, caps), want)
    # without the nudge, half-to-even rounding lands on ties: the test sees the difference
    plain = np.array([2.0 ** -d for d in shifts], np.float32)
    off = _qlinear_conv(w, bias, plain).run(None, {"x": np.zeros((1, 1, 1, 1), np.uint8)})[0].reshape(-1)
    assert not np.array_equal(np.minimum(off.astype(np.int64), caps), want)


@pytest.mark.parametrize("w_type", [np.int8, np.uint8])
def test_products_are_exact_within_the_pair_bound(w_type):
    """All-255 inputs against the largest weights the lowering gives each weight type: int8 weights up to
    the int16 pair bound (x86 without VNNI adds pairs of products with saturation), uint8 any 8-bit weight."""
    wmax = PAIR_LIMIT // (2 * 255) if w_type == np.int8 else 127
    g = np.random.default_rng(0)
    w = g.choice([-wmax, wmax], size=(8, 16, 3, 3))
    x = np.full((2, 16, 6, 6), 255, np.uint8)
    x[:, :, ::2] = g.integers(200, 256, size=x[:, :, ::2].shape)
    bias = g.integers(-1000, 1000, size=8)
    got = _qlinear_conv(w, bias, np.full(8, 2.0 ** -10, np.float32), w_type).run(None, {"x": x})[0]
    acc = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
                                     torch.tensor(bias, dtype=torch.float64), padding=1).numpy()
    assert np.array_equal(got, np.clip(np.round(acc / 1024), 0, 255))  # the plain multiplier rounds half to even


def test_pairs_exact_says_whether_int8_products_beyond_the_pair_bound_are_exact():
    """:func:`pairs_exact` agrees with a convolution of its own (random weights of +-127 on inputs near 255, not
    the check's all-255 pattern): exact where it says so, wrong where it says pairs saturate."""
    g = np.random.default_rng(1)
    w = g.choice([-127, 127], size=(8, 16, 3, 3))
    x = g.integers(240, 256, size=(2, 16, 6, 6)).astype(np.uint8)
    bias = g.integers(-1000, 1000, size=8)
    got = _qlinear_conv(w, bias, np.full(8, 2.0 ** -12, np.float32)).run(None, {"x": x})[0]
    acc = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
                                     torch.tensor(bias, dtype=torch.float64), padding=1).numpy()
    assert np.array_equal(got, np.clip(np.round(acc / 4096), 0, 255)) == pairs_exact()


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(sums=st.integers(0, FLOAT_LIMIT), bias=st.integers(-FLOAT_LIMIT, FLOAT_LIMIT), d=st.integers(0, 22),
       t=st.integers(1, 8), data=st.data())
def test_float_tail_is_the_floor(sums, bias, d, t, data):
    """Wherever :func:`float_tail_holds`, the float32 tail -- cast, add ``bias - (2^dT - 1) / 2``, divide by
    ``2^dT``, round half to even, saturate to [0, 255], min with ``2^T - 1`` -- is
    ``clamp(floor((sum + bias) / 2^dT), 0, 2^T - 1)`` for every sum in range, at both edges of every quotient."""
    if not float_tail_holds(sums, sums + abs(bias), abs(bias), d):
        return
    lo, hi = -sums, sums
    picks = data.draw(st.lists(st.integers(lo, hi), min_size=1, max_size=20))
    edges = [q * (1 << d) + r - bias for q in range(-1, (1 << t) + 1) for r in (0, (1 << d) - 1)]
    s = np.array(sorted({lo, hi, *picks, *(e for e in edges if lo <= e <= hi)}), np.int64)
    biased = s.astype(np.float32) + np.float32(bias - ((1 << d) - 1) / 2)
    got = np.minimum(np.clip(np.rint(biased / np.float32(1 << d)), 0, 255), (1 << t) - 1)
    assert np.array_equal(got.astype(np.int64), np.clip(np.floor_divide(s + bias, 1 << d), 0, (1 << t) - 1))


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(g=st.integers(-3000, 1 << 18), d=st.integers(0, 20), t=st.integers(1, 8), t_src=st.integers(1, 8),
       lo=st.integers(-(1 << 22), 0), span=st.integers(0, 1 << 23), data=st.data())
def test_two_stage_split_is_the_one_stage_floor(g, d, t, t_src, lo, span, data):
    """Wherever :func:`_split_channel` gives a split, the two stages -- ``q = floor((u + low s) / 2^e) - L``
    saturated to uint8, then ``floor((q + L + high s) / 2^(d - e))`` saturated to ``2^T - 1`` -- equal the
    layer's ``clamp(floor((u + g s) / 2^d), 0, 2^T - 1)`` for sums ``u`` in its range and every shortcut
    value ``s``; the taps fit int8. (QLinearConv's floors are ``rounding_holds``, proved above.)"""
    cap, peak, hi = (1 << t) - 1, (1 << t_src) - 1, lo + span
    split = _split_channel(g, d, peak, cap, lo, hi)
    if split is None:
        return
    e, low, high, window = split
    assert -128 <= low <= 127 and -127 <= high <= 127 and 0 <= e <= d
    u = np.array(sorted({lo, hi, *data.draw(st.lists(st.integers(lo, hi), min_size=1, max_size=20))}), np.int64)[:, None]
    s = np.arange(peak + 1, dtype=np.int64)[None, :]
    q = np.clip(np.floor_divide(u + low * s, 1 << e) - window, 0, 255)
    got = np.clip(np.floor_divide(q + window + high * s, 1 << (d - e)), 0, cap)
    assert np.array_equal(got, np.clip(np.floor_divide(u + g * s, 1 << d), 0, cap))


def _assert_exact(snn, x):
    """The onnx engine (int8 weights everywhere where this machine's onnxruntime adds products in int32)
    and the portable export both give the integer engine's logits."""
    want = run_integer(snn, x).logits
    assert torch.equal(rs.run(snn, x, engine="onnx").logits, want)
    if pairs_exact():  # the engine took int8 weights everywhere: check the portable file too
        got = _session(to_onnx(snn, int8_weights="portable")).run(None, {"pixels": x.numpy()})[0]
        assert torch.equal(torch.from_numpy(got), want)


# ----------------------------------------------------------------------------- real images


@pytest.fixture(scope="module")
def cifar(cifar10_dir):
    train, _ = load_cifar("cifar10", cifar10_dir, train=True)
    test, labels = load_cifar("cifar10", cifar10_dir, train=False)
    return train[:512], test[:500], labels[:500]


@pytest.mark.cifar
@pytest.mark.pretrained
@pytest.mark.slow
@pytest.mark.parametrize("T", [4, 8])
def test_resnet20_on_cifar_images(cifar, resnet20_weights, T):
    train, test, _ = cifar
    snn = rs.convert(rs.create_model("resnet20", weights=resnet20_weights), train, time_steps=T, progress=False)
    lowerings = plan(snn)
    kinds = {low.lowering for low in lowerings}
    assert {"qlinear", "integer", "readout"} <= kinds  # every neuron lowering on one network
    assert ("two-stage" in kinds) == (T == 4)  # residual layers of 4-step trains in two QLinearConvs
    tails = {low.tail for low in lowerings if low.lowering == "integer"}
    assert tails == ({"float"} if T == 4 else {"float", "int32"})  # the first layer floors in float32
    _assert_exact(snn, test)


@pytest.mark.cifar
@pytest.mark.pretrained
@pytest.mark.slow
def test_vgg16_on_cifar_images(cifar, models_dir):
    train, test, _ = cifar
    model = rs.create_model("vgg16", weights=models_dir / "vgg16-cifar10-253ed08f.pth")
    snn = rs.convert(model, train[:256], time_steps=8, progress=False)
    assert {low.weights for low in plan(snn) if low.lowering == "qlinear"} == {"uint8"}  # 255-valued trains
    assert {low.weights for low in plan(snn, int8_weights="all") if low.lowering == "qlinear"} == {"int8"}
    _assert_exact(snn, test[:200])


# ----------------------------------------------------------------------------- random-init networks


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("T,act_scale", [(2, "layer"), (5, "channel")])
def test_zoo_models(name, T, act_scale):
    torch.manual_seed(2)
    qann = rs.quantize(randomize_bn(ZOO[name](), spread=0.2), T, act_scale=act_scale, input_shape=(3, 16, 16),
                       mean=MEAN, std=STD)
    qann.calibrate(images(32, seed=1), progress=False)
    _assert_exact(qann.to_snn(), images(12, seed=3))


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("T,bits", [(4, 8), (8, 3), (7, 8)])
def test_converter_models(name, T, bits):
    torch.manual_seed(2)
    qann = rs.quantize(randomize_bn(MODELS[name]()), T, weight_bits=bits, input_shape=(3, 16, 16), **NORM)
    qann.calibrate(images(32, seed=1), progress=False)
    _assert_exact(qann.to_snn(), images(16, seed=3))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_per_channel_and_per_layer_time_steps(name):
    torch.manual_seed(2)
    probe = rs.quantize(randomize_bn(MODELS[name]()), 4, input_shape=(3, 16, 16), **NORM)
    qann = rs.quantize(randomize_bn(MODELS[name]()), _assignment(probe), input_shape=(3, 16, 16), **NORM)
    qann.calibrate(images(32, seed=1), progress=False)
    snn = qann.to_snn()
    assert snn.channel_time_steps
    _assert_exact(snn, images(16, seed=3))


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(st.data())
def test_random_small_graphs(data):
    """Random stacks of convolutions (kernel, stride, groups, padding), max-pools, ReLUs and a classifier,
    at random T, weight bits and activation-scale granularity."""
    width = data.draw(st.sampled_from([2, 4, 6]))
    layers, channels, size = [], 3, 12
    for _ in range(data.draw(st.integers(1, 3))):
        k = data.draw(st.sampled_from([1, 3]))
        groups = data.draw(st.sampled_from([1, channels])) if channels == width else 1
        stride = data.draw(st.sampled_from([1, 2])) if size >= 6 else 1
        pad = k // 2 if size < 5 else k // 2 * data.draw(st.integers(0, 1))
        layers += [nn.Conv2d(channels, width, k, stride, pad, groups=groups), nn.BatchNorm2d(width), nn.ReLU()]
        size = (size + 2 * pad - k) // stride + 1
        channels = width
        if size >= 4 and data.draw(st.booleans()):
            layers.append(nn.MaxPool2d(2))
            size //= 2
    layers += [nn.Flatten(), nn.Linear(channels * size * size, 3)]
    torch.manual_seed(data.draw(st.integers(0, 1000)))
    model = randomize_bn(nn.Sequential(*layers), spread=0.3)
    T, bits = data.draw(st.integers(1, 8)), data.draw(st.integers(3, 8))
    qann = rs.quantize(model, T, weight_bits=bits, act_scale=data.draw(st.sampled_from(["layer", "channel"])),
                       input_shape=(3, 12, 12), **NORM)
    qann.calibrate(images(16, seed=1, size=12), progress=False)
    _assert_exact(qann.to_snn(), images(8, seed=2, size=12))


# ----------------------------------------------------------------------------- refusals, metadata, files


def _small_snn(T=4, **kw):
    torch.manual_seed(0)
    qann = rs.quantize(randomize_bn(MODELS["residual"]()), T, input_shape=(3, 16, 16), **NORM, **kw)
    qann.calibrate(images(16, seed=1), progress=False)
    return qann.to_snn()


def test_the_kept_session_follows_the_snn(monkeypatch):
    """The onnxruntime session is built once per SNN and kept beside it (the SNN's attributes stay its
    fields); an in-place change of a weight or bias rebuilds it, and the logits stay the integer engine's."""
    from radixsnn.core import onnx_export

    snn, x = _small_snn(), images(8, seed=4)
    built = []
    monkeypatch.setattr(onnx_export, "to_onnx", lambda s, real=onnx_export.to_onnx, **kw: built.append(1) or real(s, **kw))
    first = rs.run(snn, x, engine="onnx").logits
    assert torch.equal(rs.run(snn, x, engine="onnx").logits, first) and len(built) == 1
    assert set(vars(snn)) == {f.name for f in dataclasses.fields(snn)}
    assert rs.IntegerSNN(**vars(snn)).equals(snn)
    layer = snn.graph.layers[-1]
    snn.biases[layer.name] += 7
    changed = rs.run(snn, x, engine="onnx").logits
    assert len(built) == 2 and torch.equal(changed, run_integer(snn, x).logits) and not torch.equal(changed, first)


def test_what_onnx_cannot_hold_is_refused_naming_the_layer(tmp_path):
    snn = _small_snn(T=9)
    with pytest.raises(ConversionError, match=r"layer \S+: its 9-step trains do not fit"):
        to_onnx(snn)
    snn.save(tmp_path / "t9.snn")
    out = subprocess.run([sys.executable, "-m", "radixsnn", "export", str(tmp_path / "t9.snn"), "--out",
                          str(tmp_path / "t9.onnx")], capture_output=True, text=True)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "9-step trains" in out.stderr
    assert not (tmp_path / "t9.onnx").exists()


@pytest.mark.parametrize("case", ["corrupt file", "out is a folder", "negative check images", "unknown int8 weights"])
def test_export_refuses_bad_input_in_one_line(tmp_path, case):
    snn_file, out = tmp_path / "net.snn", tmp_path / "net.onnx"
    _small_snn().save(snn_file)
    extra = []
    if case == "corrupt file":
        data = bytearray(snn_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        snn_file.write_bytes(bytes(data))
    elif case == "out is a folder":
        out.mkdir()
    elif case == "negative check images":
        extra = ["--check-images", "-1"]
    else:
        extra = ["--int8-weights", "fast"]
    proc = subprocess.run([sys.executable, "-m", "radixsnn", "export", str(snn_file), "--out", str(out), *extra],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and (out.is_dir() or not out.exists())


def test_missing_extra_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match=re.escape("pip install 'radixsnn[onnx]'")):
        rs.run(_small_snn(), images(2), engine="onnx")


def test_export_file_metadata_and_readme_script(tmp_path):
    snn = _small_snn()
    snn.save(tmp_path / "net.snn")
    assert main(["export", str(tmp_path / "net.snn"), "--out", str(tmp_path / "net.onnx")]) == 0
    model = onnx.load(tmp_path / "net.onnx")
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    with safe_open(str(tmp_path / "net.snn"), "pt") as f:
        header = json.loads(f.metadata()["radixsnn"])
    assert meta["radixsnn.snn_digest"] == header["digest"] == snn.digest()
    assert meta["radixsnn.version"] == rs.__version__
    # the README's deployment script, with torch and radixsnn out of reach
    script = re.search(r"<!-- deploy-script -->\s*```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    x = images(4)
    np.save(tmp_path / "images.npy", x.numpy())
    blocked = "import sys\nsys.modules.update(torch=None, radixsnn=None)\n"
    out = subprocess.run([sys.executable, "-c", blocked + script, str(tmp_path / "net.onnx"), str(tmp_path / "images.npy")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(int(c)) for c in run_integer(snn, x).logits.argmax(1)]
    assert len(script.strip().splitlines()) <= 10
    assert json.loads(meta["radixsnn.logit_scale"]) == snn.scales[snn.graph.output.name].reshape(-1).tolist()
    assert meta["radixsnn.int8_weights"] == "portable"


def test_int8_weights_everywhere_only_where_this_machine_adds_products_in_int32(tmp_path, monkeypatch):
    """``--int8-weights all`` writes int8 weights into every QLinearConv (and says so in the metadata) where
    :func:`pairs_exact`, and is refused in one line before anything is written where it is not."""
    from radixsnn.core import onnx_export

    snn = _small_snn(T=8)
    snn.save(tmp_path / "net.snn")
    assert {low.weights for low in plan(snn)} >= {"uint8"}
    assert {low.weights for low in plan(snn, int8_weights="all") if low.lowering != "integer"} == {"int8"}
    args = ["export", str(tmp_path / "net.snn"), "--out", str(tmp_path / "net.onnx"), "--int8-weights", "all"]
    if pairs_exact():
        assert main(args) == 0
        meta = {p.key: p.value for p in onnx.load(tmp_path / "net.onnx").metadata_props}
        assert meta["radixsnn.int8_weights"] == "all"
    monkeypatch.setattr(onnx_export, "pairs_exact", lambda: False)
    with pytest.raises(ConfigError, match="int8_weights.*'all' needs int8 kernels"):
        onnx_export.export_onnx(snn, tmp_path / "other.onnx", int8_weights="all")
    with pytest.raises(ConfigError, match="int8_weights"):
        plan(snn, int8_weights="fast")
    assert not (tmp_path / "other.onnx").exists()


@pytest.mark.cifar
def test_evaluate_with_the_onnx_engine(tmp_path, cifar10_dir, capsys):
    torch.manual_seed(0)
    snn = rs.convert(randomize_bn(rs.create_model("resnet20")), load_cifar("cifar10", cifar10_dir, train=True)[0][:64],
                     time_steps=4, progress=False)
    snn.save(tmp_path / "net.snn")
    assert main(["evaluate", str(tmp_path / "net.snn"), "--engine", "onnx", "--limit", "100", "--data-dir",
                 str(cifar10_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"engine\s+onnx", out) and re.search(r"SNN == QANN \(exact\)\s+100.00 %", out)
