"""One module per ``radixsnn`` sub-command; each exposes ``register(subparsers)``.

A command's ``register`` adds its parser and sets ``func`` to a callable taking the parsed args.
"""

# Order here is the order in ``radixsnn --help``.
COMMANDS = [
    "convert",
    "evaluate",
    "train",
    "finetune",
    "demo",
    "rmse",
    "rate",
    "sweep",
    "ops",
    "report",
    "reproduce",
]
