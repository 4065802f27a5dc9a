"""Reading and writing model weights in safe formats.

Float weights are read from safetensors files or from torch files with ``weights_only=True``
(the pretrained CIFAR ResNets are ``{"state_dict": ..., "best_prec1": ...}`` with ``module.`` keys).
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from radixsnn.errors import ConfigError


#: Keys under which common checkpoint layouts keep their state dict (tried in this order, nested too).
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")


def _one_line(exc: Exception) -> str:
    """An exception's whole message on one line (torch's refusals explain why a file is unsafe)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_safetensors(path: Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then a JSON header starting with ``{``."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, in any of the common layouts.

    Reads safetensors files and torch files (always with ``weights_only=True``: no code in a file can run),
    unwraps ``{"state_dict" | "model_state_dict" | "model" | "net": ...}`` (also nested), drops the
    ``optimizer/`` and ``training/`` tensors of this project's training checkpoints (the model's keys hold the
    weights the run evaluated) and the ``module.`` prefix of
    DataParallel / DDP checkpoints. Raises :class:`ConfigError` naming ``weights`` for a missing, unreadable
    or unsafe file, one that holds no tensors, or one with NaN or infinite values.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("weights", f"file not found: {path}")
    try:
        if path.stat().st_size == 0:
            raise ValueError("the file is empty")
        if path.suffix == ".safetensors" or _is_safetensors(path):
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            with warnings.catch_warnings():  # torch's warnings about a file's pickle protocol: the error says it all
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for corrupt or unsafe files
        raise ConfigError("weights", f"unreadable: cannot read {path} ({_one_line(exc)})") from None
    for _ in range(3):
        if not isinstance(state, dict):
            break
        inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict):
        raise ConfigError("weights", f"file {path} holds no state dict of tensors")
    state = {k: v for k, v in state.items() if not (isinstance(k, str) and k.startswith(("optimizer/", "training/")))}
    if not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ConfigError("weights", f"file {path} holds no state dict of tensors")
    for key, value in state.items():
        if value.dtype.is_floating_point and not bool(torch.isfinite(value).all()):
            raise ConfigError("weights", f"file {path}: {key} holds NaN or infinite values")
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
    wrong = [f"{k} {tuple(v.shape)} (model: {tuple(own[k].shape)})" for k, v in state.items() if own[k].shape != v.shape]
    if wrong:
        raise ConfigError("weights", f"file {path} does not fit this model: {len(wrong)} tensors of another shape, "
                                     f"e.g. {', '.join(wrong[:3])}")
    model.load_state_dict(state)
    return model


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (recorded with every SNN and run, to say which weights made it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
