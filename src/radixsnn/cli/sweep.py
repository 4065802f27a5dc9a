"""``radixsnn sweep``: accuracy and efficiency of radix SNNs against T and weight width (paper Fig. 4)."""
from __future__ import annotations

from pathlib import Path

import torch

from radixsnn.cli.options import (
    add_model_args,
    add_progress_arg,
    add_weight_grid_args,
    int_list,
    load_float_model,
    load_test_images,
    model_preprocess,
    nonnegative_int,
    positive_float,
    positive_int,
    recorded_options,
)
from radixsnn.core.qann import ACT_SCALES, DEFAULT_ACT_SCALE, DEFAULT_SHIFT, SHIFTS
from radixsnn.core.quant import ActQuant, Calibration, WeightQuant
from radixsnn.data import augmentation_for, calibration_images, open_split, split_images
from radixsnn.errors import ConfigError
from radixsnn.experiments.sweep import add_results, reusable_rows, rows_from_results, sweep, write_csv
from radixsnn.models.weights import file_sha256
from radixsnn.outputs import check_folder, write_json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="accuracy and efficiency of radix SNNs vs time steps and weight bits (paper Fig. 4)",
        description=(
            "Convert the float network at every T and weight width (post-training, and optionally after a short "
            "quantization-aware fine-tuning), evaluate each SNN, and write sweep.csv, sweep.json and sweep.png "
            "to --out. Efficiency ~ 1 / (operations x weight bits), relative to the most efficient point. --points adds "
            "SNNs evaluated elsewhere (fine-tuned ones, per-layer T from radixsnn search) to the table and the figure."
        ),
    )
    add_model_args(p, images_default=2000)
    p.set_defaults(batch_size=250)
    p.add_argument("--time-steps", type=int_list, default=list(range(2, 11)), help="T values (default 2..10)")
    p.add_argument("--weight-bits", type=int_list, default=[8, 3], help="weight widths (default 8,3)")
    p.add_argument("--calib", default="mse", help="activation calibration: 'mse' (default) or 'percentile:P'")
    p.add_argument("--act-scale", choices=ACT_SCALES, default=DEFAULT_ACT_SCALE,
                   help=f"one activation scale per output channel or per layer; auto = per channel when T < weight bits, else per layer (default {DEFAULT_ACT_SCALE})")
    p.add_argument("--shift", choices=SHIFTS, default=DEFAULT_SHIFT,
                   help=f"one shift dT per output channel or per layer (default {DEFAULT_SHIFT})")
    add_weight_grid_args(p)
    p.add_argument("--calib-images", type=positive_int, default=1024, help="training images for calibration (default 1024)")
    p.add_argument("--finetune-steps", type=nonnegative_int, default=0,
                   help="also fine-tune every point for this many SGD steps (STE) before evaluating (default 0: off)")
    p.add_argument("--finetune-epochs", type=positive_float, default=None,
                   help="alternative to --finetune-steps: passes over the --train-images subset")
    p.add_argument("--train-images", type=positive_int, default=10000,
                   help="size of the training subset used for fine-tuning (default 10000, drawn with --seed)")
    p.add_argument("--finetune-batch", type=positive_int, default=64, help="fine-tuning batch size (default 64)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="fine-tuning learning rate, SGD momentum 0.9 (default 0.001)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the calibration and training-subset draws (default 0)")
    p.add_argument("--points", nargs="+", metavar="RESULTS.json", default=[],
                   help="evaluation results to add to the table and figure: finetune's OUT/eval.json (fine-tuned) or "
                        "'radixsnn evaluate --json' of a per-layer-T SNN (drawn at the uniform T of equal operations); "
                        "each must show SNN == QANN on every image")
    p.add_argument("--from", dest="reuse", metavar="SWEEP.json", default=None,
                   help="an earlier sweep's sweep.json: its points made with the same settings (model, weights by "
                        "sha256, data, images, calibration, scales, seed; fine-tuned points also the fine-tuning "
                        "options) are copied instead of computed again; settings that differ are an error")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    out = check_folder(args.out, "out")
    for t in args.time_steps:
        ActQuant(t)
    for b in args.weight_bits:
        WeightQuant(b)
    if args.finetune_epochs is not None and args.finetune_steps:
        raise ConfigError("finetune_epochs", "and --finetune-steps exclude each other: give one")
    if args.finetune_steps < 0:
        raise ConfigError("finetune_steps", f"must not be negative, got {args.finetune_steps}")
    if args.finetune_epochs is not None and not args.finetune_epochs > 0:
        raise ConfigError("finetune_epochs", f"must be positive, got {args.finetune_epochs}")
    if args.finetune_batch < 1:
        raise ConfigError("finetune_batch", f"must be at least 1, got {args.finetune_batch}")
    if not args.lr > 0:
        raise ConfigError("lr", f"must be positive, got {args.lr}")
    Calibration.parse(args.calib)
    results = rows_from_results(args.points, args.model, args.dataset)  # read and checked before any work
    if any(r["mode"] == "per-layer T" for r in results) and len(set(args.time_steps)) < 2:
        raise ConfigError("time_steps", "need at least two values to place a per-layer point (--points)")
    model = load_float_model(args)
    # file names only: the results stay meaningful when the folders move
    config = recorded_options(args, "data_dir", "out", "reuse")
    config["weights"] = Path(args.weights).name
    config["weights_sha256"] = file_sha256(args.weights)
    config["points"] = [str(p) for p in args.points]
    reuse = None
    if args.reuse is not None:  # read and checked before any point is computed
        reuse = reusable_rows(args.reuse, config)
        config["from"] = str(args.reuse)
    preprocess = model_preprocess(model, args)
    images, labels = load_test_images(args, preprocess)
    steps = args.finetune_steps
    train_x = train_y = None
    if steps or args.finetune_epochs is not None:
        if args.train_images < 1:
            raise ConfigError("train_images", f"must be at least 1, got {args.train_images}")
        train = open_split(args.dataset, args.data_dir, train=True, preprocess=preprocess)
        idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed + 1))[: args.train_images]
        train_x, train_y = split_images(train, args.workers)[idx], train.targets[idx]
        if args.finetune_epochs is not None:
            steps = max(1, round(args.finetune_epochs * len(train_x) / args.finetune_batch))
    calib = calibration_images(args.dataset, args.data_dir, args.calib_images, args.seed, preprocess=preprocess, workers=args.workers)
    rows = sweep(model, images, labels, calib, args.time_steps, args.weight_bits, steps, train_x, train_y,
                 batch_size=args.batch_size, finetune_batch=args.finetune_batch, lr=args.lr, calib=args.calib,
                 augment=augmentation_for(args.dataset), seed=args.seed, act_scale=args.act_scale, shift=args.shift,
                 weight_grid=args.weight_grid, gains=args.gains, reuse=reuse, progress=not args.no_progress)
    if reuse is not None:
        copied = sum(r.get("source") is not None for r in rows)
        print(f"{copied} of {len(rows)} rows copied from {args.reuse}")
    rows = add_results(rows, results)
    write_csv(rows, out / "sweep.csv")
    write_json(out / "sweep.json", {"config": config, "images": len(images), "finetune_steps": steps, "rows": rows},
               "out", indent=1)
    if not args.no_plot:
        from radixsnn.experiments.plotting import plot_sweep

        plot_sweep(rows, out / "sweep.png", f"{args.model}, {len(images)} {args.dataset} test images")
    print(f"{'bits':>4} {'T':>3} {'mode':<14} {'accuracy':>9} {'agree':>6} {'ops_graph':>10} {'efficiency':>10}")
    for r in rows:
        print(f"{r['weight_bits']:>4} {r.get('equivalent_time_steps', r['time_steps']):>3.3g} {r['mode']:<14} {100 * r['accuracy']:>8.2f}% "
              f"{100 * r['agreement']:>5.1f}% {r['ops_graph']:>10.4g} {r['efficiency']:>10.3f}")
    print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.json'}" + ("" if args.no_plot else f", {out / 'sweep.png'}"))
    return 0
