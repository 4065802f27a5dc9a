"""``radixsnn evaluate``: run an SNN file on the test set with the spike, integer or onnx engine."""
from __future__ import annotations

from pathlib import Path

from radixsnn.cli.options import add_data_args, add_preprocess_args, add_progress_arg, channel_steps_text, positive_int
from radixsnn.core.engines import ENGINES
from radixsnn.core.evaluation import evaluate, merge_evaluations
from radixsnn.core.onnx_export import require_onnx
from radixsnn.core.snn import IntegerSNN
from radixsnn.data import ALL_DATASETS, Preprocess, TensorImages, first_images, iterate_batches, num_classes, open_split, preprocess_of
from radixsnn.errors import ConfigError, ConversionError
from radixsnn.models import create_model, list_models
from radixsnn.models.weights import file_sha256
from radixsnn.outputs import check_file, write_json
from radixsnn.training.runtime import run_in_group


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="simulate an SNN file on test images and check it against its quantized network",
        description="Run the spike engine (every time step of every neuron), the integer engine or the onnx engine "
        "(the integer network exported to ONNX, run by onnxruntime; needs radixsnn[onnx]) over the test "
        "set; report accuracy, the QANN's and float model's accuracy, exact agreement with the QANN, spikes and "
        "operations.",
    )
    p.add_argument("file", help=".snn file written by convert or finetune")
    add_data_args(p, default=None)
    add_preprocess_args(p, "the file's")
    p.add_argument("--engine", default="spikes", choices=ENGINES, help="spikes (default), integer or onnx")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N", help="evaluate N test images only: the first N (of a folder, N spread evenly over it)")
    p.add_argument("--batch-size", type=positive_int, default=250, help="images per batch (default 250)")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:i (default cpu)")
    p.add_argument("--no-float", action="store_true", help="skip the float model even when its weights are found")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON")
    add_progress_arg(p)
    p.set_defaults(func=run)


def float_model_of(snn: IntegerSNN) -> tuple[object, str]:
    """``(model, status)``: the float model recorded in the SNN's metadata, loaded only when its weights
    file is still there and its SHA-256 is the one recorded at conversion; otherwise ``None`` and why."""
    meta = snn.metadata
    path, recorded = meta.get("weights"), meta.get("weights_sha256")
    if not isinstance(meta.get("model"), str) or not isinstance(path, str) or not isinstance(recorded, str):
        return None, "not verified: the file records no float model and checksum"
    if meta["model"] not in list_models():
        return None, f"not verified: {meta['model']!r} is not a registered model"
    if not Path(path).is_file():
        return None, f"not verified: {path} is gone"
    if file_sha256(path) != recorded:
        return None, f"not verified: {path} has changed since the conversion (SHA-256 differs)"
    classes = meta.get("num_classes", snn.graph.output.channels)
    return create_model(meta["model"], num_classes=classes, weights=path), "SHA-256 verified"


def file_preprocess(snn: IntegerSNN, args) -> Preprocess:
    """How folder images become the SNN's input: as recorded at conversion (an older file: resize and crop to
    its input, bilinear), ``--crop-pct`` and ``--interpolation`` overriding it."""
    recorded = snn.metadata.get("preprocess")
    base = Preprocess.from_dict(recorded) if recorded is not None else Preprocess(tuple(snn.graph.input.shape))
    if list(base.input_shape) != list(snn.graph.input.shape):
        raise ConfigError("preprocess", f"recorded in {args.file} crops to {list(base.input_shape)}, but the SNN takes {snn.graph.input.shape}")
    return preprocess_of(base, None, args.crop_pct, args.interpolation)


def run(args) -> int:
    if args.limit is not None and args.limit < 1:
        raise ConfigError("limit", f"must be at least 1, got {args.limit}")
    if args.batch_size < 1:
        raise ConfigError("batch_size", f"must be at least 1, got {args.batch_size}")
    if args.json:
        check_file(args.json, "json")
    if args.engine == "onnx":
        require_onnx()
    return run_in_group(args.device, lambda runtime: _run(args, runtime))


def _run(args, runtime) -> int:
    snn = IntegerSNN.load(args.file)
    dataset = args.dataset or snn.metadata.get("dataset", "cifar10")
    if dataset not in ALL_DATASETS:
        raise ConfigError("dataset", f"{dataset!r} (recorded in {args.file}) is not one of {', '.join(ALL_DATASETS)}")
    classes = num_classes(dataset, args.data_dir)
    if classes != snn.graph.output.channels:
        raise ConfigError("dataset", f"{dataset} has {classes} classes but {args.file} has {snn.graph.output.channels} outputs")
    split = open_split(dataset, args.data_dir, train=False, preprocess=file_preprocess(snn, args))
    recorded = snn.metadata.get("classes")
    if dataset == "folder" and isinstance(recorded, list) and list(split.classes) != recorded:
        differ = next(f"{a!r} where {args.file} has {b!r}" for a, b in zip(split.classes, recorded) if a != b)
        raise ConfigError("data_dir", f"{split.root} classes differ from those the SNN was converted with: {differ}")
    if isinstance(split, TensorImages) and list(split.images.shape[1:]) != snn.graph.input.shape:
        raise ConfigError("dataset", f"{dataset} images are {list(split.images.shape[1:])}, {args.file} takes {snn.graph.input.shape}")
    chosen = first_images(split, args.limit)
    if len(chosen) < runtime.world_size:
        raise ConfigError("limit", f"{len(chosen)} images cannot be shared among {runtime.world_size} processes")
    share = chosen[runtime.rank::runtime.world_size]  # under torchrun: this process's images
    float_model, float_status = (None, "skipped (--no-float)") if args.no_float else float_model_of(snn)
    batches = iterate_batches(split, share, args.batch_size, args.workers)
    res = evaluate(snn, batches, None, args.engine, float_model=float_model, batch_size=args.batch_size,
                   device=runtime.device, total=len(share), progress=runtime.is_main and not args.no_progress)
    if runtime.distributed:
        res = merge_evaluations(snn, res, runtime.all_reduce_sum)
    res["file"] = str(args.file)
    res["dataset"] = dataset
    res["fp_check"] = float_status
    res["processes"] = runtime.world_size
    if runtime.is_main:
        print(summary(res))
        if args.json:
            write_json(args.json, res, "json")
    if res["agreement"] is not None and res["agreement"] != 1.0:
        differ = round((1 - res["agreement"]) * res["images"])
        raise ConversionError(f"exactness broken: the SNN's logits differ from its QANN's on {differ} of {res['images']} "
                              f"images ({args.file} is corrupt or was not made by this radixsnn)")
    return 0


def summary(res: dict) -> str:
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f} %"

    rows = [
        ("images", res["images"]),
        ("engine", res["engine"]),
        ("time steps T", _with_layers(res["time_steps"], res["layer_time_steps"])),
        *([("time steps per channel", channel_steps_text(res["channel_time_steps"]))] if res.get("channel_time_steps") else []),
        ("weight bits", _with_layers(res["weight_bits"], res["layer_weight_bits"])),
        ("SNN accuracy", pct(res["accuracy"])),
        ("QANN accuracy", pct(res["qann_accuracy"])),
        ("float accuracy", pct(res["fp_accuracy"]) if res["fp_accuracy"] is not None else f"n/a ({res['fp_check']})"),
        ("SNN == QANN (exact)", pct(res["agreement"]) if res["agreement"] is not None else "not checked: the file carries no QANN"),
        ("ops_graph / image (Eq. 24)", f"{res['ops_graph']:.3e}"),
    ]
    if res.get("spikes") is not None:
        rows.append(("spikes / image", f"{res['spikes_per_image']:.4g}"))
        rows.append(("sops / image (measured)", f"{res['sops_per_image']:.4g}"))
    rows.append(("engine seconds", f"{res['seconds']:.1f}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _with_layers(default: int, layers: dict) -> str:
    """``6``, or ``6 (layer3_2_conv2=3, ...)`` where layers differ from the default."""
    return str(default) if not layers else f"{default} ({', '.join(f'{k}={v}' for k, v in layers.items())})"
