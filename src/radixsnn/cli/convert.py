"""``radixsnn convert``: post-training conversion of a float checkpoint into a radix SNN file."""
from __future__ import annotations

import time
from pathlib import Path

from radixsnn.cli.options import add_float_model_args, add_progress_arg, add_weight_grid_args, channel_steps_text, check_fits_dataset, layer_values, load_float_model, model_preprocess, nonnegative_int, positive_int, recorded_options
from radixsnn.core.convert import quantize
from radixsnn.core.qann import ACT_SCALES, DEFAULT_ACT_SCALE, DEFAULT_SHIFT, SHIFTS
from radixsnn.core.quant import ActQuant, Calibration, WeightQuant, check_each
from radixsnn.data import calibration_images, folder_classes
from radixsnn.models.weights import file_sha256
from radixsnn.outputs import check_file
from radixsnn.training.runtime import run_in_group


def register(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a trained float network into a radix SNN file (post-training)",
        description="Trace a float CNN, fold BatchNorm, calibrate T-bit activation scales on training images, "
        "and write the integer radix SNN (weights, biases, shifts, graph) as one safetensors file.",
    )
    add_float_model_args(p)
    p.add_argument("--time-steps", "-T", type=layer_values, required=True, metavar="T|default=T,LAYER=T,...|FILE.json",
                   help="T, the length of every spike train (1..16), or one per layer: a default and exceptions, "
                   "layers named as in the model (layer3.2.conv2) or the graph (layer3_2_conv2), or a JSON file of them")
    p.add_argument("--weight-bits", type=layer_values, default=8, metavar="B|default=B,LAYER=B,...|FILE.json",
                   help="signed integer weight width (default 8), or one per layer as for --time-steps")
    p.add_argument("--input-bits", type=int, default=8,
                   help="pixel train length: 8 = exact uint8 pixels (default), fewer = the top bits only")
    p.add_argument("--act-scale", choices=ACT_SCALES, default=DEFAULT_ACT_SCALE,
                   help=f"one activation scale per output channel or per layer; auto = per channel when T < weight bits, else per layer (default {DEFAULT_ACT_SCALE})")
    p.add_argument("--shift", choices=SHIFTS, default=DEFAULT_SHIFT,
                   help="one shift dT per output channel, each neuron's train delayed to keep the layer's aligned, "
                   f"or one per layer (default {DEFAULT_SHIFT})")
    add_weight_grid_args(p)
    p.add_argument("--calib", default="mse", help="calibration: 'mse' (default) or 'percentile:P', e.g. percentile:99.99")
    p.add_argument("--calib-images", type=positive_int, default=1024, help="training images used for calibration (default 1024)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the calibration-image draw (default 0)")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:i (default cpu)")
    p.add_argument("--out", required=True, help="output .snn file")
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    check_file(args.out, "out")
    check_each(args.time_steps, ActQuant)
    check_each(args.weight_bits, WeightQuant)
    Calibration.parse(args.calib)
    return run_in_group(args.device, lambda runtime: _run(args, runtime))


def _run(args, runtime) -> int:  # under torchrun: the processes share the calibration's float passes
    model = load_float_model(args)
    t0 = time.perf_counter()
    qann = quantize(model, args.time_steps, weight_bits=args.weight_bits, input_bits=args.input_bits,
                    act_scale=args.act_scale, shift=args.shift,
                    weight_grid=args.weight_grid, gains=args.gains).to(runtime.device)
    check_fits_dataset(qann.graph, args.dataset, args.data_dir)
    preprocess = model_preprocess(model, args, qann.graph.input.shape)
    calib = calibration_images(args.dataset, args.data_dir, args.calib_images, args.seed, preprocess=preprocess,
                               workers=args.workers)
    qann.calibrate(calib.to(runtime.device), method=args.calib, progress=runtime.is_main and not args.no_progress,
                   share=runtime)
    if not runtime.is_main:  # every process holds the same scales; the main one writes the file
        return 0
    metadata = {
        "model": args.model,
        "dataset": args.dataset,
        "num_classes": int(qann.graph.output.channels),
        "preprocess": preprocess.as_dict(),
        **({"classes": list(folder_classes(args.data_dir))} if args.dataset == "folder" else {}),
        "weights": str(Path(args.weights).resolve()),
        "weights_sha256": file_sha256(args.weights),
        "how": "post-training",
        "config": recorded_options(args),
    }
    snn = qann.to_snn(metadata)
    path = snn.save(args.out)  # atomic: an error while writing leaves any earlier file as it was
    print(describe(snn))
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB) in {time.perf_counter() - t0:.1f} s"
          + (f" ({runtime.world_size} processes)" if runtime.distributed else ""))
    return 0


def describe(snn) -> str:
    """A table of the SNN's layers: kind, shape, shift dT, weight range (a shortcut's gains ``m 2^k``: its
    weights ``m``), largest delay ``k`` of its delayed spikes, activation scale."""
    rows = [f"{'layer':<22} {'kind':<8} {'shape':<14} {'dT':>5} {'|w|max':>7} {'delay':>5} {'scale':>10}"]
    for node in snn.graph.nodes:
        dt = snn.delta_t.get(node.name, "")
        if isinstance(dt, list):  # one shift per channel: their range
            dt = f"{min(dt)}-{max(dt)}" if min(dt) != max(dt) else dt[0]
        wmax, delay = "", ""
        for t in node.terms:
            w, k = snn.split_gain(t.param) if t.op == "select" else (snn.weights[t.param], None)
            wmax = max(int(w.abs().max()), 0 if wmax == "" else wmax)
            if k is not None:
                delay = max(int(k.max()), 0 if delay == "" else delay)
        scale = snn.scales.get(node.name)
        scale = f"{float(scale.mean()):.4g}" if scale is not None else ""
        rows.append(f"{node.name:<22} {node.kind:<8} {'x'.join(map(str, node.shape)):<14} {dt!s:>5} {wmax!s:>7} {delay!s:>5} {scale:>10}")
    rows.append(f"T = {snn.time_steps}, weights {snn.weight_bits} bits, input {snn.input_bits} bits")
    for what, values in (("T", snn.layer_time_steps), ("weight bits", snn.layer_weight_bits)):
        if values:
            rows.append(f"{what} per layer: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    if snn.channel_time_steps:
        rows.append("T per channel: " + channel_steps_text(snn.channel_time_steps))
    return "\n".join(rows)
