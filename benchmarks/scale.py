"""Memory and speed at scale: a torchvision network at 224x224 (default ResNet-50, T = 8, batch 32), its
float forward against both engines, and the calibration of its conversion, each in a process of its own.

The float model is random-init, with BatchNorm statistics measured on the benchmark's random pixels (time
and memory do not depend on the values). Every measurement runs in a fresh child process (this script
with --child) that loads what it needs from files written once (the float state dict, the converted .snn
file), records its resident set, runs the work --repeats times and reports the best wall-clock time and
its peak resident set (getrusage's ru_maxrss, the whole process: Python, torch, weights and the work).
The table gives, against the float forward of the same run, the time ratio (the spike engine's also per
simulated step: / T), the peak-RSS ratio and the working-set ratio (peak minus the resident set before
the work). --growth repeats the engines' measurement with batch, T and resolution varied one at a time.

    python benchmarks/scale.py [--model torchvision.models:resnet50] [--time-steps 8] [--batch-size 32]
                               [--resolution 224] [--calib-images 64] [--repeats 2] [--threads N]
                               [--growth] [--json FILE]

torchvision targets need the vision extra (`make vision`; run with .venv-vision/bin/python).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import radixsnn as rs
from radixsnn.core.engines import run_integer, run_spikes
from radixsnn.core.inputs import CONFIG_ATTRIBUTE, normalize
from radixsnn.models import load_model

ENGINES = {"integer": run_integer, "spikes": run_spikes}
#: --growth: the settings varied, one at a time, around the run's own.
GROWTH = {"batch_size": (8, 16, 32), "time_steps": (2, 4, 8), "resolution": (112, 160, 224)}


def rss_mb() -> float:
    """The resident set of this process now, in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pixels(n: int, resolution: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, resolution, resolution), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def snn_path(work: str | Path, time_steps: int, resolution: int) -> Path:
    """Where the conversion at ``time_steps`` and ``resolution`` writes its SNN file."""
    return Path(work) / f"t{time_steps}-r{resolution}.snn"


def model_at(target: str, resolution: int, state: Path | None = None) -> torch.nn.Module:
    return load_model(target, weights=state, input_shape=(3, resolution, resolution)).eval()


def child(args) -> dict:
    """One measurement in this process: ``float``, ``convert`` or an engine."""
    work = Path(args.dir)
    if args.child == "convert":
        model = model_at(args.model, args.resolution, work / "float.pt")
        calib = pixels(args.calib_images, args.resolution, seed=1)
        before = rss_mb()
        t0 = time.perf_counter()
        snn = rs.convert(model, calib, time_steps=args.time_steps, progress=False)
        seconds = time.perf_counter() - t0
        snn.save(snn_path(work, args.time_steps, args.resolution))
        return {"seconds": seconds, "before_mb": before, "peak_mb": peak_mb()}
    images = pixels(args.batch_size, args.resolution)
    if args.child == "float":
        model = model_at(args.model, args.resolution, work / "float.pt")
        config = getattr(model, CONFIG_ATTRIBUTE)
        x = normalize(images, config.mean, config.std)

        def work_fn():
            with torch.no_grad():
                model(x)
    else:
        snn = rs.load(snn_path(work, args.time_steps, args.resolution))
        engine = ENGINES[args.child]

        def work_fn():
            engine(snn, images)
    if args.child == "float":
        with torch.no_grad():
            model(x[:1])  # warm-up: one image
    else:
        engine(snn, images[:1])  # warm-up (the spike engine's compiled neuron loop): one image
    before = rss_mb()
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        work_fn()
        best = min(best, time.perf_counter() - t0)
    return {"seconds": best, "before_mb": before, "peak_mb": peak_mb()}


def measure(args, what: str, **over) -> dict:
    """Run one child measurement (``what``) with ``over`` replacing the run's settings."""
    opts = {"model": args.model, "time_steps": args.time_steps, "batch_size": args.batch_size,
            "resolution": args.resolution, "calib_images": args.calib_images, "repeats": args.repeats, **over}
    cmd = [sys.executable, __file__, "--child", what, "--dir", args.dir, "--threads", str(args.threads)]
    for k, v in opts.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: the {what} measurement failed:\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["work_mb"] = row["peak_mb"] - row["before_mb"]
    return {"what": what, **opts, **row}


def engines_at(args, **over) -> list[dict]:
    """The float forward and both engines at one setting (converting first when its .snn is new)."""
    T, res = over.get("time_steps", args.time_steps), over.get("resolution", args.resolution)
    rows = []
    if not snn_path(args.dir, T, res).exists():
        rows.append(measure(args, "convert", **over))
    rows += [measure(args, what, **over) for what in ("float", "integer", "spikes")]
    return rows


def table(rows: list[dict]) -> list[str]:
    lines = ["| batch | T | resolution | float s | float peak MiB | engine | s | time / float | per step / float "
             "| peak MiB | peak / float | working set / float |", "|" + "---|" * 12]
    floats = {(r["batch_size"], r["time_steps"], r["resolution"]): r for r in rows if r["what"] == "float"}
    for r in rows:
        if r["what"] not in ENGINES:
            continue
        f = floats[(r["batch_size"], r["time_steps"], r["resolution"])]
        per_step = f"{r['seconds'] / (r['time_steps'] * f['seconds']):.2f}" if r["what"] == "spikes" else ""
        lines.append(f"| {r['batch_size']} | {r['time_steps']} | {r['resolution']} | {f['seconds']:.2f} | {f['peak_mb']:.0f} "
                     f"| {r['what']} | {r['seconds']:.2f} | {r['seconds'] / f['seconds']:.2f} | {per_step} | {r['peak_mb']:.0f} "
                     f"| {r['peak_mb'] / f['peak_mb']:.2f} | {r['work_mb'] / max(f['work_mb'], 1.0):.2f} |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="torchvision.models:resnet50", help="model target (default torchvision.models:resnet50)")
    ap.add_argument("--time-steps", type=int, default=8, help="T (default 8)")
    ap.add_argument("--batch-size", type=int, default=32, help="images per forward (default 32)")
    ap.add_argument("--resolution", type=int, default=224, help="input height and width (default 224)")
    ap.add_argument("--calib-images", type=int, default=64, help="calibration images of the conversion (default 64)")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs (default 2)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default torch's)")
    ap.add_argument("--growth", action="store_true", help="also vary batch (8, 16, 32), T (2, 4, 8) and resolution (112, 160, 224), one at a time")
    ap.add_argument("--json", default=None, help="write every measurement to this JSON file")
    ap.add_argument("--child", choices=["float", "convert", *ENGINES], help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        args.dir = tmp
        torch.manual_seed(0)
        model = model_at(args.model, args.resolution)
        bn = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in bn:  # BatchNorm statistics of the benchmark's pixels: activations of a realistic scale
            m.reset_running_stats()
            m.momentum = None
        config = getattr(model, CONFIG_ATTRIBUTE)
        model.train()
        with torch.no_grad():
            model(normalize(pixels(8, args.resolution, seed=2), config.mean, config.std))
        torch.save(model.eval().state_dict(), Path(tmp) / "float.pt")
        rows = engines_at(args)
        if args.growth:
            for key, values in GROWTH.items():
                for v in values:
                    if v != getattr(args, key):
                        rows += engines_at(args, **{key: v})
    print(f"# {args.model}, {args.threads} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"best of {args.repeats}, wall clock")
    for r in rows:
        if r["what"] == "convert":
            print(f"convert (T = {r['time_steps']}, {r['resolution']}x{r['resolution']}, {r['calib_images']} calibration images): "
                  f"{r['seconds']:.1f} s, peak {r['peak_mb']:.0f} MiB")
    print("\n".join(table(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "threads": args.threads, "torch": torch.__version__,
                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
