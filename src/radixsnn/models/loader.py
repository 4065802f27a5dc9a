"""Any model, named the way users name them: a registered name, ``package.module:callable`` or
``path/to/file.py:callable``.

``package.module:callable`` is imported with the current folder on ``sys.path`` (like the targets of
``uvicorn`` or ``python -m``); ``path/to/file.py:callable`` is imported as a real module, registered in
``sys.modules`` under the file's name, so model-zoo files that import themselves by that name work.
The callable is called with ``model_args`` (keyword arguments) and must return an ``nn.Module``.

Importing a model file runs its code: that is what naming it asks for. Nothing here ever imports code
named by a file's contents (an SNN file's metadata, a checkpoint): only the caller's own ``spec``.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Sequence

import torch.nn as nn

from radixsnn.core.inputs import CONFIG_ATTRIBUTE
from radixsnn.errors import ConfigError
from radixsnn.models.registry import ModelConfig, create_model, family_config, list_models
from radixsnn.models.weights import load_weights


def is_registered(spec: str) -> bool:
    return spec in list_models()


def _import_callable(spec: str):
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name.isidentifier():
        raise ConfigError("model", f"{spec!r} is not a registered name ({', '.join(list_models())}), "
                                   "package.module:callable or path/to/file.py:callable")
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise ConfigError("model", f"file not found: {path}")
        module_name = re.sub(r"\W", "_", path.stem)
        try:
            spec_obj = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec_obj)
            sys.modules[module_name] = module
            spec_obj.loader.exec_module(module)
        except Exception as exc:  # the user's file failed to import: say why, in one line
            sys.modules.pop(module_name, None)
            raise ConfigError("model", f"{path} cannot be imported ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})") from None
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            hint = " (torchvision models need the vision extra: docs/guide/own-data.md#torchvision-models)" if target.split(".")[0] == "torchvision" else ""
            raise ConfigError("model", f"module {target!r} cannot be imported ({type(exc).__name__}: "
                                       f"{' '.join(str(exc).split())[:300]}){hint}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError("model", f"{target} has no callable {name!r}")
    return fn


def load_model(
    spec: str,
    *,
    model_args: dict | None = None,
    num_classes: int | None = None,
    weights: str | os.PathLike | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_shape: Sequence[int] | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
) -> nn.Module:
    """The model ``spec`` names, with ``weights`` loaded (then in eval mode) and its input configuration.

    A registered model gets ``num_classes`` and its registry config (``mean`` / ``std`` / ``input_shape`` /
    ``crop_pct`` / ``interpolation`` override it); a target of a family in
    :data:`~radixsnn.models.registry.FAMILY_CONFIGS` (``torchvision.models:resnet50``) gets its family's
    config, the arguments overriding it; another model gets a config only when ``mean`` and ``std`` are
    given. Models outside the registry have the classes they compute (``model_args``). ``model_args`` are the keyword arguments of a callable outside the registry.
    """
    if not isinstance(spec, str) or not spec:
        raise ConfigError("model", f"must name a model, got {spec!r}")
    if model_args is not None and not isinstance(model_args, dict):
        raise ConfigError("model_args", f"must be a mapping of keyword arguments, got {type(model_args).__name__}")
    overrides = {k: tuple(v) for k, v in (("mean", mean), ("std", std), ("input_shape", input_shape)) if v is not None}
    overrides.update({k: v for k, v in (("crop_pct", crop_pct), ("interpolation", interpolation)) if v is not None})
    if is_registered(spec):
        if model_args:
            raise ConfigError("model_args", f"are for models outside the registry; {spec!r} takes none")
        model = create_model(spec, num_classes=num_classes)
        if overrides:
            setattr(model, CONFIG_ATTRIBUTE, dataclasses.replace(getattr(model, CONFIG_ATTRIBUTE), **overrides))
    else:
        try:
            model = _import_callable(spec)(**(model_args or {}))
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError("model", f"{spec} failed to build ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})") from None
        if not isinstance(model, nn.Module):
            raise ConfigError("model", f"{spec} returned a {type(model).__name__}, not a torch.nn.Module")
        family = family_config(spec) or {}
        if "mean" in {**family, **overrides} and "std" in {**family, **overrides}:
            setattr(model, CONFIG_ATTRIBUTE, ModelConfig(spec, **{**family, **overrides}, num_classes=num_classes or 0))
    if weights is not None:
        load_weights(model, weights)
    return model.eval()
