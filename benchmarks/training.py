"""Training speed with and without bf16 autocast, as ratios measured in the same run.

For each model, the library's own :class:`~radixsnn.training.trainer.Trainer` (the loop of
`radixsnn train` and `radixsnn finetune`) runs ``--steps`` optimizer steps on random uint8 images,
once in float32 and once with ``amp="bf16"`` (autocast of the training passes), after ``--warmup``
untimed steps each; the float network is channels_last in both, as `radixsnn train` runs it:

* ``train``: the float network, cross-entropy (what `radixsnn train` does per step);
* ``finetune``: its calibrated QANN at ``--time-steps``, distilled from the float network (what
  `radixsnn finetune` does per step with its defaults);
* ``plain``: the float network's step written out by hand (normalize, channels_last,
  autocast, forward, cross-entropy, backward, SGD) without the trainer: the baseline that shows what
  the trainer's loop itself costs;
* ``nchw``: the same hand-written step with the network and its input in the default (NCHW) memory
  layout instead of channels_last: what the layout is worth in each precision.

Printed: images/s of each and the ratio bf16 / float32. Weights are random (speed does not depend
on them); nothing is read from disk. First, the CPU's own ceiling for those ratios: the throughput of
one large matrix product in bf16 against float32 (compute-bound, so a training step, whose
convolutions are the same multiply-adds, can at best gain as much).

    python benchmarks/training.py [--models vgg16,resnet20] [--kinds train,finetune,plain,nchw] [--steps 20]
                                  [--warmup 3] [--batch-size 128] [--time-steps 4] [--threads N]
                                  [--matmul-size 2048] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from functools import partial

import torch

import radixsnn as rs
from radixsnn.core.inputs import normalize
from radixsnn.data.loader import DeviceLoader
from radixsnn.models import model_config
from radixsnn.training.qat import float_teacher
from radixsnn.training.runtime import Runtime
from radixsnn.training.trainer import TrainConfig, Trainer, pixels_as_float


def steps_per_second(make_trainer, steps: int, warmup: int) -> float:
    """Optimizer steps per second of one ``train_epoch`` of ``steps`` steps after ``warmup`` others."""
    trainer = make_trainer(warmup)
    trainer.train_epoch(0)
    trainer = make_trainer(steps)
    t0 = time.perf_counter()
    trainer.train_epoch(1)
    return steps / (time.perf_counter() - t0)


KINDS = ("train", "finetune", "plain", "nchw")


def plain_rate(model, cfg, amp: str | None, args, images, labels, layout=torch.channels_last) -> float:
    """Images per second of a hand-written float training step in memory ``layout`` (the ``plain`` and ``nchw`` kinds)."""
    model = model.to(memory_format=layout)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    b = args.batch_size

    def step(i: int) -> None:
        x = normalize(images[i * b : (i + 1) * b], cfg.mean, cfg.std)
        x = x.contiguous(memory_format=layout)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp is not None):
            loss = torch.nn.functional.cross_entropy(model(x).float(), labels[i * b : (i + 1) * b])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for i in range(args.warmup):
        step(i)
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(i)
    return args.steps * b / (time.perf_counter() - t0)


def matmul_flops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a ``size`` x ``size`` by ``size`` x ``size`` matrix product in ``dtype`` (best of ``repeats``)."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=g).to(dtype) for _ in range(2))
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def measure(name: str, kind: str, amp: str | None, args, images, labels) -> float:
    """Images per second of ``kind`` (one of :data:`KINDS`) training of model ``name``."""
    runtime = Runtime(torch.device("cpu"))
    cfg = model_config(name)
    model = rs.create_model(name)
    if kind in ("plain", "nchw"):
        layout = torch.channels_last if kind == "plain" else torch.contiguous_format
        return plain_rate(model, cfg, amp, args, images, labels, layout)

    def make_trainer(steps: int) -> Trainer:
        loader = DeviceLoader(images[: steps * args.batch_size], labels[: steps * args.batch_size],
                              args.batch_size, train=True)
        if kind == "train":
            return Trainer(model, TrainConfig(epochs=2, batch_size=args.batch_size), runtime, None,
                           train_loader=loader, test_loader=None, preprocess=partial(normalize, mean=cfg.mean, std=cfg.std),
                           meta={}, amp=amp, channels_last=True, progress=False)
        return Trainer(qann, TrainConfig(epochs=2, batch_size=args.batch_size, lr=1e-3, clip_grad=1.0, distill=1.0),
                       runtime, None, train_loader=loader, test_loader=None, preprocess=pixels_as_float, meta={},
                       amp=amp, progress=False, teacher=teacher)

    if kind == "finetune":
        qann = rs.quantize(model.eval(), args.time_steps)
        qann.calibrate(images[:256], progress=False)
        teacher = float_teacher(model, cfg.mean, cfg.std, runtime.device)
    return steps_per_second(make_trainer, args.steps, args.warmup) * args.batch_size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="vgg16,resnet20")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated, of: " + ", ".join(KINDS))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--time-steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--matmul-size", type=int, default=2048, help="side of the square matrices of the ceiling (default 2048)")
    p.add_argument("--json", default=None, help="also write the rows as JSON")
    args = p.parse_args()
    unknown = sorted(set(args.kinds.split(",")) - set(KINDS))
    if unknown:
        p.error(f"--kinds: unknown {', '.join(unknown)} (choose from {', '.join(KINDS)})")
    if args.threads:
        torch.set_num_threads(args.threads)
    n = max(args.steps, args.warmup) * args.batch_size
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"batch {args.batch_size}, {args.steps} timed steps")
    m = args.matmul_size
    f32, bf16 = matmul_flops(torch.float32, m), matmul_flops(torch.bfloat16, m)
    ceiling = {"size": m, "float32_gflops": f32 / 1e9, "bf16_gflops": bf16 / 1e9, "ratio": bf16 / f32}
    print(f"matrix product {m}^3: float32 {f32 / 1e9:.1f} GFLOP/s, bf16 {bf16 / 1e9:.1f} GFLOP/s, "
          f"{bf16 / f32:.2f}x (the ceiling of the ratios below)")
    print(f"{'model':<10} {'kind':<9} {'float32 img/s':>14} {'bf16 img/s':>11} {'bf16 / float32':>15}")
    rows = []
    for name in args.models.split(","):
        for kind in args.kinds.split(","):
            f32 = measure(name, kind, None, args, images, labels)
            bf16 = measure(name, kind, "bf16", args, images, labels)
            rows.append({"model": name, "kind": kind, "float32": f32, "bf16": bf16, "ratio": bf16 / f32})
            print(f"{name:<10} {kind:<9} {f32:>14.1f} {bf16:>11.1f} {bf16 / f32:>14.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "matmul": ceiling, "rows": rows},
                      f, indent=1)


if __name__ == "__main__":
    main()
