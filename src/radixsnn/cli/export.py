"""``radixsnn export``: write an SNN file as a standard ONNX model that onnxruntime runs exactly."""
from __future__ import annotations

from collections import Counter

from radixsnn.cli.options import nonnegative_int
from radixsnn.core.onnx_export import OPSET, export_onnx, plan, require_onnx
from radixsnn.core.snn import IntegerSNN
from radixsnn.outputs import check_file


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write an SNN file as an ONNX model (integer and quantization operators, exact)",
        description=f"Write the integer network of an SNN file as an ONNX model (opset {OPSET}) that reads uint8 "
        "images and gives the integer engine's int64 logits bit for bit in any ONNX runtime; the logits' float "
        "scale, T per layer and the SNN's digest are in its metadata. The model passes onnx's full check and is "
        "run by onnxruntime on random images against the file's QANN before it is written. Needs "
        "radixsnn[onnx].",
    )
    p.add_argument("file", help=".snn file written by convert or finetune")
    p.add_argument("--out", required=True, help="the ONNX file to write (e.g. model.onnx)")
    p.add_argument("--check-images", type=nonnegative_int, default=16, metavar="N",
                   help="random images on which onnxruntime must give the integer logits of the file's QANN (which "
                   "both engines equal) before the file is written; 0 = no run (default 16)")
    p.add_argument("--int8-weights", choices=("portable", "all"), default="portable",
                   help="portable (default): exact on every CPU, with uint8 weights where x86 CPUs without VNNI would "
                   "saturate int16 pairs of products (8-step trains, the pixels); all: int8 weights everywhere, faster "
                   "where onnxruntime adds the products in int32 (x86 with VNNI or AMX, ARM) and wrong on x86 without "
                   "VNNI, so refused on such a machine")
    p.set_defaults(func=run)


def run(args) -> int:
    check_file(args.out, "out")
    require_onnx()
    snn = IntegerSNN.load(args.file)
    lowerings = Counter(low.lowering for low in plan(snn, int8_weights=args.int8_weights))
    path = export_onnx(snn, args.out, check_images=args.check_images, int8_weights=args.int8_weights)
    checked = f"equal to the QANN on {args.check_images} random images" if args.check_images else "not run"
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB, opset {OPSET}): "
          + ", ".join(f"{n} {kind}" for kind, n in sorted(lowerings.items()))
          + f" layers, {args.int8_weights} int8 weights; onnxruntime {checked}")
    return 0
