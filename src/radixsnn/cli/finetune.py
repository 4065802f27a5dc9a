"""``radixsnn finetune``: quantization-aware fine-tuning of a float checkpoint into a radix SNN.

The float network is traced into its QANN (T-bit activations, b-bit weights), the activation scales
are calibrated on training images, and the QANN is trained with straight-through estimators by the
same loop as ``radixsnn train`` (same checkpoints, metrics and ``--resume``). The final QANN is
converted to the integer SNN ``OUT/model.snn`` and simulated on the test set by the core evaluator
(the spike engine by default); the results go to ``OUT/eval.json``. The run is
:func:`radixsnn.training.finetune_run`.
"""
from __future__ import annotations

from radixsnn.cli.options import add_model_spec_args, add_weight_grid_args, layer_values, positive_float, positive_int, unit_float
from radixsnn.cli.training_options import add_run_options, add_runtime_options, run_config
from radixsnn.core.engines import ENGINES
from radixsnn.core.qann import ACT_SCALES, SHIFTS
from radixsnn.data import ALL_DATASETS
from radixsnn.training.qat import FINETUNE_DEFAULTS, finetune_run




def register(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="quantization-aware fine-tuning (STE) of a float checkpoint, then conversion to an SNN file",
        description=(
            "Build the T-bit QANN of a float checkpoint, calibrate it, fine-tune it with straight-through "
            "estimators (resumable, DDP under torchrun), convert it to OUT/model.snn and evaluate the SNN on "
            "the test set (OUT/eval.json)."
        ),
    )
    add_model_spec_args(p, required=False)
    p.add_argument("--dataset", choices=ALL_DATASETS, help=f"dataset (default {FINETUNE_DEFAULTS['dataset']})")
    p.add_argument("--time-steps", "-T", type=layer_values, metavar="T|default=T,LAYER=T,...|FILE.json",
                   help="T, the length of every spike train (1..16; required), or one per layer as in convert")
    p.add_argument("--weight-bits", type=layer_values, metavar="B|default=B,LAYER=B,...|FILE.json",
                   help=f"signed integer weight width (default {FINETUNE_DEFAULTS['weight_bits']}), or one per layer as in convert")
    p.add_argument("--input-bits", type=int, help=f"pixel train length, 8 = exact pixels (default {FINETUNE_DEFAULTS['input_bits']})")
    p.add_argument(
        "--act-scale", choices=ACT_SCALES,
        help=f"one activation scale per output channel or per layer; auto = per channel when T < weight bits, else per layer (default {FINETUNE_DEFAULTS['act_scale']})",
    )
    p.add_argument("--shift", choices=SHIFTS, help=f"one shift dT per output channel or per layer (default {FINETUNE_DEFAULTS['shift']})")
    add_weight_grid_args(p, FINETUNE_DEFAULTS)
    p.add_argument("--calib", help="calibration before fine-tuning: 'mse' (default) or 'percentile:P'")
    p.add_argument("--calib-images", type=positive_int, help=f"training images used for calibration (default {FINETUNE_DEFAULTS['calib_images']})")
    add_run_options(p, FINETUNE_DEFAULTS, lr_default="0.03 for T <= 2, else 0.01 for weights of 3 bits or fewer, else 0.001")
    p.add_argument(
        "--distill", type=unit_float, metavar="D",
        help="weight of knowledge distillation from the float network: loss = (1-D) cross-entropy + "
        f"D KL(float || QANN), 0 = plain cross-entropy (default {FINETUNE_DEFAULTS['distill']})",
    )
    p.add_argument(
        "--distill-temperature", type=positive_float, metavar="TAU",
        help="temperature of the distillation: both softmaxes of logits / TAU, the KL term times TAU^2; "
        f"above 1 the float network's ranking of the wrong classes teaches too (default {FINETUNE_DEFAULTS['distill_temperature']})",
    )
    p.add_argument(
        "--teacher", dest="teachers", action="append", metavar="NAME=WEIGHTS",
        help="also distil from this float network, a registered model with its checkpoint (repeatable): the "
        "teacher becomes the mean of the softmaxes of --weights' network and these, an ensemble that knows more "
        "than the network being converted (default: --weights' network alone)",
    )
    p.add_argument(
        "--scale-lr", type=positive_float, metavar="MULT",
        help="learning rate of the activation scales (LSQ step sizes, no weight decay) as a multiple of the "
        f"scheduled rate (default {FINETUNE_DEFAULTS['scale_lr']})",
    )
    add_runtime_options(p)
    p.add_argument("--engine", choices=ENGINES, default="spikes", help="engine of the final SNN evaluation (default spikes)")
    p.add_argument("--eval-images", type=positive_int, metavar="N", help="final SNN evaluation on the first N test images (default all)")
    p.set_defaults(func=run)


def run(args) -> int:
    config, given = run_config(args, FINETUNE_DEFAULTS)
    finetune_run(config, args.out, given=given, resume=args.resume, data_dir=args.data_dir, download=args.download,
                 device=args.device, engine=args.engine, eval_images=args.eval_images, amp=args.amp,
                 progress=not args.no_progress, workers=args.workers)
    return 0
