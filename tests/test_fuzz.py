"""Fuzzing the file readers: a mutated ``.snn`` file or CIFAR batch is either refused with the library's
error or read as something valid -- never a crash, never a silently different network.

* raw ``.snn`` mutations (bytes flipped, inserted, cut off): refused (``SNNFileError``), or loaded as
  exactly the original network (the digest covers header and tensors, so only bytes that carry no
  content -- e.g. JSON whitespace padding -- can change);
* "re-signed" mutations, as an attacker who recomputes the digest would make them (header fields and
  the tensor set changed): refused, or a structurally valid SNN on which both engines run and agree;
* CIFAR batch files (bytes flipped; the structure replaced by other types, shapes, label values):
  refused (``DataError``), or images of the CIFAR layout with labels in range.

The examples are derandomized, so the counts printed at the end (``pytest tests/test_fuzz.py -s``) are
the same on every run; docs/notebook.md records them.
"""
from __future__ import annotations

import collections
import json
import pickle
import struct

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

import radixsnn as rs
from radixsnn.core.engines import run_integer, run_spikes
from radixsnn.core.snn import digest
from radixsnn.data import load_cifar
from radixsnn.errors import DataError, SNNFileError

COUNTS: collections.Counter = collections.Counter()
FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    for kind in sorted({k for k, _ in COUNTS}):
        tried = COUNTS[(kind, "rejected")] + COUNTS[(kind, "accepted")]
        print(f"\nfuzz {kind}: {tried} cases, {COUNTS[(kind, 'rejected')]} rejected, {COUNTS[(kind, 'accepted')]} accepted")


IMAGES = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def snn_file(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)).eval()
    snn = rs.convert(model, IMAGES, 3, input_shape=(3, 8, 8), mean=(0.5,) * 3, std=(0.25,) * 3, progress=False,
                     metadata={"model": "fuzz"})
    path = tmp_path_factory.mktemp("snn") / "net.snn"
    snn.save(path)
    return path, path.read_bytes(), run_integer(snn, IMAGES).logits


def _load(tmp_path, data: bytes):
    path = tmp_path / "m.snn"
    path.write_bytes(data)
    return rs.load(path)


@FUZZ
@given(data=st.data())
def test_raw_mutations_are_refused_or_change_nothing(snn_file, tmp_path, data):
    _, original, logits = snn_file
    blob = bytearray(original)
    kind = data.draw(st.sampled_from(["flip", "set", "insert", "truncate"]))
    where = data.draw(st.integers(0, len(blob) - 1))
    if kind == "flip":
        blob[where] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "set":
        blob[where] = data.draw(st.integers(0, 255))
    elif kind == "insert":
        blob[where:where] = data.draw(st.binary(min_size=1, max_size=8))
    else:
        del blob[where:]
    try:
        loaded = _load(tmp_path, bytes(blob))
    except SNNFileError:
        COUNTS[("snn raw", "rejected")] += 1
        return
    COUNTS[("snn raw", "accepted")] += 1
    assert loaded.equals(_load(tmp_path, original))
    assert torch.equal(run_integer(loaded, IMAGES).logits, logits)


def _parts(original: bytes):
    n = struct.unpack("<Q", original[:8])[0]
    header = json.loads(json.loads(original[8:8 + n])["__metadata__"]["radixsnn"])
    return header


def _signed(tmp_path, header: dict, tensors: dict) -> bytes:
    header = {k: v for k, v in header.items() if k != "digest"}
    header["digest"] = digest(header, tensors)
    path = tmp_path / "signed.snn"
    save_file(tensors, str(path), metadata={"radixsnn": json.dumps(header)})
    return path.read_bytes()


_VALUES = st.one_of(st.integers(-3, 40), st.just(1 << 40), st.floats(allow_nan=True), st.text(max_size=3), st.none(),
                    st.booleans(), st.lists(st.integers(-2, 70), max_size=4), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))


def _mutate_json(draw, obj, depth=0):
    """Replace one value somewhere inside ``obj`` (a JSON tree), add a key, or drop one."""
    if isinstance(obj, dict) and obj and depth < 6:
        key = draw(st.sampled_from(sorted(obj)))
        action = draw(st.sampled_from(["descend", "descend", "replace", "drop", "add"]))
        if action == "descend":
            return {**obj, key: _mutate_json(draw, obj[key], depth + 1)}
        if action == "replace":
            return {**obj, key: draw(_VALUES)}
        if action == "drop":
            return {k: v for k, v in obj.items() if k != key}
        return {**obj, draw(st.text(min_size=1, max_size=4)): draw(_VALUES)}
    if isinstance(obj, list) and obj and depth < 6:
        i = draw(st.integers(0, len(obj) - 1))
        if draw(st.booleans()):
            return obj[:i] + [_mutate_json(draw, obj[i], depth + 1)] + obj[i + 1:]
        return obj[:i] + obj[i + 1:]
    return draw(_VALUES)


def _engines_agree(snn) -> None:
    a, b = run_integer(snn, IMAGES).logits, run_spikes(snn, IMAGES).logits
    assert torch.equal(a, b)


@FUZZ
@given(data=st.data())
def test_resigned_header_mutations_are_refused_or_valid(snn_file, tmp_path, data):
    path, original, _ = snn_file
    header = _parts(original)
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    fields = {k: v for k, v in header.items() if k != "digest"}
    mutated = _mutate_json(data.draw, fields)
    try:
        loaded = _load(tmp_path, _signed(tmp_path, mutated, tensors))
    except SNNFileError:
        COUNTS[("snn header, re-signed", "rejected")] += 1
        return
    COUNTS[("snn header, re-signed", "accepted")] += 1
    _engines_agree(loaded)


@FUZZ
@given(data=st.data())
def test_resigned_tensor_mutations_are_refused_or_valid(snn_file, tmp_path, data):
    path, original, _ = snn_file
    header = _parts(original)
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    name = data.draw(st.sampled_from(sorted(tensors)))
    action = data.draw(st.sampled_from(["drop", "dtype", "shape", "values", "extra"]))
    t = tensors[name]
    if action == "drop":
        tensors.pop(name)
    elif action == "dtype":
        tensors[name] = t.to(data.draw(st.sampled_from([torch.int8, torch.int16, torch.int32, torch.int64, torch.float32, torch.float64])))
    elif action == "shape":
        tensors[name] = t.reshape(-1)[: max(1, t.numel() - 1)].clone()
    elif action == "values":
        flat = t.reshape(-1).clone()
        i = data.draw(st.integers(0, flat.numel() - 1))
        big = data.draw(st.sampled_from([127, -128, 1 << 20, -(1 << 40), 1 << 62]))
        if t.dtype.is_floating_point:
            flat[i] = float("nan") if data.draw(st.booleans()) else float(big)
        else:
            info = torch.iinfo(t.dtype)
            flat[i] = min(max(big, info.min), info.max)
        tensors[name] = flat.reshape(t.shape)
    else:
        tensors[name + "x"] = t.clone()
    try:
        loaded = _load(tmp_path, _signed(tmp_path, header, tensors))
    except SNNFileError:
        COUNTS[("snn tensors, re-signed", "rejected")] += 1
        return
    COUNTS[("snn tensors, re-signed", "accepted")] += 1
    _engines_agree(loaded)


# --------------------------------------------------------------------------- CIFAR batches
def _write_cifar(folder, batch_bytes: bytes):
    d = folder / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    (d / "test_batch").write_bytes(batch_bytes)
    return folder


def _valid_batch(n=4):
    rng = np.random.default_rng(0)
    return {"batch_label": "testing batch 1 of 1", "labels": [int(v) for v in rng.integers(0, 10, n)],
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [f"{i}.png" for i in range(n)]}


def _check_loaded(folder, kind):
    try:
        images, labels = load_cifar("cifar10", folder, train=False)
    except DataError:
        COUNTS[(kind, "rejected")] += 1
        return
    COUNTS[(kind, "accepted")] += 1
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32) and len(images) == len(labels)
    assert labels.dtype == torch.int64 and int(labels.min()) >= 0 and int(labels.max()) <= 9


@FUZZ
@given(where=st.integers(0, 10_000), value=st.integers(0, 255))
def test_cifar_batch_byte_mutations(tmp_path, where, value):
    blob = bytearray(pickle.dumps(_valid_batch(), protocol=2))
    blob[where % len(blob)] = value
    _check_loaded(_write_cifar(tmp_path, bytes(blob)), "cifar batch bytes")


_SHAPES = st.sampled_from([(4, 3072), (4, 3071), (3072,), (0, 3072), (4, 3, 32, 32)])


@FUZZ
@given(data=st.data())
def test_cifar_batch_structure_mutations(tmp_path, data):
    batch = _valid_batch()
    key = data.draw(st.sampled_from(["data", "labels", "whole"]))
    if key == "data":
        choice = data.draw(st.sampled_from(["dtype", "shape", "list", "shared"]))
        if choice == "dtype":
            batch["data"] = batch["data"].astype(data.draw(st.sampled_from([np.int16, np.float32, np.int64, object])))
        elif choice == "shape":
            batch["data"] = np.zeros(data.draw(_SHAPES), dtype=np.uint8)
        elif choice == "list":
            batch["data"] = [row for row in batch["data"]]
        else:  # one row shared a thousand times: tiny pickle, large array if built
            batch["data"] = [batch["data"][0]] * 1000
    elif key == "labels":
        batch["labels"] = data.draw(st.one_of(
            st.lists(st.integers(-5, 20), min_size=0, max_size=6), st.just("abcd"), st.just([1.5, 2, 3, 4]),
            st.just(np.array([[1, 2], [3, 4]])), st.just([True, False, True, False])))
    else:
        batch = data.draw(st.sampled_from([[1, 2], "text", {"data": None}, None]))
    _check_loaded(_write_cifar(tmp_path, pickle.dumps(batch, protocol=2)), "cifar batch structure")
