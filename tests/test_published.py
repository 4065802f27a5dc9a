"""The published weights in weights/: checksums, names, metadata and table agree; every file loads into
its model; a damaged or renamed file is refused; the float accuracy is the fp16 file's own."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import radixsnn as rs
from radixsnn.core.inputs import normalize
from radixsnn.data import load_cifar
from radixsnn.errors import ConfigError
from radixsnn.models import model_config, published

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "weights"
FILES = published.published_files(FOLDER)


def test_the_folder_checks_and_the_script_agrees():
    assert published.verify_folder(FOLDER) == [published.read_info(p)["name"] for p in FILES]
    assert FILES and sum(p.stat().st_size for p in FILES) < 100 << 20
    out = subprocess.run([sys.executable, "scripts/weights.py", "table", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_each_file_loads_into_its_model(path):
    info = published.read_info(path)
    assert path.stat().st_size <= 30 << 20
    model = rs.create_model(info["model"], num_classes=int(info["num_classes"]), weights=path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert {k: v.dtype for k, v in rs.models.weights.read_state_dict(path).items() if v.is_floating_point()} \
        == {k: torch.float16 for k, v in model.state_dict().items() if v.is_floating_point()}


def test_damaged_or_renamed_files_are_refused(tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(FOLDER, folder)
    target = published.published_files(folder)[0]
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="does not carry its name and checksum"):
        published.verify_folder(folder)
    shutil.copytree(FOLDER, tmp_path / "renamed")
    first = published.published_files(tmp_path / "renamed")[0]
    first.rename(first.with_name("other-00000000.safetensors"))
    with pytest.raises(ConfigError, match="does not carry"):
        published.verify_folder(tmp_path / "renamed")


@pytest.mark.cifar
@pytest.mark.slow
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_recorded_accuracy_is_the_files_own(path, cifar10_dir):
    info = published.read_info(path)
    model = rs.create_model(info["model"], weights=path).eval()
    cfg = model_config(info["model"])
    images, labels = load_cifar(info["dataset"], cifar10_dir, train=False)
    with torch.no_grad():
        correct = sum(int((model(normalize(x, cfg.mean, cfg.std)).argmax(1) == y).sum())
                      for x, y in zip(images.split(500), labels.split(500)))
    assert f"{100 * correct / len(images):.2f}" == info["accuracy"]
