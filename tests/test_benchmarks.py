"""The benchmark scripts run: the GPU check in its CPU smoke mode, the engine, bf16 training and per-layer
convolution benchmarks at tiny sizes."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_gpu_check_smoke_runs_every_check_on_the_cpu(tmp_path, cifar10_dir):
    proc = run_script("gpu_check.py", "--smoke", "--device", "cpu", "--data-dir", str(cifar10_dir),
                      "--out", str(tmp_path / "check.json"), cwd=tmp_path)
    result = json.loads((tmp_path / "check.json").read_text())
    checks = [row["check"] for row in result["rows"]]
    assert result["smoke"] and all(row["ok"] for row in result["rows"]), result
    assert sum("== QANN" in c for c in checks) == 4 and any(c.startswith("train") for c in checks)
    assert any(c.startswith("finetune") for c in checks) and any(c.startswith("torchrun") for c in checks)
    assert proc.stdout.count("| yes |") == len(checks)


def test_gpu_campaign_smoke_trains_converts_and_evaluates_every_row_on_the_cpu(tmp_path, cifar10_dir, cifar100_dir):
    proc = run_script("gpu_check.py", "--smoke", "--campaign", "--device", "cpu", "--data-dir", str(cifar10_dir),
                      "--out", str(tmp_path / "campaign.json"), cwd=tmp_path)
    result = json.loads((tmp_path / "campaign.json").read_text())
    checks = [row["check"] for row in result["rows"]]
    assert result["smoke"] and result["campaign"] and all(row["ok"] for row in result["rows"]), result
    assert [c for c in checks if c.startswith("train")] == [f"train {m} {d}, 1 epochs" for m, d in
                                                          [("vgg16", "cifar100"), ("resnet18", "cifar100"),
                                                           ("mobilenet", "cifar100"), ("resnet18", "cifar10")]]
    assert sum("convert + evaluate" in c for c in checks) == 8 and "campaign at smoke sizes" in proc.stdout


def test_engine_benchmark_times_every_engine(tmp_path):
    proc = run_script("engines.py", "--images", "8", "--batch-size", "4", "--repeats", "1", "--threads", "1",
                      "--time-steps", "2", "--weight-bits", "7", cwd=tmp_path)
    assert "# resnet20, 7-bit weights, 8 images" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| 2 |")).split("|")[1:-1]
    assert len(row) == 8 and all(float(cell) > 0 for cell in row[1:7]) and row[7].strip().endswith("of 19")


def test_training_benchmark_measures_both_precisions(tmp_path):
    run_script("training.py", "--models", "resnet20", "--steps", "1", "--warmup", "1", "--batch-size", "8",
               "--threads", "1", "--matmul-size", "128", "--json", str(tmp_path / "t.json"), cwd=tmp_path)
    result = json.loads((tmp_path / "t.json").read_text())
    rows = result["rows"]
    assert result["matmul"]["size"] == 128 and result["matmul"]["ratio"] > 0
    assert [(r["model"], r["kind"]) for r in rows] == [("resnet20", k) for k in ("train", "finetune", "plain", "nchw")]
    assert all(r["float32"] > 0 and r["bf16"] > 0 for r in rows)


def test_conv_layers_benchmark_times_every_convolution_three_ways(tmp_path):
    run_script("conv_layers.py", "--model", "vgg16", "--batch-size", "2", "--repeats", "1", "--warmup", "0",
               "--threads", "1", "--json", str(tmp_path / "c.json"), cwd=tmp_path)
    result = json.loads((tmp_path / "c.json").read_text())
    assert [r["map"] for r in result["rows"]] == [[32, 32]] * 2 + [[16, 16]] * 2 + [[8, 8]] * 3 + [[4, 4]] * 3 + [[2, 2]] * 3
    assert all(r[f"{way}_{p}_ms"] > 0 for r in result["rows"] for way in ("float32", "bf16", "unfolded")
               for p in ("forward", "backward"))


def test_the_unfolded_candidate_is_the_convolution_forward_and_backward():
    spec = importlib.util.spec_from_file_location("conv_layers", BENCHMARKS / "conv_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    g = torch.Generator().manual_seed(0)
    for stride, padding, size in ((1, 1, 2), (2, 1, 5), (1, 0, 4)):
        x = torch.randn(3, 4, size, size, dtype=torch.float64, generator=g, requires_grad=True)
        w = torch.randn(6, 4, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
        b = torch.randn(6, dtype=torch.float64, generator=g, requires_grad=True)
        want = torch.nn.functional.conv2d(x, w, b, stride, padding)
        got = module.unfolded_conv2d(x, w, b, stride, padding)
        assert torch.allclose(got, want, atol=1e-12)
        grad = torch.randn(want.shape, dtype=torch.float64, generator=g)
        assert all(torch.allclose(a, c, atol=1e-12) for a, c in
                   zip(torch.autograd.grad(got, (x, w, b), grad), torch.autograd.grad(want, (x, w, b), grad)))


def test_scale_benchmark_measures_time_and_peak_memory_in_child_processes(tmp_path):
    run_script("scale.py", "--model", "resnet20", "--resolution", "32", "--batch-size", "2", "--time-steps", "2",
               "--calib-images", "4", "--repeats", "1", "--threads", "1", "--json", str(tmp_path / "s.json"), cwd=tmp_path)
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert [r["what"] for r in rows] == ["convert", "float", "integer", "spikes"]
    assert all(r["seconds"] > 0 and r["peak_mb"] >= r["before_mb"] > 0 for r in rows)
