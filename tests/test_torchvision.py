"""torchvision's classification models at 224x224: converted from ``torchvision.models:NAME`` targets with
torchvision's own preprocessing, exact on both engines, and the models a radix neuron cannot compute
refused in one line naming the operation.

torchvision is built against one torch release, so these tests run in their own environment:
``make test-vision`` (.venv-vision, pyproject.toml's vision extra). Models are random-init with
BatchNorm statistics measured on real CIFAR-10 images resized to 256 pixels and centre-cropped to 224.
"""
from __future__ import annotations

import json

import pytest
import torch

torchvision = pytest.importorskip("torchvision", reason="torchvision is not installed here: `make test-vision` runs "
                                                        "these tests in .venv-vision, with torchvision's own torch")

import radixsnn as rs  # noqa: E402
from radixsnn.cli import main  # noqa: E402
from radixsnn.data import Preprocess, load_cifar  # noqa: E402
from radixsnn.data.folder import write_image_folder  # noqa: E402
from radixsnn.models import IMAGENET_MEAN, IMAGENET_STD, load_model  # noqa: E402

#: The architectures the issue names: residual (basic and bottleneck), wide, grouped, VGG with BN, RegNet,
#: DenseNet (concatenation, pre-activation BN), SqueezeNet (ceil-mode pooling, ReLU + pool readout),
#: MobileNetV2 (ReLU6, linear bottlenecks).
MODELS = ["resnet18", "resnet34", "resnet50", "wide_resnet50_2", "resnext50_32x4d", "vgg11_bn", "vgg16_bn",
          "regnet_x_400mf", "densenet121", "squeezenet1_1", "mobilenet_v2"]


@pytest.fixture(scope="module")
def images_224(cifar10_dir):
    """Twelve CIFAR-10 test images brought to 224x224 by torchvision's preprocessing (resize 256, centre crop)."""
    from PIL import Image

    x, _ = load_cifar("cifar10", cifar10_dir, train=False)
    prep = Preprocess((3, 224, 224), crop_pct=0.875)
    return torch.stack([prep(Image.fromarray(img.permute(1, 2, 0).numpy())) for img in x[:12]])


def realistic(model: torch.nn.Module, images: torch.Tensor) -> torch.nn.Module:
    """``model`` with every BatchNorm's running statistics measured on ``images`` (a cumulative average)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(rs.core.inputs.normalize(images, IMAGENET_MEAN, IMAGENET_STD))
    return model.eval()


@pytest.mark.parametrize("name", MODELS)
def test_torchvision_model_converts_exactly_at_224(name, images_224, one_thread):
    torch.manual_seed(0)
    model = realistic(load_model(f"torchvision.models:{name}", model_args={"num_classes": 10}), images_224[:8])
    snn = rs.convert(model, images_224[:4], time_steps=4, progress=False)  # torchvision's config: no mean/std given
    assert snn.graph.input.shape == [3, 224, 224]
    qann = rs.QANN.from_snn(snn)
    labels = torch.zeros(2, dtype=torch.int64)
    for engine in ("integer", "spikes"):
        assert rs.evaluate(snn, images_224[8:10], labels, engine, qann=qann, progress=False)["agreement"] == 1.0


@pytest.mark.parametrize("name, op", [("efficientnet_b0", "SiLU"), ("convnext_tiny", "layer_norm"),
                                      ("mobilenet_v3_small", "Hardswish"), ("vit_b_16", "LayerNorm"),
                                      ("regnet_y_400mf", "Sigmoid")])
def test_what_a_radix_neuron_cannot_compute_is_refused_naming_the_op(name, op):
    model = load_model(f"torchvision.models:{name}", model_args={"num_classes": 10})
    with pytest.raises(rs.ConversionError) as err:
        rs.quantize(model, 4)
    assert f"unsupported operation {op}" in str(err.value) and "\n" not in str(err.value)


def test_command_line_target_with_a_saved_state_dict_and_a_folder(tmp_path, cifar10_dir, images_224, one_thread):
    """`--model torchvision.models:resnet18 --weights FILE.pth`: torchvision's preprocessing by default
    (crop 0.875 of 256 pixels), no --mean/--std, weights from a local state-dict file; exact on a folder."""
    torch.manual_seed(0)
    model = realistic(torchvision.models.resnet18(num_classes=10), images_224)
    weights = tmp_path / "resnet18-cifar.pth"
    torch.save(model.state_dict(), weights)
    classes = [f"c{c}" for c in range(10)]
    for split, train in (("val", False), ("train", True)):
        x, y = load_cifar("cifar10", cifar10_dir, train=train)
        pick = torch.cat([torch.nonzero(y == c)[:1, 0] for c in range(10)])  # one image of every class
        write_image_folder(x[pick], y[pick], tmp_path / "data" / split, classes, size=64)
    snn_file = tmp_path / "r18.snn"
    assert main(["convert", "--model", "torchvision.models:resnet18", "--model-args", '{"num_classes": 10}', "--weights",
                 str(weights), "--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--time-steps", "4",
                 "--calib-images", "8", "--workers", "1", "--out", str(snn_file), "--no-progress"]) == 0
    snn = rs.IntegerSNN.load(snn_file)
    assert snn.metadata["preprocess"] == {"input_shape": [3, 224, 224], "crop_pct": 0.875, "interpolation": "bilinear"}
    assert snn.graph.input.attrs["mean"] == pytest.approx(list(IMAGENET_MEAN))
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(snn_file), "--engine", "integer", "--no-float", "--data-dir", str(tmp_path / "data"),
                 "--json", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["agreement"] == 1.0


def test_ops_counts_a_torchvision_model_at_224(tmp_path):
    out = tmp_path / "ops.json"
    assert main(["ops", "--model", "torchvision.models:resnet50", "-T", "8", "--summary", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["input_shape"] == [3, 224, 224] and data["num_classes"] == 1000
    assert data["macs"] == 4_089_184_256 and data["ops_table"] == 8 * data["macs"]  # torchvision's 4.09 GFLOPS (MACs)
