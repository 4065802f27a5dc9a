"""The public option-B CIFAR ResNets (chenyaofo/pytorch-cifar-models) converted as they are: their
checkpoints load by registry name with their own normalization, the SNN equals its QANN on 1,000 test
images, and at T = 8 it stays within one point of the float network."""
from __future__ import annotations

import pytest
import torch

import radixsnn as rs
from radixsnn.core.inputs import normalize
from radixsnn.data import calibration_images, load_cifar

pytestmark = [pytest.mark.cifar, pytest.mark.pretrained, pytest.mark.slow]

CHECKPOINTS = {
    "cifar10_resnet20": "chenyaofo-cifar10-resnet20-eb80202b.pth",
    "cifar100_resnet20": "chenyaofo-cifar100-resnet20-0d7818eb.pth",
    "cifar100_resnet44": "chenyaofo-cifar100-resnet44-466747de.pth",
    "cifar100_resnet56": "chenyaofo-cifar100-resnet56-f7e590a0.pth",
}


@pytest.fixture(scope="module")
def datasets(cifar10_dir, cifar100_dir):
    return {"cifar10": cifar10_dir, "cifar100": cifar100_dir}


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_option_b_checkpoint_converts_exactly_at_t8(name, models_dir, datasets, one_thread):
    path = models_dir / CHECKPOINTS[name]
    if not path.is_file():
        pytest.fail(f"{path} is missing from the shared models")
    dataset = name.split("_")[0]
    model = rs.create_model(name, weights=path)
    images, labels = load_cifar(dataset, datasets[dataset], train=False)
    images, labels = images[:1000], labels[:1000]
    snn = rs.convert(model, calibration_images(dataset, datasets[dataset], 1024), time_steps=8, progress=False)
    result = rs.evaluate(snn, images, labels, "integer", progress=False)
    config = rs.models.model_config(name)
    with torch.no_grad():
        float_acc = float((model(normalize(images, config.mean, config.std)).argmax(1) == labels).float().mean())
    assert result["agreement"] == 1.0
    assert result["accuracy"] >= float_acc - 0.01, (result["accuracy"], float_acc)
    assert torch.equal(rs.run(snn, images[:16]).logits, rs.run(snn, images[:16], engine="integer").logits)


def test_cifar100_through_train_finetune_sweep_and_report(tmp_path, models_dir, cifar100_dir, one_thread, capsys):
    from radixsnn.cli import main

    d = ["--dataset", "cifar100", "--data-dir", str(cifar100_dir)]
    assert main(["train", "--model", "cifar100_resnet20", *d, "--epochs", "1", "--limit-batches", "2",
                 "--test-subset", "64", "--no-progress", "--out", str(tmp_path / "float")]) == 0
    weights = str(models_dir / CHECKPOINTS["cifar100_resnet20"])
    assert main(["finetune", "--model", "cifar100_resnet20", "--weights", weights, *d, "-T", "4", "--epochs", "1",
                 "--limit-batches", "2", "--train-subset", "256", "--calib-images", "64", "--test-subset", "64",
                 "--eval-images", "64", "--engine", "integer", "--no-progress", "--out", str(tmp_path / "t4")]) == 0
    result = __import__("json").loads((tmp_path / "t4" / "eval.json").read_text())
    assert result["agreement"] == 1.0 and result["dataset"] == "cifar100" and result["images"] == 64
    assert main(["sweep", "--model", "cifar100_resnet20", "--weights", weights, *d, "--images", "64",
                 "--calib-images", "64", "--time-steps", "4", "--weight-bits", "8", "--no-plot",
                 "--out", str(tmp_path / "sweep")]) == 0
    # the Table 3 ResNet-44 row takes results of the public CIFAR-100 checkpoint's model
    (tmp_path / "r44.json").write_text('{"model": "cifar100_resnet44", "dataset": "cifar100", "time_steps": 8, '
                                       '"accuracy": 0.715, "fp_accuracy": 0.7163}')
    capsys.readouterr()
    assert main(["report", str(tmp_path / "r44.json"), str(tmp_path / "t4" / "eval.json")]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.startswith("| Radix Encoding (this work) | ResNet-44"))
    assert "71.5%" in row and "-0.1%" in row
    assert "Results not in any paper row" in text  # cifar100_resnet20 at T = 4 has no paper row


def test_cifar100_recipe_reproduces(tmp_path, cifar100_dir, one_thread):
    """`radixsnn reproduce` runs a CIFAR-100 recipe: float training, then fine-tuning of the radix SNN."""
    from radixsnn.cli import main

    small = f'data_dir = "{cifar100_dir}"\nepochs = 1\nlimit_batches = 2\ntest_subset = 64\nno_progress = true\n'
    (tmp_path / "c100.toml").write_text(
        '[row]\nmodel = "cifar100_resnet20"\ndataset = "cifar100"\ntime_steps = 4\nweight_bits = 8\n'
        f'[train]\n{small}[finetune]\n{small}train_subset = 256\ncalib_images = 64\neval_images = 64\nengine = "integer"\n')
    assert main(["reproduce", str(tmp_path / "c100.toml"), "--out", str(tmp_path / "rep")]) == 0
    result = __import__("json").loads((tmp_path / "rep" / "t4" / "eval.json").read_text())
    assert result["dataset"] == "cifar100" and result["agreement"] == 1.0 and result["images"] == 64
