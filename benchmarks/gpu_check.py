"""The GPU check: exactness on CUDA, engine and training throughput, bf16 training, fine-tuning, torchrun.

One command, about 5 minutes on one H100/H200-class GPU; prints one table and writes one JSON:

    python benchmarks/gpu_check.py --data-dir D --weights resnet20-12fca82f.th [--out gpu_check.json]
    python benchmarks/gpu_check.py --smoke --device cpu      # tiny sizes on the CPU (CI runs this)

What runs, in order (sizes of the full check; ``--smoke`` uses a few batches of each):

1. **exactness**: ResNet-20 (``--weights``, else random weights) converted at T = 4 and T = 8 on 1,024
   calibration images; the spike engine and the integer engine against the QANN's integer logits on the
   first 2,000 CIFAR-10 test images, on the device. Agreement must be 1.0.
2. **throughput** on the same images: the float model's float32 forward, the integer engine and the
   spike engine (images/s, and each as a ratio to the float forward measured in the same run).
3. ``radixsnn train --model vgg16 --amp bf16 --epochs 2 --warmup-epochs 1``: training images/s and the
   test accuracy after 2 epochs (the warm-up: VGG-16 at the default rate 0.1 without one can stay at chance).
4. ``radixsnn finetune --time-steps 4 --epochs 1`` of ResNet-20 from ``--weights`` (without it, of the
   network step 3 trained): accuracy and agreement of its SNN.
5. ``torchrun --nproc_per_node 1 -m radixsnn train``, one epoch: it must finish with exit code 0.

The exit code is 1 when a check fails (agreement below 1.0, a command failing), 0 otherwise.

``--campaign`` runs instead the paper rows a 2-core CPU cannot reach (CIFAR-100 VGG-16, ResNet-18 and
MobileNet, and a ResNet-18 CIFAR-10 schedule; :data:`CAMPAIGN`): each float network trained with
``radixsnn train --amp bf16`` on the GPU, converted at T = 4 and T = 8 and evaluated on the whole test set
with the integer engine, SNN == QANN required. Sized for under 10 minutes on one H100-class GPU (an
estimate from the epoch times of the check above, until a GPU run records the real ones); ``--smoke
--campaign`` runs it at the smoke sizes on the CPU (CI runs this). It needs the full CIFAR-100 training
set for meaningful CIFAR-100 numbers.

    python benchmarks/gpu_check.py --campaign --data-dir D [--out campaign.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import radixsnn as rs
from radixsnn.core.inputs import normalize
from radixsnn.data import load_cifar
from radixsnn.models import model_config

FULL = {"test_images": 2000, "calib_images": 1024, "batch": 250, "train_epochs": 2, "train_subset": None,
        "finetune_subset": None, "limit_batches": None}
SMOKE = {"test_images": 32, "calib_images": 64, "batch": 16, "train_epochs": 1, "train_subset": 256,
         "finetune_subset": 256, "limit_batches": 2}


#: The campaign's rows: (model, dataset, epochs). One schedule for all: SGD with Nesterov momentum from
#: lr 0.1, a 2-epoch warm-up, cosine decay, label smoothing 0.1 and an EMA of the weights (the published
#: MobileNet's and VGG-9's recipe), bf16 autocast.
CAMPAIGN = [("vgg16", "cifar100", 15), ("resnet18", "cifar100", 15), ("mobilenet", "cifar100", 15), ("resnet18", "cifar10", 20)]
RECIPE = ["--amp", "bf16", "--lr", "0.1", "--nesterov", "--weight-decay", "5e-4", "--schedule", "cosine",
          "--label-smoothing", "0.1", "--ema", "0.999"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(fn, batches, device) -> float:
    fn(batches[0])  # warm-up (kernel selection, caches)
    synchronize(device)
    t0 = time.perf_counter()
    for xb in batches:
        fn(xb)
    synchronize(device)
    return sum(len(xb) for xb in batches) / (time.perf_counter() - t0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def radixsnn_command(args: list[str], torchrun: bool = False) -> tuple[int, str, float]:
    """Run ``radixsnn ARGS`` (under ``torchrun --nproc_per_node 1``); returns (exit code, output tail, seconds)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--master_addr=127.0.0.1",
                f"--master_port={free_port()}"] if torchrun else [sys.executable]
    t0 = time.perf_counter()
    proc = subprocess.run([*launcher, "-m", "radixsnn", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc.returncode, (proc.stdout + proc.stderr)[-2000:], time.perf_counter() - t0


def last_metrics(out: Path) -> dict:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])


def check_engines(args, size, device, rows) -> None:
    test_x, _ = load_cifar("cifar10", args.data_dir, train=False)
    train_x, _ = load_cifar("cifar10", args.data_dir, train=True)
    model = rs.create_model("resnet20", weights=args.weights).eval().to(device)
    cfg = model_config("resnet20")
    images = test_x[: size["test_images"]].to(device)
    batches = list(images.split(size["batch"]))
    with torch.no_grad():
        float_ips = images_per_second(lambda xb: model(normalize(xb, cfg.mean, cfg.std)), batches, device)
    rows.append({"check": "float32 forward, ResNet-20", "value": f"{float_ips:,.0f} img/s", "ratio": 1.0, "ok": True})
    for T in (4, 8):
        qann = rs.quantize(model, T).to(device)
        qann.calibrate(train_x[: size["calib_images"]].to(device), progress=False)
        snn = qann.to_snn().to(device)
        expected = torch.cat([qann.integer_logits(xb) for xb in batches])
        for engine in ("integer", "spikes"):
            logits = torch.cat([rs.run(snn, xb, engine=engine).logits for xb in batches])
            agreement = (logits == expected).all(dim=1).float().mean().item()
            ips = images_per_second(lambda xb: rs.run(snn, xb, engine=engine), batches, device)
            rows.append({"check": f"{engine} engine == QANN, T = {T}, {len(images)} images",
                         "value": f"agreement {agreement:.4f}, {ips:,.0f} img/s", "ratio": ips / float_ips,
                         "ok": agreement == 1.0})


def check_commands(args, size, rows, work: Path) -> None:
    common = ["--data-dir", str(args.data_dir), "--device", args.device, "--no-progress"]
    small = []
    if size["limit_batches"]:
        small = ["--limit-batches", str(size["limit_batches"]), "--test-subset", str(size["test_images"])]
    train_model = "resnet20" if args.smoke else "vgg16"
    out = work / "train"
    code, tail, seconds = radixsnn_command(["train", "--model", train_model, "--epochs", str(size["train_epochs"]),
                                            "--warmup-epochs", str(size["train_epochs"] / 2),
                                            "--amp", "bf16", "--out", str(out), *common, *small])
    ok = code == 0
    value = f"exit {code}"
    if ok:
        m = last_metrics(out)
        value = f"{m['train_images'] / m['train_seconds']:,.0f} img/s, test {m['test_acc']:.2f} % after {m['epoch']} epochs"
    rows.append({"check": f"train --model {train_model} --amp bf16", "value": value, "ratio": None, "ok": ok,
                 **({} if ok else {"output": tail})})

    # from the pretrained ResNet-20 if given, else from the network step 3 trained
    ft_model, weights = ("resnet20", args.weights) if args.weights else (train_model, out / "last.safetensors")
    ft = work / "finetune"
    sub = ["--train-subset", str(size["finetune_subset"]), "--calib-images", str(size["calib_images"]),
           "--eval-images", str(size["test_images"])] if args.smoke else []
    code, tail, seconds = radixsnn_command(["finetune", "--model", ft_model, "--weights", str(weights),
                                            "--time-steps", "4", "--epochs", "1", "--engine", "integer",
                                            "--out", str(ft), *common, *small, *sub])
    ok, value = False, f"exit {code}"
    if code == 0:
        result = json.loads((ft / "eval.json").read_text())
        ok = result["agreement"] == 1.0
        value = f"SNN {100 * result['accuracy']:.2f} %, agreement {result['agreement']:.4f}, {seconds:.0f} s"
    rows.append({"check": f"finetune --model {ft_model} -T 4, 1 epoch", "value": value, "ratio": None, "ok": ok,
                 **({} if ok else {"output": tail})})

    code, tail, seconds = radixsnn_command(["train", "--model", "resnet20", "--epochs", "1",
                                            "--out", str(work / "torchrun"), *common,
                                            *(small or ["--train-subset", "10000"])], torchrun=True)
    rows.append({"check": "torchrun --nproc_per_node 1 train", "value": f"exit {code}, {seconds:.0f} s",
                 "ratio": None, "ok": code == 0, **({} if code == 0 else {"output": tail})})


def run_campaign(args, size, rows, work: Path) -> None:
    """Train, convert at T = 4 and 8, and evaluate every row of :data:`CAMPAIGN` (smoke: tiny sizes)."""
    common = ["--data-dir", str(args.data_dir), "--device", args.device, "--no-progress"]
    for model, dataset, epochs in CAMPAIGN:
        epochs = size["train_epochs"] if args.smoke else epochs
        out = work / f"{model}-{dataset}"
        small = ["--limit-batches", str(size["limit_batches"]), "--test-subset", str(size["test_images"]),
                 "--train-subset", str(size["train_subset"]), "--batch-size", str(size["batch"])] if args.smoke else []
        code, tail, seconds = radixsnn_command(["train", "--model", model, "--dataset", dataset, "--epochs", str(epochs),
                                                "--warmup-epochs", str(min(2, epochs / 2)), "--eval-every", str(epochs),
                                                *RECIPE, "--out", str(out), *common, *small])
        label = f"{model} {dataset}, {epochs} epochs"
        if code != 0:
            rows.append({"check": f"train {label}", "value": f"exit {code}", "ratio": None, "ok": False, "output": tail})
            continue
        float_acc = last_metrics(out)["test_acc"]
        rows.append({"check": f"train {label}", "value": f"float {float_acc:.2f} %, {seconds:.0f} s", "ratio": None,
                     "ok": True})
        for T in (4, 8):
            snn, result = work / f"{model}-{dataset}-t{T}.snn", work / f"{model}-{dataset}-t{T}.json"
            code, tail, seconds = radixsnn_command(["convert", "--model", model, "--dataset", dataset, "--weights",
                                                    str(out / "best.safetensors"), "--time-steps", str(T),
                                                    "--calib-images", str(size["calib_images"]), "--out", str(snn), *common])
            if code == 0:
                limit = ["--limit", str(size["test_images"])] if args.smoke else []
                code, tail, more = radixsnn_command(["evaluate", str(snn), "--engine", "integer", "--json", str(result),
                                                     *limit, *common])
                seconds += more
            ok, value = False, f"exit {code}"
            if code == 0:
                res = json.loads(result.read_text())
                ok = res["agreement"] == 1.0
                value = (f"SNN {100 * res['accuracy']:.2f} % (float {100 * res['fp_accuracy']:.2f} %), agreement "
                         f"{res['agreement']:.4f}, {seconds:.0f} s")
            rows.append({"check": f"{model} {dataset} T = {T}, convert + evaluate", "value": value, "ratio": None,
                         "ok": ok, **({} if ok else {"output": tail})})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("RADIXSNN_DATA_DIR"),
                   help="folder with cifar-10-batches-py/ (default $RADIXSNN_DATA_DIR)")
    p.add_argument("--weights", default=None, help="pretrained ResNet-20 (resnet20-12fca82f.th); default random weights")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:i or cpu")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, minutes on a CPU: checks that the script runs")
    p.add_argument("--campaign", action="store_true", help="the paper rows a CPU cannot reach, instead of the checks")
    p.add_argument("--out", default="gpu_check.json", help="JSON file of the results (default gpu_check.json)")
    args = p.parse_args()
    if args.data_dir is None:
        p.error("--data-dir (or $RADIXSNN_DATA_DIR) is required")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available here (use --smoke --device cpu on a CPU)")
    size = SMOKE if args.smoke else FULL
    start = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        if args.campaign:
            run_campaign(args, size, rows, Path(tmp))
        else:
            check_engines(args, size, device, rows)
            check_commands(args, size, rows, Path(tmp))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"radixsnn {rs.__version__}, torch {torch.__version__}, {name}, {'campaign' if args.campaign else 'check'} at "
          f"{'smoke' if args.smoke else 'full'} sizes, "
          f"{time.perf_counter() - start:.0f} s")
    width = max(len(r["check"]) for r in rows)
    print(f"| {'check':<{width}} | result | x float forward | ok |")
    print(f"|{'-' * (width + 2)}|---|---|---|")
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}"
        print(f"| {r['check']:<{width}} | {r['value']} | {ratio} | {'yes' if r['ok'] else 'NO'} |")
        if "output" in r:
            print(r["output"], file=sys.stderr)
    Path(args.out).write_text(json.dumps({"device": name, "torch": torch.__version__, "smoke": args.smoke, "campaign": args.campaign,
                                          "seconds": round(time.perf_counter() - start, 1), "rows": rows}, indent=1))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
