"""Reading and writing model weights in safe formats.

Float weights are read from safetensors files or from torch files with ``weights_only=True``
(the pretrained CIFAR ResNets are ``{"state_dict": ..., "best_prec1": ...}`` with ``module.`` keys).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn as nn

from radixsnn.errors import ConfigError


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Float tensors of a checkpoint file, with a DataParallel ``module.`` prefix removed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("weights", f"file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
            # Training checkpoints (``radixsnn train``) also carry optimizer tensors under this prefix.
            state = {k: v for k, v in state.items() if not k.startswith("optimizer/")}
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError("weights", f"unreadable: cannot read {path} ({str(exc).splitlines()[0][:200]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError("weights", f"file {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a float checkpoint into ``model`` (strict), with a clear error on mismatched names."""
    state = read_state_dict(path)
    own = model.state_dict()
    # BatchNorm's step counter is absent from some published checkpoints and unused in eval.
    for key in own:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = own[key]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ConfigError(
            "weights", f"file {path} does not fit this model: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise ConfigError("weights", f"file {path}: {key} has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}")
    model.load_state_dict(state)
    return model


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (recorded with every SNN and run, to say which weights made it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
