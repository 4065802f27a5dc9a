"""CIFAR-10 / CIFAR-100 in the official "python version" pickle layout.

Images are returned as uint8 tensors (N, 3, 32, 32) and labels as int64 tensors; the pickles are
read with a restricted unpickler that admits only the builtins and numpy array types the official
files use, so a tampered file cannot run code.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from radixsnn.errors import RadixSNNError

DATA_ENV = "RADIXSNN_DATA_DIR"

# Normalization of the pretrained CIFAR ResNets, used by every model in radixsnn.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}


class DataError(RadixSNNError):
    """Raised when a dataset cannot be found or read; the message is meant for the user."""


class _SafeUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("builtins", "dict"),
        ("builtins", "list"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def safe_unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        try:
            return _SafeUnpickler(f, encoding="latin1").load()
        except Exception as exc:  # corrupt or hostile file
            raise DataError(f"{path}: not a readable CIFAR batch ({exc})") from None


def num_classes(dataset: str) -> int:
    return _layout(dataset)[4]


def _layout(dataset: str):
    try:
        return _LAYOUT[dataset]
    except KeyError:
        raise DataError(f"unknown dataset {dataset!r}; choose one of: {', '.join(_LAYOUT)}") from None


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``--data-dir`` if given, else ``$RADIXSNN_DATA_DIR``, else ``~/.cache/radixsnn/data``."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return Path.home() / ".cache" / "radixsnn" / "data"


def find_dataset(dataset: str, data_dir: str | os.PathLike | None) -> Path:
    """The folder holding the extracted batches (``data_dir`` itself or its layout sub-folder)."""
    folder, train_files, test_files, _, _ = _layout(dataset)
    root = resolve_data_dir(data_dir)
    for cand in (root / folder, root):
        if all((cand / f).is_file() for f in train_files + test_files):
            return cand
    # a folder holding the test split alone is enough for evaluation
    for cand in (root / folder, root):
        if all((cand / f).is_file() for f in test_files):
            return cand
    raise DataError(
        f"no {dataset} data under {root}: expected {folder}/ with {', '.join(test_files)} "
        f"(extract the official python-version archive there, or pass --data-dir)"
    )


def load_cifar(dataset: str, data_dir=None, train: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images uint8 (N,3,32,32), labels int64 (N,))`` for one split."""
    folder, train_files, test_files, label_key, _ = _layout(dataset)
    base = find_dataset(dataset, data_dir)
    images, labels = [], []
    for name in train_files if train else test_files:
        path = base / name
        if not path.is_file():
            raise DataError(f"{path} is missing")
        batch = safe_unpickle(path)
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            lab = np.asarray(batch[label_key], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: not a CIFAR batch ({exc})") from None
        if data.ndim != 2 or data.shape[1] != 3072 or len(lab) != len(data):
            raise DataError(f"{path}: unexpected array shapes {data.shape}, {lab.shape}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))
