"""The public API at the package root: the names scripts rely on, their documentation, and their promises."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import radixsnn as rs

API = {
    "create_model", "list_models", "quantize", "QANN", "convert", "load", "IntegerSNN", "run", "EngineResult",
    "evaluate", "data", "RadixSNNError", "ConversionError", "ConfigError", "DataError", "SNNFileError", "__version__",
    "register_rule", "unregister_rule", "export_onnx",
}


def test_all_lists_the_api_and_each_name_is_documented():
    assert set(rs.__all__) == API
    for name in API - {"__version__"}:
        assert getattr(rs, name).__doc__, name
    for method in (rs.QANN.calibrate, rs.QANN.to_snn, rs.QANN.integer_logits, rs.IntegerSNN.save):
        assert method.__doc__
    assert issubclass(rs.ConfigError, ValueError)
    assert all(issubclass(e, rs.RadixSNNError) for e in (rs.ConversionError, rs.ConfigError, rs.DataError, rs.SNNFileError))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 8 * 8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def _images(n=16):
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_convert_never_mutates_the_model():
    torch.manual_seed(0)
    model = Net().train()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
    before = copy.deepcopy(model.state_dict())
    snn = rs.convert(model, _images(), time_steps=3, input_shape=(3, 8, 8), mean=(0.5,) * 3, std=(0.2,) * 3, progress=False)
    assert model.training and model.bn.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(snn, rs.IntegerSNN) and snn.time_steps == 3


def test_a_model_outside_the_registry_needs_its_normalization():
    with pytest.raises(rs.ConfigError, match="^mean is required") as err:
        rs.quantize(Net(), 4, input_shape=(3, 8, 8))
    assert err.value.argument == "mean"
    with pytest.raises(rs.ConfigError, match="^std must be positive"):
        rs.quantize(Net(), 4, input_shape=(3, 8, 8), mean=(0.5,) * 3, std=(0.2, 0.0, 0.2))
    registry = rs.quantize(rs.create_model("resnet20"), 4)
    assert registry.graph.input.attrs["mean"] == list(rs.models.model_config("resnet20").mean)


def test_save_load_run_evaluate(tmp_path):
    torch.manual_seed(0)
    images = _images(24)
    labels = torch.arange(24) % 4
    snn = rs.convert(Net().eval(), images, 4, input_shape=(3, 8, 8), mean=(0.5,) * 3, std=(0.2,) * 3, progress=False)
    snn.save(tmp_path / "net.snn")
    back = rs.load(tmp_path / "net.snn")
    result = rs.run(back, images)
    assert isinstance(result, rs.EngineResult) and result.logits.dtype == torch.int64
    assert torch.equal(result.logits, rs.QANN.from_snn(back).integer_logits(images))
    assert result.spikes["input"] == int(torch.stack([(images >> b) & 1 for b in range(8)]).sum())
    report = rs.evaluate(back, images, labels, progress=False)
    assert report["engine"] == "integer" and report["agreement"] == 1.0
    assert report["accuracy"] == int((result.logits.argmax(1) == labels).sum()) / 24
    with pytest.raises(rs.ConfigError, match="^engine must be one of"):
        rs.run(back, images, engine="analog")
    with pytest.raises(rs.SNNFileError):
        rs.load(tmp_path / "missing.snn")


@pytest.mark.cifar
@pytest.mark.pretrained
def test_the_readme_snippet(cifar10_dir, resnet20_weights):
    m = rs.create_model("resnet20", weights=resnet20_weights)
    x, y = rs.data.load_cifar("cifar10", cifar10_dir, train=False)
    s = rs.convert(m, x[:256], time_steps=4, progress=False)
    assert torch.equal(rs.run(s, x[:64]).logits, rs.run(s, x[:64], engine="integer").logits)
