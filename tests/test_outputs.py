"""Output files and SNN files that cannot lie: atomic writes with ordinary permissions, the digest, and
``radixsnn evaluate`` failing when the exactness promise is broken."""
from __future__ import annotations

import json
import os
import stat

import pytest
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

import radixsnn as rs
from radixsnn.cli import main
from radixsnn.core.snn import digest
from radixsnn.errors import ConfigError, SNNFileError
from radixsnn.outputs import atomic_write, check_file, check_folder, write_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_files_get_ordinary_permissions(tmp_path):
    path = write_json(tmp_path / "a.json", {"x": 1})
    with open(tmp_path / "plain", "w") as f:
        f.write("x")
    assert _mode(path) == _mode(tmp_path / "plain") == 0o666 & ~_umask()


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = write_json(tmp_path / "a.json", {"x": 1})

    def disk_full(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(ConfigError, match="^out cannot be written to .*No space left on device"):
        atomic_write(path, disk_full, "out")
    assert json.loads(path.read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary file left behind


def test_output_paths_are_checked_without_creating_anything(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="must be a file"):
        check_file(tmp_path, "out")
    with pytest.raises(ConfigError, match="cannot be created under"):
        check_file(tmp_path / "file" / "x.json", "json")
    with pytest.raises(ConfigError, match="must be a folder"):
        check_folder(tmp_path / "file", "out")
    assert check_folder(tmp_path / "new" / "deeper", "out") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        with pytest.raises(ConfigError, match="no permission"):
            check_file(locked / "x.snn", "out")


# --------------------------------------------------------------------------- SNN files
def _snn(classes=10):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, classes)).eval()
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return rs.convert(model, images, 3, mean=(0.5,) * 3, std=(0.25,) * 3, progress=False,
                      metadata={"model": "tiny", "dataset": "digits"})


def _tensors(path):
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()["radixsnn"], {k: f.get_tensor(k) for k in f.keys()}


def _rewrite(path, header: dict, tensors: dict, sign: bool = True):
    if sign:
        header = {k: v for k, v in header.items() if k != "digest"}
        header["digest"] = digest(header, tensors)
    save_file(tensors, str(path), metadata={"radixsnn": json.dumps(header)})


def test_a_flipped_byte_is_an_error(tmp_path):
    path = _snn().save(tmp_path / "m.snn")
    raw, tensors = _tensors(path)
    tensors["w/0.t0"][0, 0, 0, 0] += 1  # a changed weight, the old digest
    _rewrite(path, json.loads(raw), tensors, sign=False)
    with pytest.raises(SNNFileError, match="digest does not match"):
        rs.load(path)


@pytest.mark.parametrize("field, value, words", [
    ("time_steps", 0, "time_steps must be an integer in 1..16"),
    ("time_steps", 40, "time_steps must be an integer in 1..16"),
    ("input_bits", 9, "input_bits must be an integer in 1..8"),
    ("weight_bits", 1, "weight_bits must be an integer in 2..16"),
    ("delta_t", {"0": 31, "output": 0}, "dT of 0 must be an integer in 0..30"),
    ("delta_t", {"0": 0, "output": 0}, "does not fit its 8-step inputs"),
    ("unknown", 1, "unknown ['unknown']"),
])
def test_header_fields_are_validated(tmp_path, field, value, words):
    path = _snn().save(tmp_path / "m.snn")
    raw, tensors = _tensors(path)
    header = json.loads(raw)
    header[field] = value
    _rewrite(path, header, tensors)  # re-signed: the checks, not the digest, must catch it
    with pytest.raises(SNNFileError, match=words.replace("[", r"\[").replace("]", r"\]")):
        rs.load(path)


def _evaluate(path, tmp_path, capsys, *extra):
    code = main(["evaluate", str(path), "--dataset", "digits", "--engine", "integer", "--limit", "20",
                 "--json", str(tmp_path / "e.json"), *extra])
    return code, capsys.readouterr()


@pytest.fixture
def digits():
    pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn (pip install -e '.[demo]')")


def test_evaluate_fails_when_the_snn_differs_from_its_qann(tmp_path, capsys, digits):
    path = _snn().save(tmp_path / "m.snn")
    raw, tensors = _tensors(path)
    tensors["qann/weights.output/t0"] = -tensors["qann/weights.output/t0"]  # another network's QANN
    _rewrite(path, json.loads(raw), tensors)
    code, captured = _evaluate(path, tmp_path, capsys)
    assert code == 2
    assert "exactness broken: the SNN's logits differ from its QANN's on" in captured.err
    assert json.loads((tmp_path / "e.json").read_text())["agreement"] < 1


def test_evaluate_says_when_there_is_nothing_to_check_against(tmp_path, capsys, digits):
    snn = _snn()
    snn.qann_spec = snn.qann_state = None
    path = snn.save(tmp_path / "m.snn")
    code, captured = _evaluate(path, tmp_path, capsys)
    assert code == 0
    assert "SNN == QANN (exact)         not checked: the file carries no QANN" in captured.out
    assert "float accuracy              n/a (not verified: the file records no float model and checksum)" in captured.out
    assert json.loads((tmp_path / "e.json").read_text())["agreement"] is None
