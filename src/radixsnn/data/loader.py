"""Mini-batches of an in-memory uint8 dataset, produced on the training device.

CIFAR fits in device memory many times over (50,000 x 3 x 32 x 32 bytes = 150 MB), so the whole
split is moved there once and every batch is a gather plus on-device augmentation: no worker
processes, no host-to-device copies per step.

Randomness is a pure function of ``(seed, epoch, rank)``: the order of epoch ``e`` and its
augmentation draws are the same whether the run went through epoch ``e - 1`` or resumed after it.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Iterator

import torch

from radixsnn.data.augment import cifar_augment
from radixsnn.data.splits import LazyImages, iterate_batches
from radixsnn.errors import ConfigError


def derive_seed(seed: int, *parts: int | str) -> int:
    """A 63-bit seed determined by ``seed`` and ``parts`` (e.g. epoch and rank), well mixed."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


class DeviceLoader:
    """Batches ``(uint8 images, int64 labels)`` of one split, held on ``device``.

    Training loaders (``train=True``) reshuffle every epoch (call :meth:`set_epoch`), augment each
    batch with ``augment`` and cut ``batch_size`` -- the global batch -- into ``world_size`` equal
    per-rank shares; the last incomplete batch is dropped unless it is the only one. Every rank
    sees an equal number of distinct images each epoch (a remainder of fewer than ``world_size``
    images sits the epoch out). Evaluation loaders keep the dataset order and give rank ``r`` the
    images ``r, r + world_size, ...``, so the ranks together cover the split exactly once.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        device: torch.device | str = "cpu",
        train: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        limit_batches: int | None = None,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = cifar_augment,
    ):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ConfigError("images", f"must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels) or len(images) == 0:
            raise ConfigError("labels", f"must be as many as the images (at least one): {len(labels)} labels, {len(images)} images")
        if train and batch_size % world_size:
            raise ConfigError("batch_size", f"{batch_size} must be a multiple of the number of processes {world_size}")
        if batch_size < world_size or batch_size < 1:
            raise ConfigError("batch_size", f"{batch_size} is smaller than the number of processes {world_size}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.train = train
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size // world_size if train else batch_size
        self.limit_batches = limit_batches
        self.augment = augment if train else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle order and augmentation draws of ``epoch`` (training loaders)."""
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch, in the order they are served."""
        n = len(self.images)
        if not self.train:
            return torch.arange(self.rank, n, self.world_size)
        order = torch.Generator().manual_seed(derive_seed(self.seed, "order", self.epoch))
        perm = torch.randperm(n, generator=order)
        usable = n - n % self.world_size
        if usable == 0:
            raise ConfigError("images", f"{n} training images cannot be shared among {self.world_size} processes")
        return perm[:usable][self.rank :: self.world_size]

    def __len__(self) -> int:
        if self.train:
            batches = max(1, (len(self.images) // self.world_size) // self.batch_size)
        else:
            batches = -(-len(range(self.rank, len(self.images), self.world_size)) // self.batch_size)
        return min(batches, self.limit_batches) if self.limit_batches else batches

    def _batches(self, idx: torch.Tensor):
        for b in range(len(self)):
            take = idx[b * self.batch_size : (b + 1) * self.batch_size].to(self.device)
            yield self.images[take], self.labels[take]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = None
        if self.augment is not None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(derive_seed(self.seed, "augment", self.epoch, self.rank))
        for images, labels in self._batches(self.indices()):
            if generator is not None:
                images = self.augment(images, generator)
            yield images, labels


class StreamLoader(DeviceLoader):
    """A :class:`DeviceLoader` over a split too large to hold (an image folder): the same order, shards,
    batches and augmentation draws, but each batch is decoded from ``split`` by ``workers`` processes
    when it is served and only then moved to ``device``. ``images`` indexes the split lazily
    (:class:`~radixsnn.data.splits.LazyImages`), for calibration draws."""

    def __init__(self, split, batch_size: int, *, workers: int = 0, device: torch.device | str = "cpu", train: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1, limit_batches: int | None = None,
                 augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = cifar_augment):
        placeholder = torch.zeros(len(split), 1, 1, 1, dtype=torch.uint8)  # only its length is read
        super().__init__(placeholder, split.targets, batch_size, train=train, seed=seed, rank=rank, world_size=world_size,
                         limit_batches=limit_batches, augment=augment)
        self.device = torch.device(device)
        self.split, self.workers = split, workers
        self.images = LazyImages(split, workers)

    def _batches(self, idx: torch.Tensor):
        for images, labels in iterate_batches(self.split, idx[: len(self) * self.batch_size].tolist(), self.batch_size, self.workers):
            yield images.to(self.device), labels.to(self.device)
