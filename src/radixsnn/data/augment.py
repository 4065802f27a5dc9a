"""Batched training augmentation on whatever device the batch lives on.

The standard CIFAR recipe: a random 32x32 crop of the image zero-padded by 4 pixels on each side,
then a horizontal flip with probability 1/2. Both work on a whole uint8 batch at once with a
caller-supplied :class:`torch.Generator`, so a run is reproducible from its seed. Handwritten
digits are not mirror-symmetric (a flipped 2 is no 2), so they get the random crop alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Crop each image of ``images`` (N, C, H, W) at a random offset after zero-padding by ``padding``.

    Every output image equals the H x W window at offset ``(dy, dx)``, ``0 <= dy, dx <= 2*padding``,
    of its zero-padded input; the offsets are drawn independently per image from ``generator``.
    """
    if padding == 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=generator.device).to(images.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=generator.device).to(images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, :]  # (N, 1, W)
    batch = torch.arange(n, device=images.device)[:, None, None]
    # Index an (N, H', W', C) view: advanced indices on the first three axes give (N, H, W, C).
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_hflip(images: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p`` (drawn per image from ``generator``)."""
    flip = torch.rand(images.shape[0], generator=generator, device=generator.device).to(images.device) < p
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def cifar_augment(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop with ``padding`` pixels of zero padding, then a random horizontal flip."""
    return random_hflip(random_crop(images, padding, generator), generator)


def crop_augment(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop with ``padding`` pixels of zero padding, no flip (for digits)."""
    return random_crop(images, padding, generator)


def augmentation_for(dataset: str):
    """The training augmentation of ``dataset``: crop + flip for CIFAR, crop only for digits."""
    return crop_augment if dataset == "digits" else cifar_augment
