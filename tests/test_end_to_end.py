"""Real CIFAR-10 images through the pretrained ResNet-20: the spike engine, the integer engine and the
QANN agree bit for bit, and post-training accuracy stays close to the float model's."""
import json
import subprocess
import sys

import pytest
import torch

from radixsnn import quantize
from radixsnn.data import load_cifar
from radixsnn import evaluate
from radixsnn.core.inputs import normalize
from radixsnn.models import create_model
from radixsnn.models import IMAGENET_MEAN, IMAGENET_STD

IMAGES = 2000


@pytest.fixture(scope="module")
def resnet20(resnet20_weights):
    return create_model("resnet20", weights=resnet20_weights)


@pytest.fixture(scope="module")
def cifar(cifar10_dir):
    train, _ = load_cifar("cifar10", cifar10_dir, train=True)
    test, labels = load_cifar("cifar10", cifar10_dir, train=False)
    calib = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:512]]
    return calib, test[:IMAGES], labels[:IMAGES]


@pytest.mark.slow
def test_resnet20_spikes_integer_and_qann_agree_exactly(resnet20, cifar):
    calib, images, labels = cifar
    qann = quantize(resnet20, 4)
    qann.calibrate(calib, progress=False)
    snn = qann.to_snn()
    spikes = evaluate(snn, images, labels, "spikes", qann=qann, float_model=resnet20, progress=False)
    integer = evaluate(snn, images, labels, "integer", qann=qann, progress=False)
    assert spikes["images"] == IMAGES
    assert spikes["agreement"] == 1.0 and integer["agreement"] == 1.0
    assert spikes["accuracy"] == integer["accuracy"] == spikes["qann_accuracy"]
    assert spikes["fp_accuracy"] > 0.9
    assert spikes["accuracy"] > spikes["fp_accuracy"] - 0.015  # post-training T = 4
    assert spikes["spikes_per_image"] > 0
    # Eq. 24 over the SNN's synapses: 4 x the 40,551,040 MACs, plus the 8-step pixel trains of conv1
    # (4 x 442,368), the shortcut synapses (4 x 79,872) and the average pool folded into the readout (161,280)
    assert spikes["ops_graph"] == 164_454_400 == 4 * 40_551_040 + 4 * 442_368 + 4 * 79_872 + 161_280
    # float-mode graph equals the float model on real images
    with torch.no_grad():
        assert torch.allclose(qann.float_forward(images[:100]), resnet20(normalize(images[:100], IMAGENET_MEAN, IMAGENET_STD)), atol=1e-4)


@pytest.mark.slow
def test_convert_and_evaluate_commands(tmp_path, resnet20_weights, cifar10_dir):
    out = tmp_path / "r20.snn"
    proc = subprocess.run([sys.executable, "-m", "radixsnn", "convert", "--model", "resnet20", "--weights",
                           str(resnet20_weights), "-T", "3", "--data-dir", str(cifar10_dir), "--calib-images", "256",
                           "--out", str(out), "--no-progress"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "%|" not in proc.stderr  # no progress bar
    js = tmp_path / "o.json"
    proc = subprocess.run([sys.executable, "-m", "radixsnn", "evaluate", str(out), "--data-dir", str(cifar10_dir),
                           "--limit", "200", "--json", str(js)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "%|" in proc.stderr  # progress bars by default
    res = json.loads(js.read_text())
    for key in ("accuracy", "qann_accuracy", "fp_accuracy", "agreement", "images", "time_steps", "weight_bits",
                "engine", "spikes", "ops_graph", "sops_per_image", "seconds"):
        assert key in res
    assert res["agreement"] == 1.0 and res["images"] == 200 and res["time_steps"] == 3 and res["engine"] == "spikes"
    assert res["fp_accuracy"] is not None and res["spikes"] > 0 and 0 < res["sops_per_image"] < res["ops_graph"]
    # `radixsnn ops` prints the same graph-exact count for the same network, beside the table rule.
    ops_json = tmp_path / "ops.json"
    proc = subprocess.run([sys.executable, "-m", "radixsnn", "ops", "--model", "resnet20", "-T", "3", "--summary",
                           "--json", str(ops_json)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ops = json.loads(ops_json.read_text())
    assert ops["ops_graph"] == res["ops_graph"]
    assert ops["ops_table"] == 3 * ops["macs"] == 3 * 40_551_040 < ops["ops_graph"]
