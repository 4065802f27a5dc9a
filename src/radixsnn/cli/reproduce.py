"""``radixsnn reproduce``: run the recipe (a TOML file in ``configs/``, see :mod:`radixsnn.experiments.recipes`)
for one row of the paper: ``radixsnn train`` for the float network, then ``radixsnn finetune``."""
from __future__ import annotations

import shlex
import subprocess
import sys

from radixsnn.cli import usage_error
from radixsnn.errors import ConfigError, RadixSNNError
from radixsnn.experiments.recipes import load_recipe
from radixsnn.outputs import check_folder


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="run the recipe for one paper row: train the float network, then fine-tune the radix SNN",
        description="Run a recipe from configs/: `radixsnn train` for the float network, then "
        "`radixsnn finetune` for the radix SNN at the row's time steps and weight bits.",
    )
    p.add_argument("config", metavar="CONFIG", help="recipe TOML file, e.g. configs/table2-vgg16-cifar10-t8.toml")
    p.add_argument("--dry-run", action="store_true", help="print the command lines without running them")
    p.add_argument("--out", help="output folder (overrides the recipe's [row] out)")
    p.set_defaults(func=run)


def run(args) -> int:
    recipe = load_recipe(args.config, args.out)
    steps = recipe.commands()
    for argv in steps:  # every option of both steps is checked before the first one starts
        problem = usage_error(argv)
        if problem:
            raise ConfigError(None, f"{args.config}: the [{argv[0]}] options are refused: {problem}")
    if not args.dry_run:
        check_folder(recipe.out, "out")
    for argv in steps:
        line = shlex.join(["radixsnn", *argv])
        if args.dry_run:
            print(line)
            continue
        print(f"==> {line}", flush=True)
        code = subprocess.run([sys.executable, "-m", "radixsnn", *argv]).returncode
        if code != 0:
            raise RadixSNNError(f"`radixsnn {argv[0]}` failed with exit code {code}")
    if not args.dry_run:
        print(f"done: radixsnn report {recipe.snn_dir / 'eval.json'}")
    return 0
