"""Engine speed on the pretrained-architecture ResNet-20, as ratios against the float model.

Measures in one run, on the same images and threads:
  * float32 forward of the float model (the baseline, time F),
  * the spike engine at T = 4 and 8 (time S; ratio S / (T F): cost per simulated step vs one float pass),
  * the integer engine at T = 4 and 8 (time I; ratio I / F).
Weights are random (speed does not depend on them) unless --weights is given; images are random
uint8 unless --data-dir is given. Each timing is the best of --repeats runs, in wall-clock seconds or,
with --clock cpu, in CPU seconds of this process (steadier on a machine shared with other jobs).

    python benchmarks/engines.py [--images 512] [--batch-size 64] [--repeats 3] [--threads N] [--clock wall|cpu]
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

import radixsnn as rs
from radixsnn.core.engines import run_integer, run_spikes
from radixsnn.core.inputs import normalize
from radixsnn.data import load_cifar
from radixsnn.models import model_config


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}


def best_time(fn, batches, repeats, clock):
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        for xb in batches:
            fn(xb)
        best = min(best, clock() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--time-steps", default="4,8")
    ap.add_argument("--clock", choices=sorted(CLOCK), default="wall")
    args = ap.parse_args()
    clock = CLOCK[args.clock]
    if args.threads:
        import numba

        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = rs.create_model(args.model, weights=args.weights).eval()
    config = model_config(args.model)
    if args.data_dir:
        images = load_cifar("cifar10", args.data_dir, train=False)[0][: args.images]
    else:
        images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8)
    batches = list(images.split(args.batch_size))
    with torch.no_grad():
        norm = [normalize(b, config.mean, config.std) for b in batches]
        f = best_time(model, norm, args.repeats, clock)
    print(f"# {args.model}, {len(images)} images, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.clock} clock")
    print(f"float32 forward: {f:.3f} s ({len(images) / f:.0f} img/s)")
    print("| T | spike engine s | spikes / (T x float) | integer engine s | integer / float |")
    print("|---|---|---|---|---|")
    for T in [int(t) for t in args.time_steps.split(",")]:
        qann = rs.quantize(model, T)
        qann.calibrate(images[:256], progress=False)
        snn = qann.to_snn()
        s = best_time(lambda xb: run_spikes(snn, xb), batches, args.repeats, clock)
        i = best_time(lambda xb: run_integer(snn, xb), batches, args.repeats, clock)
        print(f"| {T} | {s:.3f} | {s / (T * f):.2f} | {i:.3f} | {i / f:.2f} |")


if __name__ == "__main__":
    main()
