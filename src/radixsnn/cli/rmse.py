"""``radixsnn rmse``: radix vs rate coding error on a network's real activations (paper Fig. 3)."""
from __future__ import annotations

from pathlib import Path

from radixsnn.cli.options import add_model_args, add_progress_arg, int_list, load_float_model, load_test_images, model_preprocess, percentile
from radixsnn.errors import ConfigError
from radixsnn.experiments.coding_error import coding_error, write_csv
from radixsnn.experiments.rate import MAX_RATE_STEPS
from radixsnn.outputs import check_folder, write_json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "rmse",
        help="coding error of radix vs rate spike trains on a network's ReLU activations (paper Fig. 3)",
        description=(
            "Run the float network on test images, scale each ReLU layer's outputs to [0, 1] by its maximum "
            "(or --percentile of its non-zero outputs, clipping above), and measure the RMSE and the extreme "
            "residuals of radix coding (T = 1..16) and rate coding (T = 1..256). Writes coding_error.csv, "
            "coding_error.json and coding_error.png to --out."
        ),
    )
    add_model_args(p, images_default=1000)
    p.add_argument("--percentile", type=percentile, default=100.0,
                   help="per-layer scale: this percentile of the non-zero outputs (default 100 = the maximum)")
    p.add_argument("--radix-steps", type=int_list, default=list(range(1, 17)), help="radix T values (default 1..16)")
    p.add_argument("--rate-steps", type=int_list, default=list(range(1, 257)), help="rate T values (default 1..256)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    out = check_folder(args.out, "out")
    if args.rate_steps[-1] > MAX_RATE_STEPS:
        raise ConfigError("rate_steps", f"must lie in 1..{MAX_RATE_STEPS}, got up to {args.rate_steps[-1]}")
    model = load_float_model(args)
    images, _ = load_test_images(args, model_preprocess(model, args))
    report = coding_error(model, images, args.radix_steps, args.rate_steps, args.percentile, args.batch_size,
                          progress=not args.no_progress)
    write_csv(report, out / "coding_error.csv")
    summary = report.to_dict()
    summary.update(model=args.model, weights=Path(args.weights).name, dataset=args.dataset)
    write_json(out / "coding_error.json", summary, "out", indent=1)
    if not args.no_plot:
        from radixsnn.experiments.plotting import plot_coding_error

        scale = "max" if args.percentile >= 100 else f"p{args.percentile:g}"
        title = f"{args.model}, {report.images} {args.dataset} test images, per-layer scale = {scale}"
        plot_coding_error(report.rows, out / "coding_error.png", title)
    claims = report.claims()
    print(f"{report.activations} activations from {report.images} images "
          f"({100 * report.zero_fraction:.1f}% zero, {100 * report.clipped_fraction:.3f}% clipped)")
    for t in (4, 8, 16):
        try:
            print(f"T={t:>2}: radix RMSE {report.rmse('radix', t):.3e}, rate RMSE {report.rmse('rate', t):.3e}")
        except KeyError:
            pass
    if claims["radix_vs_rate_T8_reduction"] is not None:
        print(f"T=8: radix RMSE is {100 * claims['radix_vs_rate_T8_reduction']:.1f}% below rate RMSE")
    if claims["radix_T16_over_rate_T256"] is not None:
        print(f"radix T=16 RMSE / rate T=256 RMSE = {claims['radix_T16_over_rate_T256']:.3e}")
    for t in (8, 16):
        match = claims[f"rate_steps_matching_radix_T{t}"]
        if match is not None:
            print(f"rate coding needs T={match} to reach the radix T={t} RMSE")
        elif any(r["coding"] == "radix" and r["time_steps"] == t for r in report.rows):
            print(f"no computed rate T reaches the radix T={t} RMSE")
    print(f"wrote {out / 'coding_error.csv'}, {out / 'coding_error.json'}"
          + ("" if args.no_plot else f", {out / 'coding_error.png'}"))
    return 0
