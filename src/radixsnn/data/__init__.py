"""Data: CIFAR-10 / CIFAR-100 (official pickles, safe unpickler, verified download), the offline
digits set, image folders (``train/`` and ``val/`` with one sub-folder per class, streamed), device-resident
mini-batches and batched augmentation.

Images are uint8 tensors (N, C, H, W), labels int64.

>>> from radixsnn.data import ALL_DATASETS, num_classes
>>> ALL_DATASETS, num_classes("cifar100")
(('cifar10', 'cifar100', 'digits', 'folder'), 100)
"""
from radixsnn.data.augment import augmentation_for, cifar_augment, crop_augment, random_crop, random_hflip
from radixsnn.data.datasets import (
    ARCHIVES,
    DATA_ENV,
    DATASETS,
    Archive,
    download_dataset,
    extract_archive,
    file_md5,
    find_dataset,
    load_cifar,
    load_dataset,
    load_digits,
    num_classes,
    prepare_dataset,
    resolve_data_dir,
    safe_unpickle,
)
from radixsnn.data.folder import DEFAULT_WORKERS, IMAGE_EXTENSIONS, INTERPOLATIONS, ImageFolder, Preprocess, folder_classes, preprocess_of
from radixsnn.data.loader import DeviceLoader, StreamLoader, derive_seed
from radixsnn.data.splits import (ALL_DATASETS, LazyImages, TensorImages, calibration_images, first_images, iterate_batches, open_split, split_images,
                                   take_images)
from radixsnn.errors import DataError

__all__ = [
    "ALL_DATASETS",
    "ARCHIVES",
    "Archive",
    "DATASETS",
    "DATA_ENV",
    "DEFAULT_WORKERS",
    "IMAGE_EXTENSIONS",
    "INTERPOLATIONS",
    "ImageFolder",
    "LazyImages",
    "Preprocess",
    "StreamLoader",
    "TensorImages",
    "DataError",
    "DeviceLoader",
    "augmentation_for",
    "calibration_images",
    "cifar_augment",
    "crop_augment",
    "derive_seed",
    "download_dataset",
    "extract_archive",
    "file_md5",
    "find_dataset",
    "first_images",
    "folder_classes",
    "iterate_batches",
    "load_cifar",
    "load_dataset",
    "load_digits",
    "num_classes",
    "open_split",
    "prepare_dataset",
    "preprocess_of",
    "random_crop",
    "random_hflip",
    "resolve_data_dir",
    "safe_unpickle",
    "split_images",
    "take_images",
]
