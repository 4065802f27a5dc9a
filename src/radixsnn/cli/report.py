"""``radixsnn report``: the paper's Tables 2 and 3 in Markdown with our numbers beside them."""
from __future__ import annotations

from pathlib import Path

from radixsnn.errors import ConfigError
from radixsnn.experiments.report import cost_check_markdown, report_markdown
from radixsnn.outputs import check_file, write_text


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="Markdown Tables 2 and 3: the paper's numbers beside ours",
        description="Write the paper's Tables 2 and 3 as Markdown with our cells beside the paper's: cost "
        "columns computed from the model zoo, accuracy columns from result files (the JSON of "
        "`radixsnn evaluate --json` or `radixsnn finetune`), blank for rows not run.",
    )
    p.add_argument("results", nargs="*", metavar="RESULTS.json",
                   help="result files with accuracy, time_steps, model and dataset (none: cost columns only)")
    p.add_argument("--cost-check", action="store_true",
                   help="instead of the tables, list every cost cell: paper, ours, difference and how it matches")
    p.add_argument("--output", "-o", metavar="FILE", help="write the Markdown here instead of printing it")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.cost_check and args.results:
        raise ConfigError("cost_check", "takes no result files")
    if args.output:
        check_file(args.output, "output")
    text = cost_check_markdown() if args.cost_check else report_markdown(args.results)
    if args.output:
        write_text(args.output, text, "output")
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0
