"""``radixsnn train``: every model trains, checkpoints are complete and atomic, resume is exact."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from radixsnn.models.weights import load_weights
from radixsnn.cli import main
from radixsnn.errors import RadixSNNError
from radixsnn.models import create_model, list_models
from radixsnn.training import TrainConfig, learning_rate, load_run, save_run
from radixsnn.training.trainer import Trainer

pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn (pip install -e '.[demo]')")
pytestmark = pytest.mark.usefixtures("one_thread")

# A tiny run on the offline digits data: 2 steps of 8 images per epoch, 16 test images.
TINY = ["--dataset", "digits", "--batch-size", "8", "--train-subset", "16", "--test-subset", "16", "--no-progress"]


def train(out: Path, *extra: str) -> int:
    return main(["train", "--out", str(out), *TINY, *extra])


def tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


def history(out: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock field."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "train_seconds")} for line in lines]


# --------------------------------------------------------------------------- every model
@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_trains_and_writes_a_complete_checkpoint(tmp_path, name):
    out = tmp_path / name
    assert train(out, "--model", name, "--epochs", "1", "--batch-size", "4", "--limit-batches", "1") == 0
    assert {p.name for p in out.iterdir()} == {
        "last.safetensors", "last.json", "best.safetensors", "best.json", "metrics.jsonl",
    }
    meta = json.loads((out / "last.json").read_text())
    assert meta["model"] == name and meta["dataset"] == "digits" and meta["num_classes"] == 10
    assert meta["kind"] == "float" and meta["epoch"] == 1 and meta["epochs"] == 1
    assert meta["code"]["radixsnn"] and meta["config"]["lr"] == 0.1 and meta["config"]["batch_size"] == 4
    assert meta["metrics"]["train_images"] == 4 and meta["metrics"]["test_images"] == 16
    assert meta == json.loads((out / "best.json").read_text()) | {"optimizer": meta["optimizer"]}
    # The run's weights load as a plain float checkpoint; they moved away from the seeded initial weights.
    torch.manual_seed(0)
    initial = create_model(name, num_classes=10).state_dict()
    trained = load_weights(create_model(name, num_classes=10), out / "last.safetensors").state_dict()
    assert any(not torch.equal(initial[k], trained[k]) for k in initial if initial[k].is_floating_point())


# --------------------------------------------------------------------------- resume
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch, interrupt_second_epoch):
    args = ["--model", "resnet20", "--epochs", "3", "--schedule", "cosine", "--seed", "7"]
    assert train(tmp_path / "straight", *args) == 0

    original = interrupt_second_epoch()
    assert train(tmp_path / "stopped", *args) == 130
    assert json.loads((tmp_path / "stopped" / "last.json").read_text())["epoch"] == 1
    monkeypatch.setattr(Trainer, "train_epoch", original)
    assert main(["train", "--out", str(tmp_path / "stopped"), "--resume", "--no-progress"]) == 0

    assert_same_tensors(tmp_path / "straight" / "last.safetensors", tmp_path / "stopped" / "last.safetensors")
    assert history(tmp_path / "straight") == history(tmp_path / "stopped")
    assert len(history(tmp_path / "stopped")) == 3


def test_sigkilled_run_resumes_to_the_same_weights(tmp_path):
    args = ["--model", "resnet20", "--epochs", "6", "--schedule", "cosine", "--seed", "3"]
    out = tmp_path / "killed"
    # Same thread count as this process, whose runs it is compared with (reductions may split by thread).
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(
        [sys.executable, "-m", "radixsnn", "train", "--out", str(out), *TINY, *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        while not (out / "last.json").exists() and proc.poll() is None:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    done = load_run(out / "last").meta["epoch"]  # the checkpoint on disk is whole
    assert 1 <= done < 6
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert train(tmp_path / "straight", *args) == 0
    assert_same_tensors(tmp_path / "straight" / "last.safetensors", out / "last.safetensors")
    assert history(tmp_path / "straight") == history(out)


def test_resume_extends_a_finished_run_and_keeps_best_consistent(tmp_path):
    out = tmp_path / "run"
    assert train(out, "--model", "resnet20", "--epochs", "1") == 0
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    metrics = history(out)
    assert [m["epoch"] for m in metrics] == [1, 2]
    best = json.loads((out / "best.json").read_text())["best"]
    accs = [m["test_acc"] for m in metrics]
    assert best["test_acc"] == max(accs) and best["epoch"] == accs.index(max(accs)) + 1


def test_weight_average_is_what_the_run_evaluates_saves_and_resumes(tmp_path, monkeypatch, interrupt_second_epoch, capsys):
    """--ema D: the average a <- d a + (1 - d) w after every step (d = min(D, (1 + n) / (10 + n))) is the
    model of the checkpoints and evaluations; the trained weights ride along under training/ for resume."""
    names = [n for n, _ in create_model("resnet20", num_classes=10).named_parameters()]
    steps: list[dict[str, torch.Tensor]] = []
    original_step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        out = original_step(self, *args, **kwargs)
        params = [p for group in self.param_groups for p in group["params"]]
        steps.append({n: p.detach().clone() for n, p in zip(names, params)})
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    args = ["--model", "resnet20", "--epochs", "2", "--seed", "3", "--ema", "0.9"]
    assert train(tmp_path / "avg", *args) == 0
    torch.manual_seed(3)
    expected = dict(create_model("resnet20", num_classes=10).named_parameters())
    expected = {n: p.detach().clone() for n, p in expected.items()}
    for n, weights in enumerate(steps):
        d = min(0.9, (1 + n) / (10 + n))
        expected = {k: d * expected[k] + (1 - d) * weights[k] for k in expected}
    saved = tensors(tmp_path / "avg" / "last.safetensors")
    for k in names:
        assert torch.allclose(saved[k], expected[k], rtol=1e-5, atol=1e-6), k
        assert torch.equal(saved["training/" + k], steps[-1][k]), k
    assert not any(torch.equal(saved[k], saved["training/" + k]) for k in names if k.endswith("conv1.weight"))
    # The evaluated model loads as plain weights (the training/ tensors are dropped); best holds an average too.
    assert load_weights(create_model("resnet20", num_classes=10), tmp_path / "avg" / "last.safetensors")
    assert not any(k.startswith("training/") for k in tensors(tmp_path / "avg" / "best.safetensors"))
    state = load_run(tmp_path / "avg" / "last.safetensors")
    assert state.training_state.keys() == state.model_state.keys()
    # Resume restores both the trained weights and the average exactly.
    monkeypatch.setattr(torch.optim.SGD, "step", original_step)
    original = interrupt_second_epoch()
    assert train(tmp_path / "stopped", *args) == 130
    monkeypatch.setattr(Trainer, "train_epoch", original)
    assert main(["train", "--out", str(tmp_path / "stopped"), "--resume", "--no-progress"]) == 0
    assert_same_tensors(tmp_path / "avg" / "last.safetensors", tmp_path / "stopped" / "last.safetensors")
    assert history(tmp_path / "avg") == history(tmp_path / "stopped")
    with pytest.raises(RadixSNNError, match="^ema must lie in"):
        TrainConfig(epochs=1, ema=1.0)
    # A checkpoint of an --ema run without its trained weights cannot be resumed: one line, exit 2.
    state = load_run(tmp_path / "stopped" / "last.safetensors")
    save_run(tmp_path / "stopped" / "last", state.model_state, state.meta, state.optimizer_state)
    assert main(["train", "--out", str(tmp_path / "stopped"), "--resume", "--epochs", "3", "--no-progress"]) == 2
    assert "holds no trained weights beside the average" in capsys.readouterr().err


def test_resume_rejects_a_changed_option(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "--model", "resnet20", "--epochs", "1", "--limit-batches", "1") == 0
    assert main(["train", "--out", str(out), "--resume", "--lr", "0.5"]) == 2
    assert "--lr 0.5 differs from the resumed run's 0.1" in capsys.readouterr().err


def test_existing_run_needs_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "--model", "resnet20", "--epochs", "1", "--limit-batches", "1") == 0
    assert train(out, "--model", "resnet20", "--epochs", "1") == 2
    assert "--resume is needed to continue the run" in capsys.readouterr().err


# --------------------------------------------------------------------------- options
def test_amp_and_unknown_devices_give_clear_errors(tmp_path, capsys):
    base = ["--model", "resnet20", "--epochs", "1", "--limit-batches", "1"]
    assert train(tmp_path / "a", *base, "--device", "cpu", "--amp", "fp16") == 2
    assert "--amp fp16 needs a CUDA device" in capsys.readouterr().err
    assert train(tmp_path / "b", *base, "--device", "tpu") == 2
    assert "--device 'tpu'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert train(tmp_path / "c", *base, "--device", "cuda") == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert train(tmp_path / "d", "--epochs", "1") == 2
    assert "--model is required" in capsys.readouterr().err
    assert train(tmp_path / "e", *base, "--lr", "-1") == 2
    assert "--lr must be positive" in capsys.readouterr().err


def test_step_schedule_halves_every_step_epochs():
    config = TrainConfig(epochs=100, lr=0.1, schedule="step", step_epochs=30)
    assert [learning_rate(config, e, 0.5) for e in (0, 29, 30, 59, 60, 90)] == [0.1, 0.1, 0.05, 0.05, 0.025, 0.0125]


def test_cosine_schedule_runs_from_the_base_rate_to_zero():
    config = TrainConfig(epochs=4, lr=0.2, schedule="cosine")
    assert learning_rate(config, 0, 0.0) == 0.2
    assert learning_rate(config, 2, 0.0) == pytest.approx(0.1, abs=1e-15)
    assert learning_rate(config, 3, 1.0) == pytest.approx(0.0, abs=1e-15)
    rates = [learning_rate(config, e, s / 10) for e in range(4) for s in range(10)]
    assert all(a > b for a, b in zip(rates, rates[1:]))


def test_warmup_rises_linearly_then_runs_the_schedule_over_the_rest():
    cosine = TrainConfig(epochs=10, lr=0.1, schedule="cosine", warmup_epochs=2)
    assert [learning_rate(cosine, 0, p) for p in (0.0, 0.5)] == [0.0, 0.025]
    assert learning_rate(cosine, 1, 0.5) == pytest.approx(0.075, abs=1e-15)
    assert learning_rate(cosine, 2, 0.0) == 0.1  # the cosine starts where the warm-up ends ...
    assert learning_rate(cosine, 6, 0.0) == pytest.approx(0.05, abs=1e-15)  # ... and spans the other 8 epochs
    assert learning_rate(cosine, 9, 1.0) == pytest.approx(0.0, abs=1e-15)
    step = TrainConfig(epochs=100, lr=0.1, schedule="step", step_epochs=30, warmup_epochs=1.5)
    assert [learning_rate(step, e, 0.5) for e in (0, 1, 30, 31, 61)] == [0.1 / 3, 0.1, 0.1, 0.05, 0.025]
    assert learning_rate(TrainConfig(epochs=3, lr=0.2, schedule="constant", warmup_epochs=1), 0, 0.25) == 0.05
    with pytest.raises(RadixSNNError, match="warmup_epochs must lie in"):
        TrainConfig(epochs=2, warmup_epochs=2)
    with pytest.raises(RadixSNNError, match="nesterov needs a momentum"):
        TrainConfig(epochs=2, momentum=0.0, nesterov=True)


def test_nesterov_and_warmup_reach_the_optimizer_and_the_checkpoint(tmp_path):
    assert train(tmp_path / "n", "--model", "resnet20", "--epochs", "2", "--nesterov", "--warmup-epochs", "1") == 0
    meta = json.loads((tmp_path / "n" / "last.json").read_text())
    assert meta["config"]["nesterov"] is True and meta["config"]["warmup_epochs"] == 1.0
    assert all(group["nesterov"] for group in meta["optimizer"]["param_groups"])
    assert [m["lr"] for m in meta["history"]] == [0.0, 0.1]  # the rate at the start of each epoch


def test_eval_every_evaluates_every_nth_and_the_last_epoch_and_may_change_on_resume(tmp_path):
    out = tmp_path / "e"
    assert train(out, "--model", "resnet20", "--epochs", "3", "--eval-every", "2") == 0
    history = json.loads((out / "last.json").read_text())["history"]
    assert [("test_acc" in m) for m in history] == [False, True, True]
    assert json.loads((out / "best.json").read_text())["epoch"] in (2, 3)
    assert main(["train", "--out", str(out), "--resume", "--epochs", "5", "--eval-every", "1", "--no-progress"]) == 0
    meta = json.loads((out / "last.json").read_text())
    assert [("test_acc" in m) for m in meta["history"]] == [False, True, True, True, True]
    assert meta["config"]["eval_every"] == 1


def test_run_checkpoint_round_trip_is_exact(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    save_run(tmp_path / "ck", model.state_dict(), {"kind": "float", "epoch": 5, "x": [1.5, None]}, opt.state_dict())
    state = load_run(tmp_path / "ck.json")
    assert state.meta["epoch"] == 5 and state.meta["x"] == [1.5, None]
    assert all(torch.equal(state.model_state[k], v) for k, v in model.state_dict().items())
    fresh = torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.3, momentum=0.9)
    fresh.load_state_dict(state.optimizer_state)
    want, got = opt.state_dict(), fresh.state_dict()
    assert got["param_groups"] == want["param_groups"]
    for i, entry in want["state"].items():
        assert torch.equal(got["state"][i]["momentum_buffer"], entry["momentum_buffer"])
    assert not list(tmp_path.glob("*.tmp"))
    assert math.isclose(json.loads((tmp_path / "ck.json").read_text())["optimizer"]["param_groups"][0]["lr"], 0.1)


def test_clip_grad_bounds_the_first_update(tmp_path):
    """With momentum's first step, the update is lr x clipped gradient: its global norm <= lr x NORM."""
    out = tmp_path / "clip"
    argv = ["--model", "resnet20", "--epochs", "1", "--limit-batches", "1", "--weight-decay", "0", "--lr", "0.5"]
    assert train(out, *argv, "--clip-grad", "0.001") == 0
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10)
    start = dict(model.named_parameters())
    trained = load_weights(create_model("resnet20", num_classes=10), out / "last.safetensors")
    change = torch.sqrt(sum(((p - start[n]) ** 2).sum() for n, p in trained.named_parameters()))
    assert 0 < float(change.detach()) <= 0.5 * 0.001 * (1 + 1e-5)
    assert load_run(out / "last").meta["config"]["clip_grad"] == 0.001


def test_bf16_autocast_trains_on_the_cpu_and_is_recorded(tmp_path):
    """`--amp` (bf16) runs on the CPU: training passes autocast, channels_last; evaluation in float32."""
    assert train(tmp_path / "bf16", "--model", "resnet20", "--epochs", "1", "--device", "cpu", "--amp") == 0
    meta = json.loads((tmp_path / "bf16" / "last.json").read_text())
    assert meta["amp"] == "bf16" and 0 <= meta["metrics"]["test_acc"] <= 100
    assert all(t.dtype == torch.float32 for t in tensors(tmp_path / "bf16" / "last.safetensors").values()
               if t.is_floating_point())


def test_mixup_blends_images_and_is_recorded(tmp_path, capsys):
    base = ["--model", "resnet20", "--epochs", "1", "--device", "cpu"]
    assert train(tmp_path / "plain", *base) == 0
    assert train(tmp_path / "mixup", *base, "--mixup", "0.4") == 0
    assert json.loads((tmp_path / "mixup" / "last.json").read_text())["config"]["mixup"] == 0.4
    a, b = tensors(tmp_path / "plain" / "last.safetensors"), tensors(tmp_path / "mixup" / "last.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    for bad in ("-1", "nan"):
        assert train(tmp_path / f"bad{bad}", *base, "--mixup", bad) == 2
        assert "--mixup" in capsys.readouterr().err
