"""The benchmark scripts run: the GPU check in its CPU smoke mode, the bf16 training benchmark at tiny sizes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def test_training_benchmark_measures_both_precisions(tmp_path):
    run_script("training.py", "--models", "resnet20", "--steps", "1", "--warmup", "1", "--batch-size", "8",
               "--threads", "1", "--matmul-size", "128", "--json", str(tmp_path / "t.json"), cwd=tmp_path)
    result = json.loads((tmp_path / "t.json").read_text())
    rows = result["rows"]
    assert result["matmul"]["size"] == 128 and result["matmul"]["ratio"] > 0
    assert [(r["model"], r["kind"]) for r in rows] == [("resnet20", k) for k in ("train", "finetune", "plain")]
    assert all(r["float32"] > 0 and r["bf16"] > 0 for r in rows)
