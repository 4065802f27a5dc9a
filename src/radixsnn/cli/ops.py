"""``radixsnn ops``: MACs per layer, SNN and ANN operation counts, normalized latency and energy."""
from __future__ import annotations

from radixsnn.cli.options import json_object, shape3
from radixsnn.core.inputs import CONFIG_ATTRIBUTE
from radixsnn.core.ops import ANN_OPS_PER_MAC, count_macs, graph_ops
from radixsnn.core.quant import MAX_TIME_STEPS, ActQuant
from radixsnn.core.trace import trace_graph
from radixsnn.data import num_classes
from radixsnn.experiments.cost import HOROWITZ_45NM_PJ, REFERENCE_MODEL, cost_of, reference_operations
from radixsnn.experiments.report import format_count
from radixsnn.models import list_models, load_model
from radixsnn.outputs import check_file, write_json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ops",
        help="count MACs, SNN/ANN operations, latency and energy of a model (paper Tables 2-3)",
        description="Count a model's multiply-accumulates per layer and turn them into the paper's cost "
        "columns: SNN operations by the tables' rule (ops_table = MACs x T) and over the radix SNN's "
        "synapses (ops_graph, Eq. 24 with the 8-step pixel trains and the shortcut synapses), ANN effective "
        "operations (66 x MACs), latency normalized to the VGG-16 ANN, and energy per image with Horowitz "
        "45 nm figures.",
    )
    p.add_argument("--model", required=True, metavar="NAME|MODULE:FN|FILE.py:FN",
                   help=f"a registered architecture ({', '.join(list_models())}) or any model target, e.g. "
                   "torchvision.models:resnet50 (counted at its own input size)")
    p.add_argument("--model-args", type=json_object, metavar="JSON", help="keyword arguments of a callable --model, as JSON")
    p.add_argument("--input-shape", type=shape3, metavar="C,H,W", help="one input image's shape (default: the model's)")
    p.add_argument("--time-steps", "-T", type=int, required=True, help=f"time steps T of the radix SNN (1..{MAX_TIME_STEPS})")
    p.add_argument("--dataset", default="cifar10", choices=("cifar10", "cifar100"),
                   help="sets a registered model's number of classes and the latency reference, VGG-16 on it (default cifar10)")
    p.add_argument("--layers", default="all", choices=("all", "conv"),
                   help="count all conv/linear layers (default) or the convolutions only (ops_table, MACs)")
    p.add_argument("--summary", action="store_true", help="print the totals only, not the per-layer table")
    p.add_argument("--json", metavar="OUT", help="also write the counts to this JSON file")
    p.set_defaults(func=run)


def _mj(joules: float) -> str:
    return f"{joules * 1e3:.4g} mJ"


def run(args) -> int:
    if args.json:
        check_file(args.json, "json")
    ActQuant(args.time_steps)
    model = load_model(args.model, model_args=args.model_args, num_classes=num_classes(args.dataset))
    config = getattr(model, CONFIG_ATTRIBUTE, None)
    shape = tuple(args.input_shape or getattr(config, "input_shape", (3, 32, 32)))
    counted = count_macs(model, shape)
    layers = [layer for layer in counted.layers if args.layers == "all" or layer.kind == "conv"]
    cost = cost_of(args.model, counted.total if args.layers == "all" else counted.total_of(args.layers), args.time_steps,
                   args.dataset)
    T = args.time_steps
    mean = getattr(config, "mean", (0.0,) * shape[0])  # operation counts do not depend on the normalization
    std = getattr(config, "std", (1.0,) * shape[0])
    graph = trace_graph(model, shape, mean, std)[0]
    ops_graph = graph_ops(graph, T)
    classes = graph.output.channels

    data = f" on {args.dataset}" if args.model in list_models() else ""
    print(f"{args.model}{data} ({classes} classes), {'x'.join(map(str, shape))} input, T = {T}"
          + ("" if args.layers == "all" else ", convolutions only"))
    if not args.summary:
        print()
        print(f"{'layer':<28} {'kind':<6} {'fan-in':>7} {'neurons':>8} {'MACs':>10} {'synapses':>10} {'ops_table':>10}")
        for layer in layers:
            print(f"{layer.name:<28} {layer.kind:<6} {layer.fan_in:>7} {layer.neurons:>8} {format_count(layer.macs):>10} "
                  f"{format_count(layer.synapses):>10} {format_count(layer.macs * T):>10}")
        print()
    synapses = sum(layer.synapses for layer in layers)
    rows = [
        ("MACs per image", f"{format_count(cost.macs)}  ({format_count(synapses)} synapses without padding taps)"),
        (f"ops_table (Eq. 24 by the tables' rule, MACs x {T})", f"{format_count(cost.ops_table)}  latency {cost.snn_latency:.4f}"),
        ("ops_graph (Eq. 24 over the SNN's synapses)", format_count(ops_graph)),
        (f"ANN effective operations ({ANN_OPS_PER_MAC} x MACs)", f"{format_count(cost.ann_ops)}  latency {cost.ann_latency:.4f}"),
        (f"latency 1.00 = {REFERENCE_MODEL} ANN", f"{format_count(reference_operations(args.dataset))} operations"),
        ("energy per image (Horowitz 2014, 45 nm)", ""),
        (f"  ANN, fp32 MAC {HOROWITZ_45NM_PJ['fp32_mac']} pJ", _mj(cost.ann_energy_j)),
        (f"  SNN dense, int32 add {HOROWITZ_45NM_PJ['int32_add']} pJ", _mj(cost.snn_energy_j_int32)),
        (f"  SNN dense, int8 add {HOROWITZ_45NM_PJ['int8_add']} pJ", _mj(cost.snn_energy_j_int8)),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}".rstrip())
    print("(SNN dense = every synapse receives a spike at every step: the upper bound Eq. 24 counts)")

    if args.json:
        record = {
            "model": args.model,
            "dataset": args.dataset,
            "num_classes": classes,
            "input_shape": list(shape),
            "time_steps": T,
            "layers_counted": args.layers,
            "macs": cost.macs,
            "synapses": synapses,
            "ops_table": cost.ops_table,
            "ops_graph": ops_graph,
            "ann_ops": cost.ann_ops,
            "ann_ops_per_mac": ANN_OPS_PER_MAC,
            "latency": cost.snn_latency,
            "ann_latency": cost.ann_latency,
            "reference": {"model": REFERENCE_MODEL, "ann_ops": reference_operations(args.dataset)},
            "energy_j": {
                "ann_fp32": cost.ann_energy_j,
                "snn_int32_add": cost.snn_energy_j_int32,
                "snn_int8_add": cost.snn_energy_j_int8,
            },
            "energy_pj_per_op": dict(HOROWITZ_45NM_PJ),
            "per_layer": [layer.as_dict() | {"ops_table": layer.macs * T} for layer in layers],
        }
        write_json(args.json, record, "json")
        print(f"wrote {args.json}")
    return 0
