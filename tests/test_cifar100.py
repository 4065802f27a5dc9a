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
