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
from radixsnn.data import load_cifar
from radixsnn.errors import ConfigError
from radixsnn.models import published

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


@pytest.mark.parametrize("name, words", [("x", "not a radixsnn training checkpoint"), ("Bad Name", "name must be")])
def test_publishing_something_else_is_one_line(tmp_path, name, words):
    (tmp_path / "plain.safetensors").write_bytes(published.published_files(FOLDER)[0].read_bytes())
    before = sorted(FOLDER.iterdir())
    out = subprocess.run([sys.executable, "scripts/weights.py", "publish", str(tmp_path / "plain.safetensors"),
                          "--name", name], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert words in out.stderr and sorted(FOLDER.iterdir()) == before


def test_publishing_the_same_weights_gives_the_same_file(tmp_path):
    """safetensors writes its metadata in hash order; the published bytes (and so the name) must not vary."""
    source = FILES[0]
    state, info = rs.models.weights.read_state_dict(source), published.read_info(source)
    paths = [published.write_published(state, tmp_path / str(i), name="again", info=info) for i in range(3)]
    assert len({p.name for p in paths}) == 1 and len({p.read_bytes() for p in paths}) == 1
    assert published.read_info(paths[0]) == info | {"name": "again"}


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
    model = rs.create_model(info["model"], num_classes=int(info["num_classes"]), weights=path)
    images, labels = load_cifar(info["dataset"], cifar10_dir, train=False)
    assert f"{published.accuracy(model, info['model'], images, labels):.2f}" == info["accuracy"]
