"""``radixsnn finetune``: QAT from a float checkpoint, exact resume, conversion and SNN evaluation."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from radixsnn.cli import main
from radixsnn import quantize
from radixsnn.data import load_cifar
from radixsnn.errors import RadixSNNError
from radixsnn.models import create_model, list_models
from radixsnn.core.qann import QANN
from radixsnn.core.snn import IntegerSNN
from radixsnn.training import load_run
from radixsnn.training.trainer import Trainer, TrainConfig, training_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def snn_of_checkpoint(path: Path) -> IntegerSNN:
    """The SNN converted from the QANN stored in a finetune checkpoint."""
    state = load_run(path)
    qann = QANN.from_spec(state.meta["spec"])
    qann.load_state_dict(state.model_state)
    return qann.to_snn()


def test_finetune_pretrained_resnet20_converts_and_matches_exactly(tmp_path, cifar10_dir, resnet20_weights):
    out = tmp_path / "t3"
    argv = [
        "finetune", "--model", "resnet20", "--weights", str(resnet20_weights), "--time-steps", "3",
        "--epochs", "1", "--batch-size", "32", "--train-subset", "64", "--test-subset", "32",
        "--calib-images", "64", "--eval-images", "24", "--data-dir", str(cifar10_dir), "--out", str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["images"] == 24 and result["engine"] == "spikes" and result["time_steps"] == 3
    assert result["agreement"] == 1.0 and result["accuracy"] == result["qann_accuracy"]
    assert result["fp_accuracy"] is not None and result["spikes"] > 0
    snn = IntegerSNN.load(out / "model.snn")
    assert (snn.time_steps, snn.weight_bits) == (3, 8)
    assert snn.metadata["how"] == "quantization-aware fine-tuning" and snn.metadata["model"] == "resnet20"
    assert snn.equals(snn_of_checkpoint(out / "last"))
    meta = json.loads((out / "last.json").read_text())
    assert meta["kind"] == "qann" and meta["epoch"] == 1 and meta["config"]["lr"] == 1e-3
    assert meta["config"]["clip_grad"] == 1.0 and meta["calibrated"]["test_images"] == 32
    assert meta["config"]["distill"] == 1.0 and meta["config"]["act_scale"] == "auto"
    assert snn.qann_spec["act_scale"] == "channel"  # auto at T = 3 < 8 weight bits
    assert meta["config"]["schedule"] == "cosine" and meta["metrics"]["train_images"] == 64

    # Fine-tuning moved the parameters away from the calibrated starting point (same calibration draw).
    images, _ = load_cifar("cifar10", cifar10_dir, train=True)
    start = quantize(create_model("resnet20", weights=resnet20_weights), 3)
    start.calibrate(images[:64][torch.randperm(64, generator=torch.Generator().manual_seed(0))], progress=False)
    tuned = load_run(out / "last").model_state
    assert any(not torch.equal(v, tuned[k]) for k, v in start.state_dict().items())

    # Resuming a finished, evaluated run does nothing more.
    stamp = (out / "eval.json").stat().st_mtime_ns
    assert main(argv + ["--resume"]) == 0
    assert (out / "eval.json").stat().st_mtime_ns == stamp


@pytest.fixture
def digits_float(tmp_path) -> Path:
    """A ResNet-20 trained for one tiny epoch on the digits data by ``radixsnn train``."""
    pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn (pip install -e '.[demo]')")
    out = tmp_path / "float"
    assert main([
        "train", "--model", "resnet20", "--dataset", "digits", "--epochs", "1", "--batch-size", "16",
        "--train-subset", "64", "--test-subset", "16", "--lr", "0.05", "--out", str(out), "--no-progress",
    ]) == 0
    return out / "best.safetensors"


@pytest.mark.parametrize("ema", ["0", "0.9"])
def test_interrupted_finetune_resumes_to_the_same_snn(tmp_path, digits_float, monkeypatch, interrupt_second_epoch, ema):
    common = [
        "--model", "resnet20", "--dataset", "digits", "--weights", str(digits_float), "--time-steps", "2",
        "--epochs", "2", "--batch-size", "8", "--train-subset", "16", "--test-subset", "8",
        "--calib-images", "16", "--eval-images", "8", "--engine", "integer", "--no-progress", "--lr", "1e-3",
        "--seed", "4", "--ema", ema,
    ]
    assert main(["finetune", "--out", str(tmp_path / "straight"), *common]) == 0

    original = interrupt_second_epoch()
    assert main(["finetune", "--out", str(tmp_path / "stopped"), *common]) == 130
    assert not (tmp_path / "stopped" / "model.snn").exists()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resume = ["finetune", "--out", str(tmp_path / "stopped"), "--resume", "--eval-images", "8", "--engine", "integer"]
    assert main([*resume, "--no-progress"]) == 0

    a, b = tensors(tmp_path / "straight" / "last.safetensors"), tensors(tmp_path / "stopped" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert IntegerSNN.load(tmp_path / "straight" / "model.snn").equals(IntegerSNN.load(tmp_path / "stopped" / "model.snn"))
    for run in ("straight", "stopped"):
        assert json.loads((tmp_path / run / "eval.json").read_text())["agreement"] == 1.0
    if ema != "0":  # the SNN is converted from the average, the model of last.safetensors
        snn = snn_of_checkpoint(tmp_path / "straight" / "last.safetensors")
        assert snn.equals(IntegerSNN.load(tmp_path / "straight" / "model.snn"))
        trained = load_run(tmp_path / "straight" / "last.safetensors").training_state
        assert any(not torch.equal(trained[k], a[k]) for k in trained)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_finetunes_and_converts(tmp_path, name):
    pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn (pip install -e '.[demo]')")
    float_dir, out = tmp_path / "float", tmp_path / "snn"
    tiny = ["--dataset", "digits", "--epochs", "1", "--batch-size", "4", "--train-subset", "4", "--test-subset", "4", "--no-progress"]
    assert main(["train", "--model", name, "--out", str(float_dir), *tiny]) == 0
    assert main([
        "finetune", "--model", name, "--weights", str(float_dir / "last.safetensors"), "--time-steps", "2",
        "--calib-images", "4", "--eval-images", "2", "--engine", "integer", "--out", str(out), *tiny,
    ]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["agreement"] == 1.0 and result["images"] == 2 and result["engine"] == "integer"


def test_finetune_option_errors(tmp_path, capsys):
    assert main(["finetune", "--model", "resnet20", "--weights", "x.th", "--out", str(tmp_path / "a")]) == 2
    assert "--time-steps is required" in capsys.readouterr().err
    assert main([
        "finetune", "--model", "resnet20", "--weights", str(tmp_path / "missing.th"), "--time-steps", "2",
        "--dataset", "digits", "--train-subset", "8", "--out", str(tmp_path / "b"),
    ]) == 2
    assert "weights file not found" in capsys.readouterr().err
    assert main(["finetune", "--amp", "fp16", "--device", "cpu", "--model", "resnet20", "--weights", "x.th",
                 "--time-steps", "2", "--out", str(tmp_path / "c")]) == 2
    assert "--amp fp16 needs a CUDA device" in capsys.readouterr().err


def test_bf16_finetuning_keeps_the_snn_exact(tmp_path):
    """bf16 autocast of the training passes: the converted SNN still equals its QANN bit for bit."""
    pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn (pip install -e '.[demo]')")
    tiny = ["--dataset", "digits", "--epochs", "1", "--batch-size", "8", "--train-subset", "16", "--test-subset", "8", "--no-progress"]
    assert main(["train", "--model", "resnet20", "--out", str(tmp_path / "float"), *tiny]) == 0
    assert main(["finetune", "--model", "resnet20", "--weights", str(tmp_path / "float" / "last.safetensors"),
                 "--time-steps", "3", "--calib-images", "8", "--eval-images", "8", "--engine", "spikes",
                 "--device", "cpu", "--amp", "bf16", "--out", str(tmp_path / "t3"), *tiny]) == 0
    assert json.loads((tmp_path / "t3" / "last.json").read_text())["amp"] == "bf16"
    assert json.loads((tmp_path / "t3" / "eval.json").read_text())["agreement"] == 1.0


# --------------------------------------------------------------------------- demo
TINY_PLAN = {"train_subset": 32, "train_epochs": 1, "finetune_subset": 16, "test_images": 8}


def test_demo_without_cifar_uses_digits_and_checks_exactness(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn (pip install -e '.[demo]')")
    from radixsnn.cli import demo

    import radixsnn.data as data

    monkeypatch.setitem(demo.PLAN, "digits", TINY_PLAN)
    monkeypatch.delenv("RADIXSNN_MODELS_DIR", raising=False)
    # An unreachable mirror stands in for being offline: the download fails at once and the demo falls back.
    monkeypatch.setitem(data.ARCHIVES, "cifar10", data.Archive("http://127.0.0.1:9/cifar-10-python.tar.gz", "0" * 32))
    empty = tmp_path / "no-data"
    empty.mkdir()
    argv = ["demo", "--data-dir", str(empty), "--out", str(tmp_path / "demo"), "--time-steps", "2", "--no-progress"]
    assert main(argv + ["--download"]) == 0
    text = capsys.readouterr().out
    assert "CIFAR-10 not found: cannot download http://127.0.0.1:9/" in text
    assert "Using scikit-learn's 8x8 handwritten digits" in text
    assert "ResNet-20 (trained here for 1 epochs)" in text and "digits, first 8 test images" in text
    assert "SNN logits == QANN logits        100.00% of images" in text
    result = json.loads((tmp_path / "demo" / "digits" / "t2" / "eval.json").read_text())
    assert result["agreement"] == 1.0 and result["images"] == 8 and result["time_steps"] == 2
    # A second run reuses the finished runs.
    assert main(argv) == 0
    assert "reusing the earlier demo runs" in capsys.readouterr().out


def test_demo_with_cifar10_uses_the_pretrained_resnet20(tmp_path, monkeypatch, capsys, cifar10_dir, models_dir):
    from radixsnn.cli import demo

    monkeypatch.setitem(demo.PLAN, "cifar10", TINY_PLAN)
    monkeypatch.setenv("RADIXSNN_MODELS_DIR", str(models_dir))
    assert main(["demo", "--data-dir", str(cifar10_dir), "--out", str(tmp_path / "demo"), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "ResNet-20 (pretrained)" in text and "cifar10, first 8 test images" in text
    assert not (tmp_path / "demo" / "cifar10" / "float").exists()
    assert json.loads((tmp_path / "demo" / "cifar10" / "t4" / "eval.json").read_text())["agreement"] == 1.0


def test_demo_rejects_cifar_weights_without_cifar(tmp_path, capsys, resnet20_weights):
    pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn (pip install -e '.[demo]')")
    empty = tmp_path / "no-data"
    empty.mkdir()
    assert main(["demo", "--data-dir", str(empty), "--weights", str(resnet20_weights), "--out", str(tmp_path / "d")]) == 2
    assert "CIFAR-10 is not available" in capsys.readouterr().err


def test_distillation_loss_mixes_cross_entropy_and_kl():
    torch.manual_seed(0)
    logits, teacher = torch.randn(6, 10, requires_grad=True), torch.randn(6, 10)
    labels = torch.randint(0, 10, (6,))
    ce = torch.nn.functional.cross_entropy(logits, labels)
    p = teacher.softmax(1)
    kl = (p * (p.log() - logits.log_softmax(1))).sum(1).mean()
    assert torch.equal(training_loss(logits, labels, TrainConfig(epochs=1)), ce)
    assert torch.allclose(training_loss(logits, labels, TrainConfig(epochs=1, distill=1.0), teacher), kl)
    assert torch.allclose(training_loss(logits, labels, TrainConfig(epochs=1, distill=0.25), teacher), 0.75 * ce + 0.25 * kl)
    # A student that already matches its teacher gets no distillation gradient.
    same = training_loss(logits, labels, TrainConfig(epochs=1, distill=1.0), logits.detach())
    (grad,) = torch.autograd.grad(same, logits)
    assert float(same.detach()) == pytest.approx(0.0, abs=1e-7) and float(grad.abs().max()) < 1e-7
    with pytest.raises(RadixSNNError, match="^distill must lie in"):
        TrainConfig(epochs=1, distill=1.5)


def test_an_ensemble_teacher_is_the_mean_of_its_softmaxes():
    from radixsnn.training.qat import ensemble_teacher

    torch.manual_seed(2)
    logits, labels = torch.randn(5, 7, requires_grad=True), torch.randint(0, 7, (5,))
    outputs = [3 * torch.randn(5, 7) for _ in range(3)]
    teacher = ensemble_teacher([lambda x, z=z: z for z in outputs])
    p = torch.stack([z.softmax(1) for z in outputs]).mean(0)
    kl = (p * (p.log() - logits.log_softmax(1))).sum(1).mean()
    assert torch.allclose(teacher(None).exp(), p) and torch.allclose(teacher(None).log_softmax(1), teacher(None), atol=1e-6)
    assert torch.allclose(training_loss(logits, labels, TrainConfig(epochs=1, distill=1.0), teacher(None)), kl, atol=1e-6)
    one = lambda x: outputs[0]
    assert ensemble_teacher([one]) is one  # one teacher: its own logits, temperature and all


def test_finetune_distils_from_an_ensemble_teacher(tmp_path):
    """--teacher: the run records the teachers and their checksums, and the SNN still equals its QANN."""
    pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn (pip install -e '.[demo]')")
    tiny = ["--dataset", "digits", "--epochs", "1", "--batch-size", "8", "--train-subset", "16", "--test-subset", "8", "--no-progress"]
    for seed in ("0", "1"):
        assert main(["train", "--model", "resnet20", "--seed", seed, "--out", str(tmp_path / f"float{seed}"), *tiny]) == 0
    other = tmp_path / "float1" / "last.safetensors"
    assert main(["finetune", "--model", "resnet20", "--weights", str(tmp_path / "float0" / "last.safetensors"),
                 "--teacher", f"resnet20={other}", "--time-steps", "3", "--calib-images", "8", "--eval-images", "8",
                 "--engine", "spikes", "--out", str(tmp_path / "t3"), *tiny]) == 0
    assert json.loads((tmp_path / "t3" / "last.json").read_text())["config"]["teachers"] == [f"resnet20={other}"]
    assert json.loads((tmp_path / "t3" / "eval.json").read_text())["agreement"] == 1.0
    from radixsnn.models.weights import file_sha256
    assert IntegerSNN.load(tmp_path / "t3" / "model.snn").metadata["teachers_sha256"] == [file_sha256(other)]


@pytest.mark.parametrize("tau", [0.5, 2.0, 4.0])
def test_distillation_temperature_softens_both_distributions(tau):
    torch.manual_seed(1)
    logits, teacher = torch.randn(6, 10, requires_grad=True), 5 * torch.randn(6, 10)
    labels = torch.randint(0, 10, (6,))
    p = (teacher / tau).softmax(1)
    kl = (p * (p.log() - (logits / tau).log_softmax(1))).sum(1).mean()
    config = TrainConfig(epochs=1, distill=1.0, distill_temperature=tau)
    assert torch.allclose(training_loss(logits, labels, config, teacher), tau**2 * kl)
    # The gradient is tau (softmax(z / tau) - p) / n: tau^2 undoes the 1 / tau^2 the softening takes off it.
    (grad,) = torch.autograd.grad(training_loss(logits, labels, config, teacher), logits)
    q = (logits.detach() / tau).softmax(1)
    assert torch.allclose(grad, tau * (q - p) / len(logits), atol=1e-6)
    with pytest.raises(RadixSNNError, match="^distill_temperature must be positive"):
        TrainConfig(epochs=1, distill_temperature=0.0)
    with pytest.raises(RadixSNNError, match="^distill_temperature must be positive"):
        TrainConfig(epochs=1, distill_temperature=float("nan"))


def test_finetune_with_distillation_changes_the_result(tmp_path, digits_float):
    common = [
        "--model", "resnet20", "--dataset", "digits", "--weights", str(digits_float), "--time-steps", "2",
        "--epochs", "1", "--batch-size", "8", "--train-subset", "16", "--test-subset", "8",
        "--calib-images", "16", "--eval-images", "8", "--engine", "integer", "--no-progress", "--lr", "1e-2",
    ]
    assert main(["finetune", "--out", str(tmp_path / "ce"), "--distill", "0", *common]) == 0
    assert main(["finetune", "--out", str(tmp_path / "kd"), *common]) == 0  # distillation is the default
    assert main(["finetune", "--out", str(tmp_path / "kd4"), "--distill-temperature", "4", *common]) == 0
    assert json.loads((tmp_path / "ce" / "last.json").read_text())["config"]["distill"] == 0.0
    meta = json.loads((tmp_path / "kd" / "last.json").read_text())
    assert meta["config"]["distill"] == 1.0 and meta["config"]["act_scale"] == "auto"
    assert json.loads((tmp_path / "kd" / "eval.json").read_text())["agreement"] == 1.0
    assert meta["config"]["distill_temperature"] == 1.0
    assert json.loads((tmp_path / "kd4" / "last.json").read_text())["config"]["distill_temperature"] == 4.0
    a, b, c = (tensors(tmp_path / run / "last.safetensors") for run in ("ce", "kd", "kd4"))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(b[k], c[k]) for k in b)


def test_default_learning_rate_depends_on_time_steps():
    from radixsnn.training import default_lr

    assert [default_lr(t) for t in (1, 2, 3, 4, 8)] == [3e-2, 3e-2, 1e-3, 1e-3, 1e-3]


def test_scale_learning_rate_is_a_multiple_of_the_schedule_without_decay(tmp_path, digits_float):
    from radixsnn.training.trainer import parameter_groups

    qann = quantize(create_model("resnet20"), 2)
    groups = parameter_groups(qann, TrainConfig(epochs=1, lr=0.1, weight_decay=1e-4, scale_lr=30.0))
    rest, scales = groups
    assert scales["lr_scale"] == 30.0 and scales["weight_decay"] == 0.0 and rest["lr_scale"] == 1.0
    assert {id(p) for p in scales["params"]} == {id(p) for p in qann.scales.parameters()}
    assert len(rest["params"]) + len(scales["params"]) == len(list(qann.parameters()))
    assert parameter_groups(torch.nn.Linear(2, 2), TrainConfig(epochs=1))[0]["lr_scale"] == 1.0  # a float network: one group
    with pytest.raises(RadixSNNError, match="scale_lr"):
        TrainConfig(epochs=1, scale_lr=0.0)

    common = [
        "--model", "resnet20", "--dataset", "digits", "--weights", str(digits_float), "--time-steps", "2",
        "--epochs", "1", "--batch-size", "8", "--train-subset", "16", "--test-subset", "8",
        "--calib-images", "16", "--eval-images", "8", "--engine", "integer", "--no-progress", "--lr", "1e-3",
    ]
    assert main(["finetune", "--out", str(tmp_path / "a"), *common]) == 0
    assert main(["finetune", "--out", str(tmp_path / "b"), "--scale-lr", "100", *common]) == 0
    assert json.loads((tmp_path / "b" / "last.json").read_text())["config"]["scale_lr"] == 100.0
    assert json.loads((tmp_path / "b" / "eval.json").read_text())["agreement"] == 1.0
    a, b = tensors(tmp_path / "a" / "last.safetensors"), tensors(tmp_path / "b" / "last.safetensors")
    scales = [k for k in a if k.startswith("scales.")]
    assert scales and any(not torch.equal(a[k], b[k]) for k in scales)
