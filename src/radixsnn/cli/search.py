"""``radixsnn search``: per-layer time steps with the fewest operations within an accuracy budget."""
from __future__ import annotations

from pathlib import Path

from radixsnn.cli.options import (add_float_model_args, add_progress_arg, channel_steps_text, int_list, load_float_model, model_preprocess, nonnegative_int,
                                  positive_int, recorded_options)
from radixsnn.core.qann import ACT_SCALES, DEFAULT_ACT_SCALE
from radixsnn.data import open_split, split_images
from radixsnn.experiments.search import CHANNEL_LEVEL_STEP, GRANULARITIES, METHODS, SEARCH_DEFAULTS, check_search_options, search_time_steps
from radixsnn.outputs import check_folder, write_json

D = SEARCH_DEFAULTS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "search",
        help="choose per-layer time steps with the fewest operations within an accuracy budget",
        description=(
            "Lower the time steps from uniform --base while the accuracy on held-out TRAINING images stays within "
            "--budget points of it: by default every layer together, its channels sharing its steps (the channels "
            "whose quantization noise the next layers weigh least get the shorter trains), bisecting for the lowest "
            "level; or layer by layer, greedy by sensitivity (--method greedy). Then other training images "
            "(--verify-images) take the longest prefix of those lowerings that stays within --budget at --confidence "
            "(the test set is never used). Writes OUT/time_steps.json (for --time-steps of convert and finetune) and "
            "OUT/search.json."
        ),
    )
    add_float_model_args(p)
    p.add_argument("--base", type=positive_int, default=D["base"], help=f"the uniform T to compare with (default {D['base']})")
    p.add_argument("--candidates", type=int_list, default=D["candidates"],
                   help=f"smaller T a layer may take (default {','.join(map(str, D['candidates']))})")
    p.add_argument("--budget", type=float, default=D["budget"],
                   help=f"largest held-out accuracy loss against uniform --base, in points (default {D['budget']})")
    p.add_argument("--confidence", type=float, default=D["confidence"],
                   help=f"keep a lowering only if the one-sided upper bound of its loss on the verification images (with "
                        f"--verify-images 0: the held-out ones) at this confidence is within --budget; 0.5 = the measured "
                        f"loss itself (default {D['confidence']})")
    p.add_argument("--method", choices=METHODS, default=D["method"],
                   help="greedy = measure every move on the held-out images, keep it if it fits, else stop lowering that "
                        "layer; path = order all moves by the divergences alone, then bisect for the longest prefix "
                        "that fits (about log2 of the moves in measurements); level = lower every layer together (with "
                        "--granularity channel in eighths of a step, shared among each layer's channels) and bisect for the "
                        f"lowest level that fits (default {D['method']})")
    p.add_argument("--granularity", choices=GRANULARITIES, default=D["granularity"],
                   help="layer = one T per layer; channel = an average T per layer, lowered in steps of "
                        f"{CHANNEL_LEVEL_STEP:g} down to the smallest candidate, that the layer's channels share: channels "
                        "whose quantization noise the next layers weigh least get the shorter trains (per-channel "
                        f"time steps in the SNN) (default {D['granularity']})")
    p.add_argument("--holdout", type=positive_int, default=D["holdout"],
                   help=f"training images held out to measure accuracy on (default {D['holdout']})")
    p.add_argument("--verify-images", type=nonnegative_int, default=D["verify_images"],
                   help="further training images that verify the lowerings the held-out ones chose (those are biased low: "
                        "the search kept the lucky measurements); 0 = none, the held-out bound decides each lowering "
                        f"(default {D['verify_images']})")
    p.add_argument("--sensitivity-images", type=positive_int, default=D["sensitivity_images"],
                   help=f"of those, the first N measure each layer's sensitivity (default {D['sensitivity_images']})")
    p.add_argument("--calib-images", type=positive_int, default=D["calib_images"],
                   help=f"training images (outside the held-out ones) for calibration (default {D['calib_images']})")
    p.add_argument("--sops-images", type=nonnegative_int, default=D["sops_images"],
                   help=f"held-out images the spike engine measures synaptic operations on, 0 = skip (default {D['sops_images']})")
    p.add_argument("--weight-bits", type=positive_int, default=D["weight_bits"], help=f"weight width (default {D['weight_bits']})")
    p.add_argument("--act-scale", choices=ACT_SCALES, default=DEFAULT_ACT_SCALE,
                   help="activation scales per channel or per layer, resolved at --base for every layer; per channel with "
                        f"--granularity channel (default {DEFAULT_ACT_SCALE})")
    p.add_argument("--seed", type=nonnegative_int, default=D["seed"], help=f"seed of the held-out and calibration draws (default {D['seed']})")
    add_progress_arg(p)
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.set_defaults(func=run)


def run(args) -> int:
    out = check_folder(args.out, "out")
    check_search_options(args.base, args.candidates, args.budget, args.weight_bits, args.sensitivity_images, args.confidence, args.method,
                         args.granularity, args.act_scale)
    model = load_float_model(args)
    train = open_split(args.dataset, args.data_dir, train=True, preprocess=model_preprocess(model, args))
    images, labels = split_images(train, args.workers), train.targets
    result = search_time_steps(
        model, images, labels, base=args.base, candidates=args.candidates, budget=args.budget,
        confidence=args.confidence, method=args.method, holdout=args.holdout,
        sensitivity_images=args.sensitivity_images, calib_images=args.calib_images, weight_bits=args.weight_bits,
        seed=args.seed, sops_images=args.sops_images, verify_images=args.verify_images, granularity=args.granularity,
        act_scale=args.act_scale,
        progress=not args.no_progress,
    )
    config = recorded_options(args, "data_dir", "out")
    config["weights"] = Path(args.weights).name
    write_json(out / "time_steps.json", result["assignment"], "out", indent=1)
    write_json(out / "search.json", {"config": config, **result}, "out", indent=1)
    checked = result["verification"]
    bound = f"bound {100 * result['holdout_confidence']:g}%"
    header = f"{'assignment':<16} {'held-out acc':>12} {'loss':>6} {bound:>11}"
    if checked:
        header += f" {'verified acc':>12} {'loss':>6} {f'bound {100 * args.confidence:g}%':>11}"
    print(f"{header} {'ops_graph':>11} {'of base':>8}")
    base_ops = result["uniform"][0]["ops_graph"]
    rows = [*result["uniform"], {**result, "time_steps": None}]
    verified = [*checked["uniform"], checked] if checked else [None] * len(rows)
    for row, v in zip(rows, verified):
        name = f"per {result['granularity']}" if row["time_steps"] is None else f"uniform T={row['time_steps']}"
        line = f"{name:<16} {row['holdout_accuracy']:>11.2f}% {row['holdout_loss']:>6.2f} {row['loss_bound']:>11.2f}"
        if v is not None:
            line += f" {v['accuracy']:>11.2f}% {v['loss']:>6.2f} {v['loss_bound']:>11.2f}"
        print(f"{line} {row['ops_graph']:>11.4g} {row['ops_graph'] / base_ops:>8.3f}")
    sops = result["sops_per_image"]
    if sops:
        print(f"measured sops per image ({result['sops_images']} held-out images): per {result['granularity']} {sops['chosen']:.4g}, "
              f"uniform T={args.base} {sops['base']:.4g} ({sops['chosen'] / sops['base']:.3f})")
    chosen = {k: v for k, v in result["assignment"].items() if k != "default"}
    whole = {k: v for k, v in chosen.items() if not isinstance(v, list)}
    split = {k: v for k, v in chosen.items() if isinstance(v, list)}
    if whole or not split:
        print(f"T per layer (default {args.base}): " + (", ".join(f"{k}={v}" for k, v in whole.items()) or "none lowered"))
    if split:
        print(f"T per channel (default {args.base}): {channel_steps_text(split)}")
    print(f"wrote {out / 'time_steps.json'} (pass it as --time-steps) and {out / 'search.json'}")
    return 0
