"""``radixsnn train`` and ``radixsnn evaluate`` under ``torchrun``: two CPU processes with the Gloo backend."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn (pip install -e '.[demo]')")

TINY = [
    "--model", "resnet20", "--dataset", "digits", "--batch-size", "8", "--train-subset", "17",
    "--test-subset", "15", "--device", "cpu", "--no-progress", "--seed", "5",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, nproc: int = 2, command: str = "train") -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "radixsnn", command, *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_two_gloo_processes_shard_data_reduce_metrics_and_resume_exactly(tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    proc = torchrun("--out", str(straight), "--epochs", "2", *TINY)
    # Only rank 0 reports and writes.
    assert proc.stdout.count("epoch 1/2 ") == 1 and proc.stdout.count("epoch 2/2 ") == 1
    assert sorted(p.name for p in straight.iterdir()) == [
        "best.json", "best.safetensors", "last.json", "last.safetensors", "metrics.jsonl",
    ]
    metrics = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    # 17 training images: 8 per rank (one sits out), per-rank batches of 4 -> 2 steps x 4 x 2 ranks.
    assert [m["train_images"] for m in metrics] == [16, 16]
    # Evaluation shards 8 + 7 images over the two ranks and sums them.
    assert [m["test_images"] for m in metrics] == [15, 15]
    for m in metrics:
        assert (m["test_acc"] * 15 / 100) == pytest.approx(round(m["test_acc"] * 15 / 100), abs=1e-9)

    # An interrupted distributed run (1 epoch, then resumed to 2) ends with the same weights.
    torchrun("--out", str(stopped), "--epochs", "1", *TINY)
    torchrun("--out", str(stopped), "--epochs", "2", "--resume", "--device", "cpu", "--no-progress")
    a, b = tensors(straight / "last.safetensors"), tensors(stopped / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_process_evaluation_equals_one_process(tmp_path, cifar10_dir, resnet20_weights):
    """Sharded evaluation (41 images: uneven shares) reduces accuracy, agreement, spikes and operations to
    exactly the one-process totals, on CIFAR and on the same images as a PNG folder."""
    from radixsnn.cli import main
    from radixsnn.data import load_cifar
    from radixsnn.data.folder import write_image_folder

    snn = tmp_path / "r20.snn"
    assert main(["convert", "--model", "resnet20", "--weights", str(resnet20_weights), "--time-steps", "3", "--data-dir",
                 str(cifar10_dir), "--calib-images", "64", "--out", str(snn), "--no-progress"]) == 0
    x, y = load_cifar("cifar10", cifar10_dir, train=False)
    write_image_folder(x[:41], y[:41], tmp_path / "png" / "val", [f"c{i}" for i in range(10)])
    for data in (["--data-dir", str(cifar10_dir), "--limit", "41"], ["--dataset", "folder", "--data-dir", str(tmp_path / "png")]):
        one, two = tmp_path / "one.json", tmp_path / "two.json"
        common = [str(snn), "--engine", "spikes", "--device", "cpu", "--batch-size", "8", "--no-progress", *data]
        assert main(["evaluate", *common, "--json", str(one)]) == 0
        proc = torchrun(*common, "--json", str(two), command="evaluate")
        assert proc.stdout.count("SNN == QANN (exact)") == 1  # only rank 0 prints
        a, b = json.loads(one.read_text()), json.loads(two.read_text())
        assert (a["processes"], b["processes"]) == (1, 2) and a["images"] == b["images"] == 41
        for key in ("seconds", "images_per_second", "processes"):
            a.pop(key), b.pop(key)
        assert a == b


def test_two_process_conversion_writes_the_one_process_file(tmp_path, cifar10_dir, resnet20_weights):
    """Under torchrun the processes share the calibration's float passes (600 images: 3 batches, uneven
    shares) and the file rank 0 writes is byte for byte the one-process file."""
    from radixsnn.cli import main

    common = ["--model", "resnet20", "--weights", str(resnet20_weights), "--time-steps", "3", "--data-dir",
              str(cifar10_dir), "--calib-images", "600", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "r20.snn")]
    assert main(["convert", *common]) == 0  # the file records its options, --out too: both runs write one path
    one = (tmp_path / "r20.snn").read_bytes()
    proc = torchrun(*common, command="convert")
    assert proc.stdout.count("wrote ") == 1 and "(2 processes)" in proc.stdout  # only rank 0 writes
    assert (tmp_path / "r20.snn").read_bytes() == one
