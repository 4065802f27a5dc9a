"""Fig. 4 sweep: efficiency model, exact SNN/QANN agreement at every point, short fine-tuning, the command."""
from __future__ import annotations

import argparse
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
import torch.nn as nn
import torch.nn.functional as F

from radixsnn.cli.options import int_list
from radixsnn import quantize
from radixsnn.errors import RadixSNNError
from radixsnn.data.loader import DeviceLoader
from radixsnn.experiments.sweep import add_efficiency, sweep
from radixsnn.training import TrainConfig, finetune
from radixsnn.models import IMAGENET_MEAN, IMAGENET_STD

NORM = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}  # the input normalization of these test models


class Small(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, classes)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    labels = (images.float().mean((2, 3)).argmax(1)).long()  # the brightest channel: learnable
    return images, labels


def test_efficiency_is_inverse_ops_times_bits():
    rows = [{"ops_graph": 100 * t, "weight_bits": b} for b in (8, 3) for t in (2, 4, 8)]
    add_efficiency(rows)
    best = min(rows, key=lambda r: r["cost"])
    assert best["efficiency"] == 1.0 and best["weight_bits"] == 3 and best["ops_graph"] == 200
    by = {(r["weight_bits"], r["ops_graph"]): r["efficiency"] for r in rows}
    for ops in (200, 400, 800):
        assert by[(8, ops)] / by[(3, ops)] == pytest.approx(3 / 8)  # 8-bit: 62.5 % less efficient
    assert by[(3, 800)] == pytest.approx(by[(3, 200)] / 4)


def test_sweep_points_agree_exactly_with_their_qann():
    torch.manual_seed(0)
    model = Small().eval()
    images, labels = _data(40)
    rows = sweep(model, images, labels, images[:20], [2, 5], [8, 3], progress=False, **NORM)
    assert [(r["weight_bits"], r["time_steps"], r["mode"]) for r in rows] == [
        (8, 2, "post-training"), (8, 5, "post-training"), (3, 2, "post-training"), (3, 5, "post-training")]
    for r in rows:
        assert r["agreement"] == 1.0
        assert r["accuracy"] == r["qann_accuracy"]
    ops = {(r["weight_bits"], r["time_steps"]): r["ops_graph"] for r in rows}
    assert ops[(8, 2)] == ops[(3, 2)] < ops[(8, 5)]


def test_short_finetuning_lowers_the_loss_and_adds_rows():
    torch.manual_seed(0)
    model = Small().eval()
    images, labels = _data(256, seed=1)
    qann = quantize(model, 3, weight_bits=4, input_shape=(3, 8, 8), **NORM)
    qann.calibrate(images[:64], progress=False)
    loader = DeviceLoader(images, labels, 32, train=True, augment=None)  # 8 batches per epoch
    config = TrainConfig(epochs=1, batch_size=32, lr=0.05, weight_decay=0.0, schedule="constant", clip_grad=1.0,
                         max_steps=120)
    trainer = finetune(qann, loader, config, progress=False, progress_lines=False)
    assert trainer.steps_done == 120 and len(trainer.history) == 15
    assert trainer.history[-1]["train_loss"] < trainer.history[0]["train_loss"]
    rows = sweep(model, images[:32], labels[:32], images[:32], [3], [4], finetune_steps=5, train_images=images, **NORM,
                 train_labels=labels, progress=False)
    assert [r["mode"] for r in rows] == ["post-training", "fine-tuned"]
    assert rows[1]["finetune_steps"] == 5 and rows[1]["agreement"] == 1.0


def test_bad_sweep_arguments():
    model = Small().eval()
    images, labels = _data(4)
    with pytest.raises(RadixSNNError):
        sweep(model, images, labels, images, [0], [8], progress=False, **NORM)
    with pytest.raises(RadixSNNError):
        sweep(model, images, labels, images, [4], [1], progress=False, **NORM)
    with pytest.raises(RadixSNNError):
        sweep(model, images, labels, images, [4], [8], finetune_steps=3, progress=False, **NORM)


def test_step_lists():
    assert int_list("2..5,8") == [2, 3, 4, 5, 8]
    assert int_list("8,3") == [3, 8]
    with pytest.raises(argparse.ArgumentTypeError):
        int_list("5..2")
    with pytest.raises(argparse.ArgumentTypeError):
        int_list("a")


@pytest.mark.cifar
@pytest.mark.pretrained
def test_sweep_command_on_resnet20(tmp_path, cifar10_dir, resnet20_weights):
    from radixsnn.cli import sweep as sweep_cmd

    parser = argparse.ArgumentParser()
    sweep_cmd.register(parser.add_subparsers(dest="command"))  # as the radixsnn command names it
    args = parser.parse_args(["sweep", "--model", "resnet20", "--weights", str(resnet20_weights), "--data-dir",
                              str(cifar10_dir), "--images", "100", "--calib-images", "128", "--time-steps", "2,6",
                              "--weight-bits", "8,3", "--out", str(tmp_path)])
    assert args.func(args) == 0
    rows = json.loads((tmp_path / "sweep.json").read_text())["rows"]
    acc = {(r["weight_bits"], r["time_steps"]): r["accuracy"] for r in rows}
    assert all(r["agreement"] == 1.0 for r in rows)
    assert acc[(8, 6)] >= 0.8 and acc[(8, 6)] > acc[(8, 2)]
    eff = {(r["weight_bits"], r["time_steps"]): r["efficiency"] for r in rows}
    assert eff[(8, 6)] / eff[(3, 6)] == pytest.approx(3 / 8)
    assert (tmp_path / "sweep.png").stat().st_size > 0
    assert len((tmp_path / "sweep.csv").read_text().splitlines()) == 5
    # --from: the 8-bit points at T = 2 and 6 come from the first sweep, T = 4 is computed
    common = ["sweep", "--model", "resnet20", "--weights", str(resnet20_weights), "--data-dir", str(cifar10_dir),
              "--images", "100", "--time-steps", "2,4,6", "--weight-bits", "8", "--from", str(tmp_path / "sweep.json"),
              "--no-plot"]
    args = parser.parse_args([*common, "--calib-images", "128", "--out", str(tmp_path / "again")])
    assert args.func(args) == 0
    again = json.loads((tmp_path / "again" / "sweep.json").read_text())
    assert again["config"]["from"] == str(tmp_path / "sweep.json")
    source = {r["time_steps"]: r.get("source") for r in again["rows"]}
    assert source == {2: str(tmp_path / "sweep.json"), 4: None, 6: str(tmp_path / "sweep.json")}
    assert {r["time_steps"]: r["accuracy"] for r in again["rows"] if r["time_steps"] != 4} == {2: acc[(8, 2)], 6: acc[(8, 6)]}
    args = parser.parse_args([*common, "--calib-images", "64", "--out", str(tmp_path / "other")])
    with pytest.raises(RadixSNNError, match="its calib_images is 128, this sweep's is 64"):
        args.func(args)
    assert not (tmp_path / "other" / "sweep.json").exists()


def test_results_from_files_join_the_sweep(tmp_path):
    """Fine-tuned and per-layer-T evaluations join the sweep's rows and figure; a per-layer SNN sits at the
    uniform T of equal operations; files that break exactness or belong elsewhere are refused."""
    from radixsnn import evaluate
    from radixsnn.errors import DataError
    from radixsnn.experiments.plotting import plot_sweep
    from radixsnn.experiments.sweep import add_results, rows_from_results

    torch.manual_seed(0)
    model = Small().eval()
    images, labels = _data(40)
    rows = sweep(model, images, labels, images[:20], [2, 5], [8, 3], progress=False, **NORM)
    neuron = next(n.name for n in quantize(model, 2, input_shape=(3, 8, 8), **NORM).graph.nodes if n.kind == "neuron")
    qann = quantize(model, {"default": 2, neuron: 4}, input_shape=(3, 8, 8), **NORM)
    qann.calibrate(images[:20], progress=False)
    result = evaluate(qann.to_snn(), images, labels, progress=False)
    per_layer = json.loads(json.dumps(result, default=str))  # what `radixsnn evaluate --json` writes
    files = {}
    for name, data in (("per_layer", per_layer), ("finetuned", {**per_layer, "layer_time_steps": {}, "run_epochs": 2}),
                       ("inexact", {**per_layer, "agreement": 0.99}), ("not_eval", {"accuracy": 0.5}),
                       ("other", {**per_layer, "model": "vgg16"})):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(data))
    extra = rows_from_results([files["per_layer"], files["finetuned"]])
    assert [r["mode"] for r in extra] == ["per-layer T", "fine-tuned"] and extra[1]["epochs"] == 2
    both = add_results(rows, extra)
    assert len(both) == len(rows) + 2
    assert both[-2]["equivalent_time_steps"] == pytest.approx(4.0)  # every neuron at 4: the ops of uniform T = 4
    assert min(r["efficiency"] for r in both) > 0 and max(r["efficiency"] for r in both) == 1.0
    plot_sweep(both, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 0
    for name, words in (("inexact", "99.00 % of the images"), ("not_eval", "not an SNN evaluation"), ("other", "model")):
        with pytest.raises(DataError, match=words):
            rows_from_results([files[name]], model=result["model"] or "small")


SETTINGS = {"command": "sweep", "model": "small", "model_args": None, "mean": list(NORM["mean"]), "std": list(NORM["std"]),
            "input_shape": None, "weights": "w.pt", "weights_sha256": "ab" * 32, "dataset": "cifar10", "images": 40,
            "calib": "mse", "calib_images": 20, "act_scale": "auto", "shift": "channel", "weight_grid": "mse",
            "gains": "delayed", "seed": 0, "finetune_steps": 0, "finetune_epochs": None, "finetune_batch": 64,
            "lr": 0.001, "train_images": 10000}


def _sweep_file(tmp_path, rows, name="sweep.json", **config):
    path = tmp_path / name
    path.write_text(json.dumps({"config": {**SETTINGS, **config}, "images": 40, "finetune_steps": 0, "rows": rows}))
    return path


def test_an_earlier_sweep_supplies_its_points(tmp_path, monkeypatch):
    """--from: the points an earlier sweep with the same settings computed are copied, not computed again;
    only the missing ones are converted; the order is the sweep's."""
    from radixsnn.experiments import sweep as sweep_module
    from radixsnn.experiments.sweep import reusable_rows

    torch.manual_seed(0)
    model = Small().eval()
    images, labels = _data(40)
    first = sweep(model, images, labels, images[:20], [2, 5], [8], progress=False, **NORM)
    path = _sweep_file(tmp_path, first)
    reuse = reusable_rows(path, SETTINGS)
    assert [r["source"] for r in reuse] == [str(path)] * 2
    calls = []
    real = sweep_module.quantize
    monkeypatch.setattr(sweep_module, "quantize", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    rows = sweep(model, images, labels, images[:20], [2, 3, 5], [8], reuse=reuse, progress=False, **NORM)
    assert calls == [3]  # only the missing point is converted
    assert [r["time_steps"] for r in rows] == [2, 3, 5] and [r.get("source") for r in rows] == [str(path), None, str(path)]
    fresh = sweep(model, images, labels, images[:20], [3], [8], progress=False, **NORM)[0]
    assert rows[1]["accuracy"] == fresh["accuracy"] and rows[1]["ops_graph"] == fresh["ops_graph"]
    for old, new in ((first[0], rows[0]), (first[1], rows[2])):
        assert {k: new[k] for k in ("accuracy", "qann_accuracy", "agreement", "ops_graph", "seconds")} == \
               {k: old[k] for k in ("accuracy", "qann_accuracy", "agreement", "ops_graph", "seconds")}
    # a sweep that fine-tunes computes its points again unless the earlier one fine-tuned the same way
    assert [r["mode"] for r in reusable_rows(_sweep_file(tmp_path, first + [{**first[0], "mode": "fine-tuned", "finetune_steps": 5}],
                                                         "ft.json", finetune_steps=5), {**SETTINGS, "finetune_steps": 5})] == \
           ["post-training", "post-training", "fine-tuned"]
    assert [r["mode"] for r in reusable_rows(_sweep_file(tmp_path, first + [{**first[0], "mode": "fine-tuned", "finetune_steps": 5}],
                                                         "ft.json", finetune_steps=5), {**SETTINGS, "finetune_steps": 9})] == \
           ["post-training", "post-training"]


def test_an_earlier_sweep_is_checked_before_its_rows_are_used(tmp_path):
    from radixsnn.errors import DataError
    from radixsnn.experiments.sweep import ROW_SETTINGS, reusable_rows

    row = {"weight_bits": 8, "time_steps": 4, "mode": "post-training", "finetune_steps": 0, "accuracy": 0.5,
           "qann_accuracy": 0.5, "agreement": 1.0, "ops_graph": 1000, "final_loss": None, "seconds": 1.0}
    assert len(reusable_rows(_sweep_file(tmp_path, [row]), SETTINGS)) == 1
    for key in ROW_SETTINGS:  # every setting a row depends on must match
        changed = {**SETTINGS, key: "something else"}
        with pytest.raises(DataError, match=f"its {key} is"):
            reusable_rows(_sweep_file(tmp_path, [row]), changed)
    old = {k: v for k, v in SETTINGS.items() if k != "weights_sha256"}  # a file from before checksums
    (tmp_path / "old.json").write_text(json.dumps({"config": old, "rows": [row]}))
    with pytest.raises(DataError, match="records no weights_sha256"):
        reusable_rows(tmp_path / "old.json", SETTINGS)
    for bad, words in (({"agreement": 0.99}, "99.00 % of the images"), ({"time_steps": 40}, "time_steps must be"),
                       ({"time_steps": 4.0}, "no integer time_steps"), ({"accuracy": float("nan")}, "accuracy in"),
                       ({"ops_graph": -1}, "ops_graph"), ({"finetune_steps": 3}, "finetune_steps")):
        with pytest.raises(DataError, match=f"row 0 .*{words}"):
            reusable_rows(_sweep_file(tmp_path, [{**row, **bad}]), SETTINGS)
    (tmp_path / "eval.json").write_text(json.dumps({"accuracy": 0.5, "rows": []}))
    with pytest.raises(DataError, match="not a sweep.json"):
        reusable_rows(tmp_path / "eval.json", SETTINGS)
    with pytest.raises(DataError, match="not found"):
        reusable_rows(tmp_path / "missing.json", SETTINGS)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["weight_bits", "time_steps", "mode", "finetune_steps", "accuracy", "qann_accuracy", "agreement",
                        "ops_graph"]),
       st.one_of(st.none(), st.booleans(), st.integers(-5, 10**12), st.floats(allow_nan=True), st.text(max_size=5),
                 st.lists(st.integers(), max_size=2)))
def test_a_tampered_sweep_row_is_refused_or_harmless(tmp_path_factory, key, value):
    """Any value in any field of a row: reusable_rows returns well-formed rows or raises DataError."""
    from radixsnn.errors import DataError
    from radixsnn.experiments.sweep import reusable_rows

    row = {"weight_bits": 8, "time_steps": 4, "mode": "post-training", "finetune_steps": 0, "accuracy": 0.5,
           "qann_accuracy": 0.5, "agreement": 1.0, "ops_graph": 1000}
    path = _sweep_file(tmp_path_factory.mktemp("fuzz"), [{**row, key: value}])
    try:
        rows = reusable_rows(path, SETTINGS)
    except DataError:
        return
    for r in rows:
        assert r["agreement"] == 1.0 and isinstance(r["ops_graph"], int) and r["ops_graph"] > 0
        assert 2 <= r["weight_bits"] <= 16 and 1 <= r["time_steps"] <= 16 and 0 <= r["accuracy"] <= 1
