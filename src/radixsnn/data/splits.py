"""One split of any dataset as an indexable set of ``(uint8 image, label)`` items, and its batches.

CIFAR and the digits set are small enough to live in memory (:class:`TensorImages`); an image folder is
decoded item by item (:class:`~radixsnn.data.folder.ImageFolder`). Both expose ``targets`` (the labels,
without decoding anything), ``classes`` where known and ``len``; :func:`iterate_batches` cuts either
into batches, slicing the tensors directly and decoding folders in worker processes.

>>> import torch
>>> from radixsnn.data.splits import TensorImages, iterate_batches
>>> split = TensorImages(torch.zeros(5, 3, 2, 2, dtype=torch.uint8), torch.arange(5))
>>> [labels.tolist() for _, labels in iterate_batches(split, range(1, 5, 2), batch_size=1)]
[[1], [3]]
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch

from radixsnn.data.datasets import DATASETS, load_dataset
from radixsnn.data.folder import DEFAULT_WORKERS, Preprocess, folder_split
from radixsnn.errors import ConfigError, DataError

#: Every dataset name a command's ``--dataset`` accepts: the built-in sets and ``folder``
#: (``--data-dir`` holding ``train/`` and ``val/`` class folders).
ALL_DATASETS = (*DATASETS, "folder")


class TensorImages(torch.utils.data.Dataset):
    """A split held in memory: ``images`` uint8 (N, C, H, W), ``targets`` int64 (N,)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, classes: Sequence[str] | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ConfigError("images", f"must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(targets):
            raise ConfigError("labels", f"must be as many as the images: {len(targets)} labels, {len(images)} images")
        self.images, self.targets = images, targets
        self.classes = tuple(classes) if classes is not None else None
        self.image_shape = tuple(images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])


def open_split(dataset: str, data_dir=None, train: bool = False, *, preprocess: Preprocess | None = None,
               download: bool = False):
    """One split of ``dataset`` (:data:`ALL_DATASETS`): the built-in ones as :class:`TensorImages`, ``folder``
    as an :class:`~radixsnn.data.folder.ImageFolder` of ``data_dir/train`` or ``data_dir/val`` read through
    ``preprocess`` (required for folders)."""
    if dataset == "folder":
        if preprocess is None:
            raise ConfigError("preprocess", "is required for the folder dataset (the model's input size and crop)")
        return folder_split(data_dir, train, preprocess)
    if dataset not in DATASETS:
        raise ConfigError("dataset", f"must be one of {', '.join(ALL_DATASETS)}, got {dataset!r}")
    return TensorImages(*load_dataset(dataset, data_dir, train, download=download))


def _stack(items):
    images, labels = zip(*items)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def iterate_batches(split, indices: Sequence[int], batch_size: int, workers: int = DEFAULT_WORKERS
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(uint8 images, int64 labels)`` batches of ``split``'s items at ``indices``, in that order. A
    :class:`TensorImages` is sliced; anything else is decoded by ``workers`` processes (0: in this one),
    with at most a few batches in memory at once."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError("batch_size", f"must be at least 1, got {batch_size!r}")
    if not isinstance(workers, int) or workers < 0:
        raise ConfigError("workers", f"must be a non-negative integer, got {workers!r}")
    indices = torch.as_tensor(list(indices), dtype=torch.int64)
    chunks = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    if isinstance(split, TensorImages):
        for take in chunks:
            yield split.images[take], split.targets[take]
        return
    loader = torch.utils.data.DataLoader(split, batch_sampler=[c.tolist() for c in chunks],
                                         num_workers=min(workers, len(chunks)), collate_fn=_stack)
    try:
        yield from loader
    except DataError as exc:  # from a worker: its message comes wrapped in the worker's traceback
        raise DataError(str(exc).strip().splitlines()[-1].split("DataError: ", 1)[-1]) from None


def take_images(split, indices: Sequence[int], workers: int = DEFAULT_WORKERS) -> torch.Tensor:
    """The uint8 images of ``split`` at ``indices``, as one tensor (a bounded number: calibration)."""
    batches = [images for images, _ in iterate_batches(split, indices, 256, workers)]
    if not batches:
        raise ConfigError("indices", "must select at least one image")
    return torch.cat(batches)


def calibration_images(dataset: str, data_dir, count: int, seed: int = 0, *, preprocess: Preprocess | None = None,
                       workers: int = DEFAULT_WORKERS) -> torch.Tensor:
    """``count`` training images of ``dataset`` drawn with ``seed`` (the test split is never used to calibrate);
    a folder decodes only those ``count`` images."""
    if not isinstance(count, int) or count < 1:
        raise ConfigError("calib_images", f"must be at least 1, got {count!r}")
    split = open_split(dataset, data_dir, train=True, preprocess=preprocess)
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:count]
    return take_images(split, idx.tolist(), workers)


class LazyImages:
    """A split's images indexed like a uint8 tensor -- ``images[indices]``, ``images[:n]`` -- each indexing
    decoding only the images it names: for the methods that draw bounded subsets (calibration, held-out
    and fine-tuning draws) from a folder too large to hold."""

    def __init__(self, split, workers: int = DEFAULT_WORKERS):
        self.split, self.workers = split, workers

    def __len__(self) -> int:
        return len(self.split)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(N, C, H, W)``, as a tensor of every image would have."""
        return (len(self.split), *self.split.image_shape)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, slice):
            index = range(len(self))[index]
        return take_images(self.split, torch.as_tensor(index, dtype=torch.int64).reshape(-1).tolist(), self.workers)


def split_images(split, workers: int = DEFAULT_WORKERS) -> torch.Tensor | LazyImages:
    """``split``'s images: the tensor of a :class:`TensorImages`, else a :class:`LazyImages` over it."""
    return split.images if isinstance(split, TensorImages) else LazyImages(split, workers)


class SplitSubset(torch.utils.data.Dataset):
    """The items of ``split`` at ``indices``, with their ``targets`` and the split's ``classes``."""

    def __init__(self, split, indices: Sequence[int]):
        self.split, self.indices = split, [int(i) for i in indices]
        self.targets = split.targets[self.indices]
        self.classes = getattr(split, "classes", None)
        self.image_shape = split.image_shape

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.split[self.indices[index]]


def draw_subset(split, count: int, seed: int) -> SplitSubset:
    """``count`` items of ``split`` drawn with ``seed`` (a folder is sorted by class, so its first items are
    not a sample of it)."""
    if not isinstance(count, int) or count < 1:
        raise ConfigError("subset", f"must be at least 1, got {count!r}")
    perm = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:count]
    return SplitSubset(split, perm.tolist())


def first_images(split, count: int | None) -> list[int]:
    """The indices of the ``count`` test images a ``--limit`` / ``--images`` option means (all for ``None``):
    the first ``count`` of a built-in set, whose order mixes the classes; of a folder, which is sorted by
    class, ``count`` images evenly spaced through it (image ``floor(i n / count)``), so that every class
    keeps its share."""
    n = len(split)
    if count is None or count >= n:
        return list(range(n))
    if not isinstance(count, int) or count < 1:
        raise ConfigError("images", f"must be at least 1, got {count!r}")
    if isinstance(split, TensorImages):
        return list(range(count))
    return [i * n // count for i in range(count)]
