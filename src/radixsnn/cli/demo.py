"""``radixsnn demo``: the whole pipeline in a few minutes on a laptop CPU (:mod:`radixsnn.experiments.demo`)."""
from __future__ import annotations

import torch

from radixsnn.cli.options import add_progress_arg, nonnegative_int, positive_int
from radixsnn.errors import ConfigError
from radixsnn.experiments.demo import MODELS_ENV, PLAN, PRETRAINED, DemoResult, run_demo

__all__ = ["PLAN", "register", "run", "summary"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the whole pipeline in a few minutes on a CPU: float net -> QAT -> radix SNN -> exact check",
        description=(
            "Run the pipeline end to end on a small scale: pick the data (CIFAR-10 if found, else scikit-learn's "
            "digits), take the pretrained ResNet-20 or train one briefly, fine-tune its T-step QANN, convert it to "
            "a radix SNN, simulate the spikes on test images, check SNN == QANN exactly and print a summary."
        ),
    )
    p.add_argument("--time-steps", "-T", type=int, default=4, help="time steps T of the SNN (default 4)")
    p.add_argument("--weights", default=None, help=f"float CIFAR-10 ResNet-20 weights (default ${MODELS_ENV}/{PRETRAINED} if present)")
    p.add_argument("--data-dir", default=None, help="dataset folder (default $RADIXSNN_DATA_DIR, else ~/.cache/radixsnn/data)")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 if it is not found (else the digits are used)")
    p.add_argument("--images", type=positive_int, default=None, metavar="N", help="test images to simulate (default 500 CIFAR-10 / 300 digits)")
    p.add_argument("--out", default="runs/demo", help="folder for the demo's runs (default runs/demo; a rerun reuses them)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:INDEX (default auto)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of every random choice (default 0)")
    p.add_argument(
        "--threads", type=positive_int, default=1,
        help="CPU threads for PyTorch (default 1: the demo's small batches gain little from more, "
        "and on a busy machine extra threads can make it many times slower)",
    )
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.threads < 1:
        raise ConfigError("threads", f"must be at least 1, got {args.threads}")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        result = run_demo(time_steps=args.time_steps, weights=args.weights, data_dir=args.data_dir,
                          download=args.download, images=args.images, out=args.out, device=args.device,
                          seed=args.seed, progress=not args.no_progress)
    finally:
        torch.set_num_threads(threads)
    print(summary(result))
    return 0


def summary(demo: DemoResult) -> str:
    """A Table-2-style summary of the demo's SNN."""

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}%"

    result = demo.evaluation
    cal = demo.calibrated.get("test_acc")
    rows = [
        ("model", f"ResNet-20 ({demo.how})"),
        ("dataset", f"{demo.dataset}, first {result['images']} test images"),
        ("time steps T / weight bits", f"{result['time_steps']} / {result['weight_bits']}"),
        ("float accuracy", pct(result["fp_accuracy"])),
        ("QANN accuracy, calibrated only", "n/a" if cal is None else f"{cal:.2f}%"),
        ("QANN accuracy, fine-tuned", pct(result["qann_accuracy"])),
        ("SNN accuracy (spike simulation)", pct(result["accuracy"])),
        ("SNN logits == QANN logits", f"{pct(result['agreement'])} of images"),
        ("ops_graph / image (Eq. 24)", f"{result['ops_graph']:.3e}"),
        ("spikes / image", "n/a" if result.get("spikes_per_image") is None else f"{result['spikes_per_image']:.4g}"),
        ("demo wall time", f"{demo.seconds:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 40)
    return "\n".join(["", line, "radix SNN demo summary", line] + [f"{k:<{width}}  {v}" for k, v in rows] + [line])
