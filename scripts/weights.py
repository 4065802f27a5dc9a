"""Publish a trained float network in weights/, and keep that folder's checksums and table in step.

    python scripts/weights.py publish RUN/best.safetensors --name mobilenet-cifar10 [--data-dir DIR]
    python scripts/weights.py table [--check]

``publish`` reads a ``radixsnn train`` checkpoint and the run record it carries, measures the fp16 copy's
accuracy on the whole test split, writes ``weights/NAME-<sha8>.safetensors`` (fp16, with the model,
dataset, accuracy, the training command and commit in its metadata) and rewrites ``weights/SHA256SUMS``
and ``weights/README.md``. ``table`` only rewrites those two; ``--check`` exits 1 if they differ from the
files. The work is ``radixsnn.models.published``; this script only reads arguments and prints.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from radixsnn.data.datasets import load_dataset
from radixsnn.errors import RadixSNNError
from radixsnn.models import create_model, published
from radixsnn.training.state import load_run

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "weights"
#: Run-config keys that are not `radixsnn train` flags, or whose default need not be spelt out.
NOT_FLAGS = {"limit_batches", "test_subset", "train_subset"}


def recipe(config: dict, amp: str | None = None) -> str:
    """The `radixsnn train` command line that a run's config and mixed precision stand for (without --out)."""
    words = ["radixsnn", "train"] + (["--amp", amp] if amp else [])
    for key, value in config.items():
        if key in NOT_FLAGS or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        words += [flag] if value is True else [flag, str(value)]
    return " ".join(words)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", help="write a run's checkpoint as published fp16 weights")
    pub.add_argument("checkpoint", type=Path, help="a radixsnn train checkpoint (best.safetensors)")
    pub.add_argument("--name", required=True, help="published name, e.g. mobilenet-cifar10")
    pub.add_argument("--data-dir", default=None, help="dataset folder (default $RADIXSNN_DATA_DIR)")
    table = sub.add_parser("table", help="rewrite weights/SHA256SUMS and weights/README.md")
    table.add_argument("--check", action="store_true", help="write nothing; exit 1 if they differ from the files")
    args = parser.parse_args(argv)
    try:
        if args.command == "table":
            if args.check:
                print("weights/: " + ", ".join(published.verify_folder(FOLDER)))
                return 0
            published.write_index(FOLDER)
            return 0
        published.check_name(args.name)  # before the test-set pass
        run = load_run(args.checkpoint)
        config, meta = run.meta["config"], run.meta
        state = published.as_fp16(run.model_state)
        model = create_model(config["model"], num_classes=meta["num_classes"])
        model.load_state_dict(state)
        images, labels = load_dataset(config["dataset"], args.data_dir, train=False)
        accuracy = published.accuracy(model, config["model"], images, labels)
        seconds = sum(h.get("seconds") or 0.0 for h in meta["history"])
        info = {"model": config["model"], "dataset": config["dataset"], "num_classes": str(meta["num_classes"]),
                "accuracy": f"{accuracy:.2f}", "recipe": recipe(config, meta.get("amp")), "commit": meta["code"]["git"] or "unknown",
                "epochs": str(meta["epoch"]), "train_hours": f"{seconds / 3600:.1f}"}
        path = published.write_published(state, FOLDER, name=args.name, info=info)
        published.write_index(FOLDER)
        print(f"{path.relative_to(ROOT)}: {accuracy:.2f} % on the test split (training's best: {meta['best']['test_acc']} %)")
        return 0
    except RadixSNNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
