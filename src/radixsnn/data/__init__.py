"""Data: CIFAR-10 / CIFAR-100 (official pickles, safe unpickler, verified download), the offline
digits set, device-resident mini-batches and batched augmentation.

Images are uint8 tensors (N, 3, 32, 32), labels int64.

>>> from radixsnn.data import DATASETS, num_classes
>>> DATASETS, num_classes("cifar100")
(('cifar10', 'cifar100', 'digits'), 100)
"""
from radixsnn.data.augment import augmentation_for, cifar_augment, crop_augment, random_crop, random_hflip
from radixsnn.data.datasets import (
    ARCHIVES,
    DATA_ENV,
    DATASETS,
    Archive,
    calibration_images,
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
from radixsnn.data.loader import DeviceLoader, derive_seed
from radixsnn.errors import DataError

__all__ = [
    "ARCHIVES",
    "Archive",
    "DATASETS",
    "DATA_ENV",
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
    "load_cifar",
    "load_dataset",
    "load_digits",
    "num_classes",
    "prepare_dataset",
    "random_crop",
    "random_hflip",
    "resolve_data_dir",
    "safe_unpickle",
]
