"""Image folders: ``PATH/train/<class>/*.png`` and ``PATH/val/<class>/*.jpg``, decoded with Pillow and
streamed in batches by worker processes, never held in memory as a whole.

The layout is the common one (torchvision's ``ImageFolder``, the ImageNet validation set once sorted
into class folders): one sub-folder per class, classes numbered in the sorted order of their names,
images taken in the sorted order of their file names within a class. Every image becomes a uint8
tensor (C, H, W) through the model's :class:`Preprocess` -- resize the shorter side, centre crop --
done on the decoded uint8 image, so the SNN still reads exact uint8 pixels and the normalization stays
folded into its first layer.

>>> from radixsnn.data.folder import Preprocess
>>> p = Preprocess((3, 224, 224), crop_pct=0.875)
>>> p.resize_to, p.as_dict()["interpolation"]
(256, 'bilinear')
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from radixsnn.errors import ConfigError, DataError

#: File endings read as images (case-insensitive); other files in a class folder are refused.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")

#: Pillow resampling filters by the name a config or ``--interpolation`` gives.
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")

#: The split folders: calibration and training read ``train/``, evaluation reads ``val/``.
SPLITS = {True: "train", False: "val"}

#: Worker processes that decode images (``--workers``): the data never waits on one core.
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)

#: Largest image decoded, in pixels (Pillow's own bomb check stops at twice its default of ~89 M).
MAX_IMAGE_PIXELS = 1 << 28


@dataclass(frozen=True)
class Preprocess:
    """How one decoded image becomes the model's uint8 input: convert to RGB (or grey for one channel),
    resize the shorter side to :attr:`resize_to` = ``floor(max(H, W) / crop_pct)`` with
    ``interpolation``, then take the centre ``H x W`` crop (torchvision's ``Resize`` + ``CenterCrop``,
    timm's ``crop_pct``). An image already of the resized size is not resampled, so a folder of 32x32
    PNG files gives back exactly the pixels they were written from."""

    input_shape: tuple[int, int, int]
    crop_pct: float = 1.0
    interpolation: str = "bilinear"

    def __post_init__(self):
        shape = tuple(self.input_shape)
        if len(shape) != 3 or shape[0] not in (1, 3) or not all(isinstance(v, int) and v > 0 for v in shape):
            raise ConfigError("input_shape", f"must be (C, H, W) with C = 1 or 3 and positive H, W, got {self.input_shape!r}")
        object.__setattr__(self, "input_shape", shape)
        if not (isinstance(self.crop_pct, (int, float)) and 0 < self.crop_pct <= 1 and math.isfinite(self.crop_pct)):
            raise ConfigError("crop_pct", f"must lie in (0, 1], got {self.crop_pct!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError("interpolation", f"must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")

    @property
    def resize_to(self) -> int:
        """The shorter side after resizing, before the centre crop."""
        return math.floor(max(self.input_shape[1:]) / self.crop_pct + 1e-9)

    def as_dict(self) -> dict:
        """The fields as JSON values (what an SNN file records as ``preprocess``)."""
        return {**asdict(self), "input_shape": list(self.input_shape)}

    @classmethod
    def from_dict(cls, value: dict) -> "Preprocess":
        """The inverse of :meth:`as_dict`; a recorded value that is not one is refused in one line."""
        if not isinstance(value, dict) or set(value) != {"input_shape", "crop_pct", "interpolation"}:
            raise ConfigError("preprocess", f"must hold input_shape, crop_pct and interpolation, got {value!r}")
        return cls(tuple(value["input_shape"]), value["crop_pct"], value["interpolation"])

    def __call__(self, image) -> torch.Tensor:
        """A Pillow image -> uint8 tensor of :attr:`input_shape`."""
        from PIL import Image

        image = image.convert("L" if self.input_shape[0] == 1 else "RGB")
        h, w = self.input_shape[1:]
        width, height = image.size
        short = self.resize_to
        if min(width, height) != short:
            scale = short / min(width, height)
            size = (short, max(short, round(height * scale))) if width <= height else (max(short, round(width * scale)), short)
            image = image.resize(size, getattr(Image.Resampling, self.interpolation.upper()))
            width, height = image.size
        top, left = int(round((height - h) / 2.0)), int(round((width - w) / 2.0))
        image = image.crop((left, top, left + w, top + h))
        pixels = np.array(image, dtype=np.uint8).reshape(h, w, -1)
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


def preprocess_of(config, input_shape: Sequence[int] | None = None, crop_pct: float | None = None,
                  interpolation: str | None = None) -> Preprocess:
    """The :class:`Preprocess` a model config declares (``input_shape``, ``crop_pct``, ``interpolation``
    fields; missing ones take the defaults), each argument given overriding it."""
    return Preprocess(
        tuple(input_shape if input_shape is not None else getattr(config, "input_shape", (3, 32, 32))),
        crop_pct if crop_pct is not None else getattr(config, "crop_pct", 1.0),
        interpolation if interpolation is not None else getattr(config, "interpolation", "bilinear"),
    )


class ImageFolder(torch.utils.data.Dataset):
    """One split folder (``root/<class>/<image>``) as ``(uint8 image, label)`` items.

    Only the file list is held (``samples``, ``targets``); images are decoded when an item is taken.
    ``classes`` are the sorted class-folder names; a folder that is not this layout (no class folders,
    an empty class, a loose image or a file that is not an image inside it) is refused in one line.
    """

    def __init__(self, root: str | os.PathLike, preprocess: Preprocess):
        self.root = Path(root).expanduser()
        self.preprocess = preprocess
        if not self.root.is_dir():
            raise DataError(f"{self.root} is not a folder (expected one sub-folder of images per class)")
        entries = sorted((e for e in os.scandir(self.root) if not e.name.startswith(".")), key=lambda e: e.name)
        loose = [e.name for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
        if loose:
            raise DataError(f"{self.root}: images must lie in one sub-folder per class, found {loose[0]!r} at the top")
        self.classes = tuple(e.name for e in entries if e.is_dir())
        if not self.classes:
            raise DataError(f"{self.root} has no class folders (expected {self.root}/<class>/<image>)")
        samples, targets = [], []
        for label, name in enumerate(self.classes):
            files = sorted(e.name for e in os.scandir(self.root / name) if not e.name.startswith("."))
            other = [f for f in files if not f.lower().endswith(IMAGE_EXTENSIONS)]
            if other:
                raise DataError(f"{self.root / name / other[0]} is not an image file ({', '.join(IMAGE_EXTENSIONS)})")
            if not files:
                raise DataError(f"class folder {self.root / name} holds no images")
            samples += [str(self.root / name / f) for f in files]
            targets += [label] * len(files)
        self.samples = samples
        self.targets = torch.tensor(targets, dtype=torch.int64)
        self.image_shape = preprocess.input_shape

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path = self.samples[index]
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
        try:
            with Image.open(path) as image:
                return self.preprocess(image), int(self.targets[index])
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"{path}: cannot be decoded ({' '.join(str(exc).split())[:200]})") from None


def folder_split(data_dir, train: bool, preprocess: Preprocess) -> ImageFolder:
    """``data_dir/train`` (``train=True``) or ``data_dir/val`` as an :class:`ImageFolder`."""
    if data_dir is None:
        raise ConfigError("data_dir", "is required for the folder dataset (a folder holding train/ and val/)")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{root} is not a folder (the folder dataset needs {root}/train and {root}/val)")
    split = root / SPLITS[train]
    if not split.is_dir():
        raise DataError(f"{root} has no {SPLITS[train]}/ folder (expected {root}/train/<class>/... and {root}/val/<class>/...)")
    return ImageFolder(split, preprocess)


def folder_classes(data_dir) -> tuple[str, ...]:
    """The class names of a folder dataset: those of ``train/``, else of ``val/`` (only the names are read)."""
    if data_dir is None:
        raise ConfigError("data_dir", "is required for the folder dataset (a folder holding train/ and val/)")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{root} is not a folder (the folder dataset needs train/ and val/ class folders; --data-dir)")
    for split in ("train", "val"):
        if (root / split).is_dir():
            names = tuple(sorted(e.name for e in os.scandir(root / split) if e.is_dir() and not e.name.startswith(".")))
            if names:
                return names
    raise DataError(f"{root} has no train/<class>/ or val/<class>/ folders")


def write_image_folder(images: torch.Tensor, labels: torch.Tensor, root: str | os.PathLike, classes: Sequence[str],
                       size: int | None = None, interpolation: str = "bilinear", progress: bool = False) -> Path:
    """Write uint8 images (N, C, H, W) as PNG files ``root/<class>/<index>.png`` (``index`` zero-padded, so the
    folder's order within a class is the tensor's); ``size`` resizes each to ``size x size`` first. Returns
    ``root``. An existing image file is never overwritten."""
    from PIL import Image
    from tqdm import tqdm

    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ConfigError("images", f"must be uint8 (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
    if len(labels) != len(images):
        raise ConfigError("labels", f"must be as many as the images: {len(labels)} labels, {len(images)} images")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise ConfigError("size", f"must be a positive integer, got {size!r}")
    if interpolation not in INTERPOLATIONS:
        raise ConfigError("interpolation", f"must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    if list(classes) != sorted(set(classes)):
        raise ConfigError("classes", "must be distinct and in sorted order: a folder numbers its classes in that order")
    root = Path(root).expanduser()
    width = len(str(len(images) - 1))
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(len(images)), desc=f"write {root}", unit="img", disable=not progress, leave=False):
        label = int(labels[i])
        if not 0 <= label < len(classes):
            raise ConfigError("labels", f"must lie in 0..{len(classes) - 1}, found {label}")
        pixels = images[i].permute(1, 2, 0).numpy()
        image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
        if size is not None and image.size != (size, size):
            image = image.resize((size, size), getattr(Image.Resampling, interpolation.upper()))
        path = root / classes[label] / f"{i:0{width}d}.png"
        with open(path, "xb") as f:
            image.save(f, format="PNG")
    return root
