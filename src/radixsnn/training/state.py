"""Training-run checkpoints: ``NAME.safetensors`` plus a readable ``NAME.json`` copy of its metadata.

The safetensors file is the checkpoint. It holds the model's state dict under its own key names
(so ``--weights run/last.safetensors`` loads like any float weights file), the optimizer's state
tensors under ``optimizer/<param index>/<name>``, with a weight average (``--ema``) the trained
weights under ``training/<name>`` (the model's own keys then hold the average: the weights the run
evaluates and converts), and, in its header metadata, the JSON
description of the run: format, kind (``float`` or ``qann``), model, dataset, number of classes,
configuration, code version, epochs done, metrics, the optimizer's remaining state and, for
quantized runs, the QANN's graph spec. Each file is written atomically
(:func:`radixsnn.outputs.atomic_write`), so a reader -- or a resumed run after a crash -- sees either
the previous checkpoint or the new one, never a torn file.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

import radixsnn.version
from radixsnn.errors import ConfigError
from radixsnn.outputs import atomic_write, write_text

FORMAT = "radixsnn-run"
OPTIMIZER_PREFIX = "optimizer/"
TRAINING_PREFIX = "training/"


@dataclass
class RunState:
    """A loaded checkpoint: model tensors, run metadata, optimizer state (``None`` if not saved)."""

    model_state: dict[str, torch.Tensor]
    meta: dict
    optimizer_state: dict | None
    #: the trained (not averaged) weights of a run with a weight average; ``None`` otherwise
    training_state: dict[str, torch.Tensor] | None = None


def code_version() -> dict:
    """``{"radixsnn": version, "git": commit or None}`` of the code that is running."""
    commit = None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(radixsnn.version.__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0:
            commit = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"radixsnn": radixsnn.version.__version__, "git": commit}


def save_run(stem: Path, model_state: dict, meta: dict, optimizer_state: dict | None = None,
             training_state: dict | None = None) -> Path:
    """Write ``stem.safetensors`` and ``stem.json`` atomically; returns the safetensors path."""
    stem = Path(stem)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model_state.items()}
    for k, v in (training_state or {}).items():
        tensors[TRAINING_PREFIX + k] = v.detach().to("cpu").contiguous()
    meta = {**meta, "format": FORMAT, "optimizer": None}
    if optimizer_state is not None:
        scalars: dict[str, dict] = {}
        for index, entries in optimizer_state["state"].items():
            for name, value in entries.items():
                if torch.is_tensor(value):
                    tensors[f"{OPTIMIZER_PREFIX}{index}/{name}"] = value.detach().to("cpu").contiguous()
                else:
                    scalars.setdefault(str(index), {})[name] = value
        meta["optimizer"] = {"param_groups": optimizer_state["param_groups"], "scalars": scalars}
    text = json.dumps(meta, indent=2, sort_keys=True)
    path = atomic_write(stem.with_name(stem.name + ".safetensors"),
                        lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT, "meta": text}), "out")
    write_text(stem.with_name(stem.name + ".json"), text + "\n", "out")
    return path


def load_run(path: Path) -> RunState:
    """Read a checkpoint written by :func:`save_run` (``path`` may be the stem or either file)."""
    path = Path(path)
    if path.suffix in (".json", ".safetensors"):
        path = path.with_suffix(".safetensors")
    elif not path.name.endswith(".safetensors"):
        path = path.with_name(path.name + ".safetensors")
    if not path.is_file():
        raise ConfigError("checkpoint", f"not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise ConfigError("checkpoint", f"{path} cannot be read: {exc}") from None
    if header.get("format") != FORMAT or "meta" not in header:
        raise ConfigError("checkpoint", f"{path} is not a radixsnn training checkpoint (no run metadata)")
    try:
        meta = json.loads(header["meta"])
    except ValueError as exc:
        raise ConfigError("checkpoint", f"{path} holds unreadable run metadata ({exc})") from None
    if not (isinstance(meta, dict) and isinstance(meta.get("kind"), str) and isinstance(meta.get("config", {}), dict)
            and isinstance(meta.get("epoch"), int) and meta["epoch"] >= 0 and isinstance(meta.get("history", []), list)):
        raise ConfigError("checkpoint", f"{path} holds run metadata without a kind and an epoch count")
    model_state = {k: v for k, v in tensors.items() if not k.startswith((OPTIMIZER_PREFIX, TRAINING_PREFIX))}
    training_state = {k[len(TRAINING_PREFIX):]: v for k, v in tensors.items() if k.startswith(TRAINING_PREFIX)} or None
    optimizer_state = None
    if meta.get("optimizer") is not None:
        try:
            state: dict[int, dict] = {}
            for key, value in tensors.items():
                if key.startswith(OPTIMIZER_PREFIX):
                    index, name = key[len(OPTIMIZER_PREFIX) :].split("/", 1)
                    state.setdefault(int(index), {})[name] = value
            for index, entries in meta["optimizer"]["scalars"].items():
                state.setdefault(int(index), {}).update(entries)
            optimizer_state = {"state": state, "param_groups": meta["optimizer"]["param_groups"]}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError("checkpoint", f"{path} holds an unreadable optimizer state ({exc})") from None
    return RunState(model_state, meta, optimizer_state, training_state)
