import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from radixsnn import quantize
from radixsnn.core.engines import run_integer
from radixsnn.errors import RadixSNNError
from radixsnn.core.qann import QANN
from radixsnn.core.snn import IntegerSNN
from radixsnn.models import IMAGENET_MEAN, IMAGENET_STD

NORM = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}  # the input normalization of these test models


def small_snn(T=4):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    qann = quantize(model, T, input_shape=(3, 8, 8), **NORM)
    qann.calibrate(torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8), progress=False)
    return qann.to_snn({"model": "tiny", "config": {"T": T}})


def test_save_load_round_trip(tmp_path):
    snn = small_snn()
    path = snn.save(tmp_path / "m.snn")
    back = IntegerSNN.load(path)
    assert back.equals(snn)
    assert back.metadata == {"model": "tiny", "config": {"T": 4}}
    x = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(run_integer(back, x).logits, run_integer(snn, x).logits)
    qann = QANN.from_snn(back)
    assert torch.equal(qann.integer_logits(x), run_integer(snn, x).logits)
    assert qann.to_snn().equals(snn)


def test_weights_are_stored_as_int8(tmp_path):
    from safetensors import safe_open

    path = small_snn().save(tmp_path / "m.snn")
    with safe_open(str(path), framework="pt") as f:
        assert all(f.get_tensor(k).dtype == torch.int8 for k in f.keys() if k.startswith("w/"))


@pytest.mark.parametrize("content", [b"", b"not a safetensors file at all", b"\x80\x04\x95pickle"])
def test_corrupt_files_are_rejected(tmp_path, content):
    path = tmp_path / "bad.snn"
    path.write_bytes(content)
    with pytest.raises(RadixSNNError):
        IntegerSNN.load(path)


def test_foreign_safetensors_is_rejected(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(RadixSNNError, match="header"):
        IntegerSNN.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(RadixSNNError, match="not found"):
        IntegerSNN.load(tmp_path / "nope.snn")
