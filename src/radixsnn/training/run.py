"""Starting or resuming a run in an output folder.

A run is defined by its configuration (a flat dict of the command's options). ``--resume`` loads
``OUT/last.safetensors`` and continues with the saved configuration; options given again on the
command line must agree with it, except ``epochs``, which may be raised to extend a finished run.
"""
from __future__ import annotations

from pathlib import Path

from radixsnn.errors import RadixSNNError
from radixsnn.training.state import RunState, load_run

#: Options that may differ between a run and its resumption.
RESUMABLE_CHANGES = ("epochs",)


def open_run(
    out_dir: Path, config: dict, given: set[str], *, resume: bool, kind: str, announce: bool = True
) -> tuple[dict, RunState | None]:
    """The configuration to use and the checkpoint to continue from (``None`` for a fresh run).

    ``given`` names the options set explicitly on the command line (the others hold defaults);
    ``announce`` prints what happens (the main process only).
    """
    last = Path(out_dir) / "last.safetensors"
    if not last.exists():
        if resume and announce:
            print(f"no checkpoint in {out_dir}: starting a new run")
        return config, None
    if not resume:
        raise RadixSNNError(f"{out_dir} already holds a run ({last.name}); pass --resume to continue it or choose another --out")
    state = load_run(last)
    if state.meta.get("kind") != kind:
        raise RadixSNNError(f"{last} is a {state.meta.get('kind')} run, not a {kind} run")
    saved = dict(state.meta.get("config") or {})
    for key in sorted(given):
        if key in RESUMABLE_CHANGES or key not in saved:
            continue
        if config[key] != saved[key]:
            flag = "--" + key.replace("_", "-")
            raise RadixSNNError(
                f"{flag} {config[key]} differs from the resumed run's {saved[key]}; drop it or choose another --out"
            )
    for key in RESUMABLE_CHANGES:
        if key in given:
            saved[key] = config[key]
    if announce:
        print(f"resuming {out_dir} after epoch {state.meta['epoch']} of {saved.get('epochs')}")
    return saved, state
