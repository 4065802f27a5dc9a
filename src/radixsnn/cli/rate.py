"""``radixsnn rate``: the rate-coded integrate-and-fire conversion baseline, at many time steps in one pass."""
from __future__ import annotations

from pathlib import Path

from radixsnn.cli.options import add_model_args, add_progress_arg, below_one, int_list, load_float_model, load_test_images, model_preprocess, percentile, positive_int
from radixsnn.data import open_split, split_images
from radixsnn.errors import ConfigError
from radixsnn.experiments.rate import MAX_RATE_STEPS, evaluate_rate
from radixsnn.outputs import check_file, write_json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "rate",
        help="baseline: standard rate-coded IF conversion, accuracy at many time steps",
        description=(
            "Convert the float network to a rate-coded integrate-and-fire SNN (BatchNorm folded, reset by "
            "subtraction, thresholds balanced to a percentile of each ReLU's non-zero outputs on training images, "
            "analog input, accumulated output) and report accuracy, spikes and operations per image at every "
            "requested T, from one simulation to the largest T."
        ),
    )
    add_model_args(p, images_default=1000)
    p.add_argument("--time-steps", type=int_list, default=[8, 16, 32, 64, 128, 256],
                   help="T values to report, e.g. 8,16,32 or 8..12 (default 8,16,32,64,128,256)")
    p.add_argument("--percentile", type=percentile, default=99.99,
                   help="threshold = this percentile of a ReLU's non-zero outputs (default 99.99; 100 = maximum)")
    p.add_argument("--calib-images", type=positive_int, default=256,
                   help="training images used to set the thresholds (default 256, the first ones of the split)")
    p.add_argument("--init-membrane", type=below_one, default=0.0,
                   help="initial membrane potential as a fraction of the threshold (default 0; 0.5 rounds instead of floors)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results to this JSON file")
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.json:
        check_file(args.json, "json")
    if args.time_steps[-1] > MAX_RATE_STEPS:
        raise ConfigError("time_steps", f"must lie in 1..{MAX_RATE_STEPS}, got up to {args.time_steps[-1]}")
    model = load_float_model(args)
    preprocess = model_preprocess(model, args)
    images, labels = load_test_images(args, preprocess)
    calib = split_images(open_split(args.dataset, args.data_dir, train=True, preprocess=preprocess), args.workers)
    summary = evaluate_rate(
        model, images, labels, args.time_steps, calib[: args.calib_images],
        percentile=args.percentile, init_membrane=args.init_membrane, batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    print(f"float network: {100 * summary['fp_accuracy']:.2f}% on {summary['images']} images, "
          f"{summary['ann_ops_per_image']:.4g} MAC+add per image")
    print(f"{'T':>5} {'accuracy':>9} {'agreement':>9} {'spikes/img':>11} {'syn.ops/img':>12} {'input MAC/img':>13}")
    for r in summary["results"]:
        print(f"{r['time_steps']:>5} {100 * r['accuracy']:>8.2f}% {100 * r['agreement']:>8.2f}% "
              f"{r['spikes']:>11.4g} {r['synaptic_ops']:>12.4g} {r['input_macs']:>13.4g}")
    if args.json:
        summary.update(model=args.model, weights=Path(args.weights).name, dataset=args.dataset)
        write_json(args.json, summary, "json", indent=1)
        print(f"wrote {args.json}")
    return 0
