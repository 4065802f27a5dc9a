"""Run the reference results and render the pages that show them.

    python scripts/results.py run [NAME ...] [--work DIR] [--force]
    python scripts/results.py render [--check]

``run`` executes the commands that ``docs/results/runs.toml`` lists for each run (NAME: a run such as
``resnet20-cifar10-t4``, a row such as ``resnet20-cifar10``, or a figure; none: every run without a result
file yet) and stores each result as ``docs/results/NAME.json``, with the commands, the date, the radixsnn
version and commit, and the CPU. ``render`` rewrites the README's results table and ``docs/reference.md``
from those files; ``--check`` writes nothing and exits 1 if either page differs from what the files give.
The rendering is ``radixsnn.experiments.reference``; this script only runs commands and writes files.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import torch

import radixsnn
from radixsnn.errors import RadixSNNError
from radixsnn.experiments import reference
from radixsnn.experiments.report import load_results_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
README = ROOT / "README.md"
PAGE = ROOT / "docs" / "reference.md"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "src"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+modified" if dirty else "")


def expand(command: str, work: Path) -> list[str]:
    line = os.path.expandvars(command.replace("{work}", str(work)))
    if "$" in line:
        raise SystemExit(f"error: {command!r} needs an environment variable that is not set "
                         "(RADIXSNN_MODELS_DIR: the pretrained checkpoints; RADIXSNN_DATA_DIR: the datasets)")
    return shlex.split(line)


def selected(spec: reference.Spec, names: list[str]) -> list[reference.Run]:
    if not names:
        return [run for run in spec.runs if not reference.result_path(run, RESULTS).exists()]
    groups = {row.name: list(row.runs) for row in spec.rows} | {run.name: [run] for run in spec.runs}
    unknown = [n for n in names if n not in groups]
    if unknown:
        raise SystemExit(f"error: no run or row named {', '.join(unknown)} in {RESULTS / 'runs.toml'} "
                         f"(known: {', '.join(groups)})")
    return [run for n in names for run in groups[n]]


def run(args) -> int:
    spec = reference.load_spec(RESULTS / "runs.toml")
    work = Path(args.work).resolve()
    runs = selected(spec, args.names)
    if not args.force:
        for r in runs:
            if reference.result_path(r, RESULTS).exists():
                print(f"{r.name}: has a result (--force runs it again)")
        runs = [r for r in runs if not reference.result_path(r, RESULTS).exists()]
    plans = [(r, [expand(c, work) for c in r.commands]) for r in runs]  # every variable checked before any work
    work.mkdir(parents=True, exist_ok=True)
    for r, argvs in plans:
        print(f"== {r.name}", flush=True)
        started = datetime.datetime.now(datetime.timezone.utc)
        for argv in argvs:
            print("$ " + shlex.join(argv), flush=True)
            code = subprocess.run([sys.executable, "-m", "radixsnn", *argv[1:]]).returncode
            if code != 0:
                print(f"error: {r.name}: `{shlex.join(argv[:2])}` failed with exit code {code}", file=sys.stderr)
                return 1
        result = Path(r.result.replace("{work}", str(work)))
        data = load_results_json(result)
        data["provenance"] = {
            "commands": list(r.commands),
            "date": started.date().isoformat(),
            "radixsnn": radixsnn.__version__,
            "commit": commit(),
            "torch": torch.__version__,
            "cpu": cpu_name(),
            "wall_seconds": round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 1),
        }
        target = reference.result_path(r, RESULTS)
        target.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        if r.image:
            image = Path(r.image.replace("{work}", str(work)))
            if image.is_file():
                shutil.copyfile(image, RESULTS / f"{r.name}.png")
        print(f"wrote {target.relative_to(ROOT)}", flush=True)
    return 0


def render(args) -> int:
    spec = reference.load_spec(RESULTS / "runs.toml")
    pages = {README: reference.readme_with_table(README.read_text(encoding="utf-8"), spec, RESULTS),
             PAGE: reference.reference_page(spec, RESULTS)}
    stale = [path for path, text in pages.items() if not path.exists() or path.read_text(encoding="utf-8") != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} differs from what docs/results/*.json give "
                  "(run `python scripts/results.py render`)", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(pages[path], encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the commands of the named runs (default: those without a result)")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--work", default=str(ROOT / "runs" / "results"), help="scratch folder (default runs/results)")
    p.add_argument("--force", action="store_true", help="run again the named runs that have a result")
    p.set_defaults(func=run)
    p = sub.add_parser("render", help="rewrite the README's table and docs/reference.md from the result files")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page is out of date")
    p.set_defaults(func=render)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RadixSNNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
