"""Engine speed on the pretrained-architecture ResNet-20, as ratios against the float model.

Measures in one run, on the same images and threads:
  * float32 forward of the float model (the baseline, time F),
  * the spike engine at T = 4 and 8 (time S; ratio S / (T F): cost per simulated step vs one float pass),
  * the integer engine at T = 4 and 8 (time I; ratio I / F),
  * the onnx engine (the integer network exported to ONNX, run by onnxruntime with as many threads;
    time O, ratio O / F; the session is built before the clock starts), with how many layers took the
    one-QLinearConv lowering (radixsnn.core.onnx_export); needs radixsnn[onnx].
Weights are random (speed does not depend on them) unless --weights is given; images are random
uint8 unless --data-dir is given. Each timing is the best of --repeats runs, in wall-clock seconds or,
with --clock cpu, in CPU seconds of this process (steadier on a machine shared with other jobs).

    python benchmarks/engines.py [--model resnet20] [--weights FILE] [--images 512] [--batch-size 64]
                                 [--repeats 3] [--threads N] [--time-steps 4,8] [--weight-bits 8] [--clock wall|cpu]
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

import radixsnn as rs
from radixsnn.core.engines import run_integer, run_spikes
from radixsnn.core.inputs import normalize
from radixsnn.core.onnx_export import plan, run_onnx
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
    ap.add_argument("--model", default="resnet20", help="registered model (default resnet20)")
    ap.add_argument("--weights", default=None, help="its checkpoint (default: random weights)")
    ap.add_argument("--data-dir", default=None, help="CIFAR folder: real test images (default: random pixels)")
    ap.add_argument("--images", type=int, default=512, help="images timed (default 512)")
    ap.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs (default 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch, numba and onnxruntime threads (default torch's)")
    ap.add_argument("--time-steps", default="4,8", help="comma-separated T values (default 4,8)")
    ap.add_argument("--weight-bits", type=int, default=8, help="weight bits of the SNNs (default 8)")
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
    print(f"# {args.model}, {args.weight_bits}-bit weights, {len(images)} images, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.clock} clock")
    print(f"float32 forward: {f:.3f} s ({len(images) / f:.0f} img/s)")
    print("| T | spike engine s | spikes / (T x float) | integer engine s | integer / float | onnx engine s | onnx / float "
          "| qlinear layers |")
    print("|---|---|---|---|---|---|---|---|")
    for T in [int(t) for t in args.time_steps.split(",")]:
        qann = rs.quantize(model, T, weight_bits=args.weight_bits)
        qann.calibrate(images[:256], progress=False)
        snn = qann.to_snn()
        s = best_time(lambda xb: run_spikes(snn, xb), batches, args.repeats, clock)
        i = best_time(lambda xb: run_integer(snn, xb), batches, args.repeats, clock)
        run_onnx(snn, batches[0])  # builds the session
        o = best_time(lambda xb: run_onnx(snn, xb), batches, args.repeats, clock)
        lowerings = plan(snn)
        fast = sum(low.lowering in ("qlinear", "two-stage") for low in lowerings)
        print(f"| {T} | {s:.3f} | {s / (T * f):.2f} | {i:.3f} | {i / f:.2f} | {o:.3f} | {o / f:.2f} | "
              f"{fast} of {len(lowerings) - 1} |")


if __name__ == "__main__":
    main()
