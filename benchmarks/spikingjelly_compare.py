"""Rate-coded conversion in SpikingJelly next to radix SNNs from radixsnn, on the same CIFAR-10 images.

SpikingJelly is an outside reference for the benchmark only, not a dependency of radixsnn. Install
it into the same environment without its declared dependencies (version 2.0.0 lists torchvision and
torchaudio, which would replace the CPU build of torch), plus the two modules it imports:

    pip install --no-deps spikingjelly==2.0.0
    pip install loguru requests

What runs, all on the first ``--images`` test images and the same calibration images (``--calib-images``
training images drawn with seed 0, as ``radixsnn convert`` draws them):

* **SpikingJelly**, ``ann2snn.Converter(recipe=ann2snn.RateCodingRecipe(dataloader, mode=...))``:
  the standard rate-coded IF conversion (BatchNorm folded, soft reset, analog input), evaluated
  by summing the outputs of T single steps. Variants: ``mode="99.9%"`` (layer-wise thresholds) and
  the strongest built-in one, ``channel_wise=True, half_threshold=True`` (per-channel 99.9 %
  thresholds, membranes starting at half threshold). Its converter only replaces ``nn.ReLU``
  modules and cannot step ``F.pad`` / ``F.adaptive_avg_pool2d``, so it converts a functionally
  identical copy of ResNet-20 (``SJResNet``: ReLU modules, ``nn.AdaptiveAvgPool2d``, the option-A
  shortcut as a fixed 1x1 stride-2 convolution with 0/1 weights); the script checks that the copy's
  logits equal the original's before converting.
* **radixsnn radix SNN**, post-training: ``rs.quantize`` -> ``calibrate`` -> ``to_snn`` ->
  ``rs.evaluate(engine="spikes")`` for each ``--radix-steps`` T (exact radix spike simulation).
* optionally (``--rate``) radixsnn's own rate-coded baseline (:mod:`radixsnn.rate`, 99.9th
  percentile of non-zero activations, membranes from 0) as a cross-check of the SpikingJelly numbers.

Times are wall-clock seconds of the simulation alone, measured in this run; the rate simulations
run once to the largest T and record the elapsed time at every reported T.

Example (the numbers in docs/benchmarks.md):

    python benchmarks/spikingjelly_compare.py --weights /path/to/resnet20-12fca82f.th --images 500 --rate
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

import radixsnn as rs
from radixsnn.core.inputs import normalize as normalize_with
from radixsnn.data import calibration_images, load_cifar
from radixsnn.experiments.rate import RateSNN
from radixsnn.models import IMAGENET_MEAN, IMAGENET_STD

# The pretrained CIFAR ResNets of this comparison are normalized with ImageNet statistics.
normalize = partial(normalize_with, mean=IMAGENET_MEAN, std=IMAGENET_STD)


class SJBlock(nn.Module):
    """ResNet basic block with ReLU modules and a 1x1 0/1 convolution as the option-A shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:
            # x[:, :, ::2, ::2] then zero-pad (planes - in_planes) / 2 channels on each side
            conv = nn.Conv2d(in_planes, planes, 1, 2, bias=False)
            weight = torch.zeros(planes, in_planes, 1, 1)
            pad = (planes - in_planes) // 2
            weight[torch.arange(in_planes) + pad, torch.arange(in_planes)] = 1.0
            conv.weight = nn.Parameter(weight, requires_grad=False)
            self.shortcut = conv

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class SJResNet(nn.Module):
    """The CIFAR ResNet of :mod:`radixsnn.models.resnet_cifar` written the way SpikingJelly converts."""

    def __init__(self, num_blocks: int = 3, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(num_blocks):
                blocks.append(SJBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(self.flatten(self.pool(out)))


def sj_copy(model: nn.Module, num_blocks: int, images: torch.Tensor) -> tuple[SJResNet, float]:
    """The SpikingJelly-friendly copy of ``model`` and its largest logit difference on ``images``."""
    copy_ = SJResNet(num_blocks, model.linear.out_features)
    result = copy_.load_state_dict(model.state_dict(), strict=False)
    shortcut_keys = {k for k in result.missing_keys if ".shortcut." in k}
    if set(result.missing_keys) != shortcut_keys or result.unexpected_keys:
        raise RuntimeError(f"weights do not map onto the copy: {result}")
    copy_.eval()
    diff = 0.0
    with torch.no_grad():
        for i in range(0, len(images), 250):
            x = normalize(images[i : i + 250])
            a, b = model(x), copy_(x)
            if not torch.equal(a.argmax(1), b.argmax(1)):
                raise RuntimeError("the SpikingJelly copy predicts different classes")
            diff = max(diff, float((a - b).abs().max()))
    if diff > 1e-4:
        raise RuntimeError(f"the SpikingJelly copy's logits differ by {diff:.3g}")
    return copy_, diff


def run_spikingjelly(net: nn.Module, calib: torch.Tensor, images, labels, steps, batch_size, **recipe_kw) -> dict:
    """Convert with ``RateCodingRecipe(**recipe_kw)``; accuracy and cumulative seconds at each T."""
    import spikingjelly.activation_based.ann2snn as ann2snn
    from spikingjelly.activation_based import functional

    loader = [(normalize(calib[i : i + batch_size]),) for i in range(0, len(calib), batch_size)]
    snn = ann2snn.Converter(recipe=ann2snn.RateCodingRecipe(dataloader=loader, **recipe_kw), device="cpu")
    snn = snn.convert(copy.deepcopy(net)).eval()
    correct = {t: 0 for t in steps}
    seconds = {t: 0.0 for t in steps}
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x, y = normalize(images[i : i + batch_size]), labels[i : i + batch_size]
            functional.reset_net(snn)
            total, start = 0.0, time.perf_counter()
            for t in range(1, max(steps) + 1):
                total = total + snn(x)
                if t in correct:
                    seconds[t] += time.perf_counter() - start
                    correct[t] += int((total.argmax(1) == y).sum())
    return {t: {"accuracy": correct[t] / len(images), "seconds": seconds[t]} for t in steps}


def run_rate(model, calib, images, labels, steps, batch_size, percentile: float) -> dict:
    """radixsnn's rate baseline, with cumulative simulation seconds at each T."""
    snn = RateSNN.from_calibration(model, calib, percentile=percentile, batch_size=batch_size)
    correct = {t: 0 for t in steps}
    seconds = {t: 0.0 for t in steps}
    for i in range(0, len(images), batch_size):
        x, y = images[i : i + batch_size], labels[i : i + batch_size]
        logits, activity = snn.run(x, steps)
        for t in steps:
            correct[t] += int((logits[t].argmax(1) == y).sum())
            seconds[t] += activity[t]["seconds"]
    return {t: {"accuracy": correct[t] / len(images), "seconds": seconds[t]} for t in steps}


def run_radix(model, calib, images, labels, steps, batch_size) -> dict:
    """Post-training radix SNNs, simulated spike by spike."""
    out = {}
    for t in steps:
        qann = rs.quantize(model, t)
        qann.calibrate(calib, progress=False)
        res = rs.evaluate(qann.to_snn(), images, labels, engine="spikes", qann=qann, batch_size=batch_size,
                           progress=False)
        out[t] = {"accuracy": res["accuracy"], "qann_accuracy": res["qann_accuracy"],
                  "agreement": res["agreement"], "seconds": res["seconds"]}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="resnet20 (or --model) float checkpoint")
    p.add_argument("--model", default="resnet20", choices=("resnet20", "resnet32", "resnet44", "resnet56"))
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (default $RADIXSNN_DATA_DIR)")
    p.add_argument("--images", type=int, default=500, help="first N test images (default 500)")
    p.add_argument("--calib-images", type=int, default=1024, help="training images for thresholds/scales (default 1024)")
    p.add_argument("--rate-steps", default="4,8,16,32,64,128", help="T values for rate coding")
    p.add_argument("--radix-steps", default="2,3,4,5,6,7,8", help="T values for radix coding")
    p.add_argument("--rate", action="store_true", help="also run radixsnn's own rate baseline (99.9th percentile)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--json", default=None, help="write all results to this JSON file")
    args = p.parse_args(argv)
    rate_steps = sorted(int(t) for t in args.rate_steps.split(","))
    radix_steps = sorted(int(t) for t in args.radix_steps.split(","))

    model = rs.create_model(args.model, weights=args.weights)
    images, labels = load_cifar("cifar10", args.data_dir, train=False)
    images, labels = images[: args.images], labels[: args.images]
    calib = calibration_images("cifar10", args.data_dir, args.calib_images, seed=0)
    with torch.no_grad():
        fp = sum(int((model(normalize(images[i:i + 250])).argmax(1) == labels[i:i + 250]).sum())
                 for i in range(0, len(images), 250)) / len(images)
    net, diff = sj_copy(model, (int(args.model[6:]) - 2) // 6, images)
    print(f"{args.model}: float accuracy {100 * fp:.2f}% on {len(images)} test images; "
          f"SpikingJelly copy: same classes, logits within {diff:.2e}")

    results = {"model": args.model, "images": len(images), "calibration_images": len(calib),
               "float_accuracy": fp, "copy_max_logit_diff": diff, "methods": {}}
    variants = {
        'SpikingJelly rate, mode="99.9%"': dict(mode="99.9%"),
        'SpikingJelly rate, "99.9%", channel_wise, half_threshold': dict(mode="99.9%", channel_wise=True,
                                                                          half_threshold=True),
    }
    for name, kw in variants.items():
        print(f"running {name} ...", flush=True)
        results["methods"][name] = run_spikingjelly(net, calib, images, labels, rate_steps, args.batch_size, **kw)
    if args.rate:
        print("running radixsnn rate baseline ...", flush=True)
        results["methods"]["radixsnn rate, 99.9th pct"] = run_rate(model, calib, images, labels, rate_steps,
                                                                     args.batch_size, 99.9)
    print("running radixsnn radix SNNs ...", flush=True)
    results["methods"]["radixsnn radix, post-training"] = run_radix(model, calib, images, labels, radix_steps,
                                                                    args.batch_size)

    base_name = 'SpikingJelly rate, mode="99.9%"'
    base = results["methods"][base_name][max(rate_steps)]["seconds"]
    print(f"\n| method | T | accuracy | simulation s | time vs {base_name} T={max(rate_steps)} |")
    print("|---|---:|---:|---:|---:|")
    for name, rows in results["methods"].items():
        for t, r in rows.items():
            print(f"| {name} | {t} | {100 * r['accuracy']:.2f}% | {r['seconds']:.1f} | {r['seconds'] / base:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
