"""Fig. 4 sweep: efficiency model, exact SNN/QANN agreement at every point, short fine-tuning, the command."""
from __future__ import annotations

import argparse
import json

import pytest
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
    sweep_cmd.register(parser.add_subparsers())
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
