"""Models and checkpoints as users have them: ``--model file.py:factory`` / ``module:factory`` with
``--model-args``, ``--mean`` / ``--std``, and every common checkpoint layout."""
from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

import radixsnn as rs
from radixsnn.cli import main
from radixsnn.models import load_model
from radixsnn.models.weights import read_state_dict

MODEL_FILE = textwrap.dedent('''
    """A user's model file: it imports itself by its own name, as zoo files do."""
    import torch.nn as nn
    import torch.nn.functional as F


    class Net(nn.Module):
        def __init__(self, num_classes=10, width=8):
            super().__init__()
            self.conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(width)
            self.fc = nn.Linear(width, num_classes)

        def forward(self, x):
            n, c, h, w = x.size()                 # computes with sizes: traced with concrete shapes
            y = F.relu(self.bn(self.conv(x)))
            return self.fc(F.avg_pool2d(y, h).view(n, -1))


    def factory(num_classes=10, width=8):
        import mynet                              # the module refers to itself by name
        return mynet.Net(num_classes, width)
''')


@pytest.fixture
def model_file(tmp_path, monkeypatch):
    path = tmp_path / "mynet.py"
    path.write_text(MODEL_FILE)
    monkeypatch.delitem(sys.modules, "mynet", raising=False)
    yield path
    sys.modules.pop("mynet", None)


def test_a_model_from_a_file_and_from_a_module(model_file, tmp_path, monkeypatch):
    m = load_model(f"{model_file}:factory", model_args={"num_classes": 4, "width": 6}, mean=(0.5,) * 3, std=(0.2,) * 3)
    assert m.fc.out_features == 4 and m.conv.out_channels == 6 and not m.training
    monkeypatch.chdir(tmp_path)  # package.module:callable resolves from the current folder
    sys.modules.pop("mynet", None)
    m2 = load_model("mynet:factory")
    assert isinstance(m2, torch.nn.Module)
    with pytest.raises(rs.ConfigError, match="^mean is required"):
        rs.quantize(m2, 4)  # no registry config, no --mean/--std


@pytest.mark.parametrize("spec, words", [
    ("nothere.py:factory", "file not found"),
    ("mynet.py:missing", "has no callable 'missing'"),
    ("no_such_module_xyz:fn", "cannot be imported"),
    ("justaname", "not a registered name"),
])
def test_model_specs_that_do_not_resolve(model_file, tmp_path, monkeypatch, spec, words):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(rs.ConfigError, match=words):
        load_model(spec)


def _state(tmp_path, model_file):
    torch.manual_seed(0)
    return load_model(f"{model_file}:factory").state_dict()


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model", "net", "model_state_dict", "module", "nested", "safetensors"])
def test_checkpoint_layouts(model_file, tmp_path, layout):
    state = _state(tmp_path, model_file)
    path = tmp_path / ("w.safetensors" if layout == "safetensors" else "w.pth")
    wrapped = {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 3},
        "model": {"model": state, "optimizer": {}},
        "net": {"net": state, "acc": 91.0},
        "model_state_dict": {"model_state_dict": state},
        "module": {f"module.{k}": v for k, v in state.items()},
        "nested": {"checkpoint": 1, "state_dict": {"model": {f"module.{k}": v for k, v in state.items()}}},
    }
    if layout == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(wrapped[layout], path)
    got = read_state_dict(path)
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)


def test_mismatched_checkpoints_list_the_first_keys(model_file, tmp_path):
    state = _state(tmp_path, model_file)
    bad = dict(state)
    bad.pop("conv.weight")
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(rs.ConfigError, match=r"1 missing keys \(e.g. \['conv.weight'\]\), 1 unexpected \(e.g. \['extra.weight'\]\)"):
        load_model(f"{model_file}:factory", weights=tmp_path / "bad.pth")
    torch.save({**state, "fc.weight": torch.zeros(3, 8)}, tmp_path / "shape.pth")
    with pytest.raises(rs.ConfigError, match=r"1 tensors of another shape, e.g. fc.weight \(3, 8\) \(model: \(10, 8\)\)"):
        load_model(f"{model_file}:factory", weights=tmp_path / "shape.pth")


@pytest.mark.cifar
def test_convert_a_file_model_from_the_cli(model_file, tmp_path, cifar10_dir, capsys):
    torch.manual_seed(0)
    torch.save({"state_dict": {f"module.{k}": v for k, v in load_model(f"{model_file}:factory").state_dict().items()}},
               tmp_path / "w.pth")
    common = ["--model", f"{model_file}:factory", "--weights", str(tmp_path / "w.pth"), "--data-dir", str(cifar10_dir),
              "-T", "4", "--calib-images", "64"]
    assert main(["convert", *common, "--out", str(tmp_path / "a.snn")]) == 2
    assert "--mean is required" in capsys.readouterr().err
    norm = ["--mean", "0.49", "0.48", "0.45", "--std", "0.25", "0.24", "0.26"]
    assert main(["convert", *common, *norm, "--dataset", "cifar100", "--out", str(tmp_path / "a.snn")]) == 2
    assert "cifar100 has 100 classes but the model has 10 outputs" in capsys.readouterr().err
    assert main(["convert", *common, *norm, "--out", str(tmp_path / "m.snn")]) == 0
    assert main(["evaluate", str(tmp_path / "m.snn"), "--data-dir", str(cifar10_dir), "--limit", "64",
                 "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["agreement"] == 1.0 and result["fp_accuracy"] is None
    assert "not a registered model" in result["fp_check"]  # evaluate never imports code named in a file
