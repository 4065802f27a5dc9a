"""Datasets: CIFAR-10 / CIFAR-100 in the official "python version" pickle layout, and a small offline one.

Images are returned as uint8 tensors (N, 3, 32, 32) and labels as int64 tensors; the pickles are
read with a restricted unpickler that admits only the builtins and numpy array types the official
files use, so a tampered file cannot run code.

The official archives can be downloaded on request (:func:`download_dataset`): the file is checked
against its published MD5 sum and extracted only if every member is a plain file or folder inside
the data folder. ``digits`` is scikit-learn's bundled 8x8 handwritten digits, scaled to 3x32x32, so
the whole pipeline runs without any download.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from radixsnn.data.folder import folder_classes
from radixsnn.errors import DataError

DATA_ENV = "RADIXSNN_DATA_DIR"

_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}

#: Every dataset name :func:`load_dataset` accepts.
DATASETS = ("cifar10", "cifar100", "digits")


@dataclass(frozen=True)
class Archive:
    """Where an official dataset archive lives and the MD5 sum it is published with."""

    url: str
    md5: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


ARCHIVES = {
    "cifar10": Archive("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": Archive("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}


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


#: Largest batch file read (the CIFAR-100 training file is 155 MB) and most images in one batch file.
MAX_BATCH_BYTES = 256 << 20
MAX_BATCH_IMAGES = 60_000


def safe_unpickle(path: Path) -> dict:
    """Unpickle a CIFAR batch with only the builtins and numpy types the official files use (no code runs),
    after checking the file's size."""
    size = path.stat().st_size
    if size > MAX_BATCH_BYTES:
        raise DataError(f"{path}: {size} bytes, more than any CIFAR batch ({MAX_BATCH_BYTES >> 20} MiB)")
    with open(path, "rb") as f:
        try:
            return _SafeUnpickler(f, encoding="latin1").load()
        except Exception as exc:  # corrupt or hostile file
            raise DataError(f"{path}: not a readable CIFAR batch ({' '.join(str(exc).split())[:200]})") from None


def _batch_arrays(batch, path: Path, label_key: str, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 3, 32, 32) uint8, labels (N,) int64)`` of an unpickled batch, every part checked against
    the CIFAR layout *before* anything is built from it (a small pickle of shared references must not
    grow into gigabytes)."""
    if not isinstance(batch, dict) or "data" not in batch or label_key not in batch:
        raise DataError(f"{path}: not a CIFAR batch (no 'data' and {label_key!r} entries)")
    data, lab = batch["data"], batch[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got {type(data).__name__} {shape}")
    n = data.shape[0]
    if not 0 < n <= MAX_BATCH_IMAGES:
        raise DataError(f"{path}: {n} images, expected 1..{MAX_BATCH_IMAGES}")
    if not isinstance(lab, (list, np.ndarray)) or len(lab) != n:
        raise DataError(f"{path}: {label_key!r} must hold one label per image ({n})")
    if isinstance(lab, list) and not all(type(v) is int for v in lab):
        raise DataError(f"{path}: {label_key!r} must be integers")
    lab = np.asarray(lab)
    if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
        raise DataError(f"{path}: {label_key!r} must be integers")
    if lab.min() < 0 or lab.max() >= classes:
        raise DataError(f"{path}: labels must lie in 0..{classes - 1}, found {int(lab.min())}..{int(lab.max())}")
    return np.ascontiguousarray(data).reshape(-1, 3, 32, 32), lab.astype(np.int64)


def num_classes(dataset: str, data_dir=None) -> int:
    """Number of classes of ``dataset`` (CIFAR-100: the 100 fine classes; ``folder``: the class folders
    under ``data_dir``)."""
    if dataset == "digits":
        return 10
    if dataset == "folder":
        return len(folder_classes(data_dir))
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
        f"(extract the official python-version archive there, or give the folder that holds it: data_dir, --data-dir)"
    )


def load_cifar(
    dataset: str, data_dir=None, train: bool = False, *, download: bool = False, coarse: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images uint8 (N,3,32,32), labels int64 (N,))`` for one split.

    ``download=True`` fetches and extracts the official archive when the data is not found.
    ``coarse=True`` (CIFAR-100 only) returns the 20 superclass labels instead of the 100 fine ones.
    """
    folder, train_files, test_files, label_key, classes = _layout(dataset)
    if coarse:
        if dataset != "cifar100":
            raise DataError(f"coarse labels exist only for cifar100, not {dataset}")
        label_key, classes = "coarse_labels", 20
    base = prepare_dataset(dataset, data_dir, download=download, train=train)
    images, labels = [], []
    for name in train_files if train else test_files:
        path = base / name
        if not path.is_file():
            raise DataError(f"{path} is missing")
        data, lab = _batch_arrays(safe_unpickle(path), path, label_key, classes)
        images.append(data)
        labels.append(lab)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def prepare_dataset(dataset: str, data_dir=None, *, download: bool = False, train: bool = True) -> Path:
    """The folder holding ``dataset``; with ``download=True`` fetch and extract it when it is missing.

    An archive already lying in the data folder (the official file name) is verified and extracted
    without downloading. ``train=False`` is satisfied by a folder holding the test split alone.
    """
    folder, train_files, test_files, _, _ = _layout(dataset)
    needed = train_files + test_files if train else test_files
    try:
        base = find_dataset(dataset, data_dir)
        if all((base / f).is_file() for f in needed):
            return base
        missing = DataError(f"{base} lacks the {'training' if train else 'test'} split of {dataset}")
    except DataError as exc:
        missing = exc
    root = resolve_data_dir(data_dir)
    archive = root / ARCHIVES[dataset].filename
    if not download and not archive.is_file():
        raise DataError(f"{missing} (download=True, or --download on the command line, fetches {ARCHIVES[dataset].url})")
    return download_dataset(dataset, root, fetch=download)


def download_dataset(
    dataset: str, data_dir=None, *, url: str | None = None, md5: str | None = None, timeout: float = 30.0,
    deadline: float = 3600.0, fetch: bool = True,
) -> Path:
    """Download (unless already present), verify and extract the official archive of ``dataset``.

    ``url`` and ``md5`` override the official source (a mirror). ``timeout`` bounds each network read and
    ``deadline`` the whole download (seconds). With ``fetch=False`` nothing goes to the network: an archive
    already in the folder is verified and extracted, a corrupt one reported. Returns the extracted folder.
    """
    official = ARCHIVES.get(dataset)
    if official is None:
        raise DataError(f"no download known for dataset {dataset!r}; choose one of: {', '.join(ARCHIVES)}")
    url = url or official.url
    md5 = (md5 or official.md5).lower()
    root = resolve_data_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / url.rsplit("/", 1)[-1]
    if not (archive.is_file() and file_md5(archive) == md5):
        if not fetch:
            raise DataError(f"{archive} is corrupt (its MD5 is not the published {md5}): delete it, or download it again "
                            "(download=True, --download on the command line)")
        partial = archive.with_name(archive.name + ".part")
        try:
            _fetch(url, partial, timeout, deadline)
            got = file_md5(partial)
            if got != md5:
                raise DataError(f"checksum mismatch for {url}: MD5 {got}, expected {md5} (download corrupted or tampered)")
            os.replace(partial, archive)
        finally:
            partial.unlink(missing_ok=True)
    extract_archive(archive, root)
    return find_dataset(dataset, root)


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    """Hex MD5 digest of a file (the sum the CIFAR archives are published with)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


#: Largest archive downloaded (the CIFAR-100 archive is 169 MB).
MAX_DOWNLOAD_BYTES = 1 << 30


def _fetch(url: str, dest: Path, timeout: float, deadline: float = 3600.0) -> None:
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            if total and total > MAX_DOWNLOAD_BYTES:
                raise DataError(f"cannot download {url}: {total} bytes, more than {MAX_DOWNLOAD_BYTES >> 20} MiB")
            got = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name.removesuffix('.part')}") as bar:
                while block := response.read(1 << 20):
                    got += len(block)
                    if got > MAX_DOWNLOAD_BYTES:
                        raise DataError(f"cannot download {url}: more than {MAX_DOWNLOAD_BYTES >> 20} MiB")
                    if time.monotonic() - start > deadline:
                        raise DataError(f"cannot download {url}: not done after {deadline:.0f} s")
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"cannot download {url}: {reason}") from None


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract a tar archive into ``dest``, refusing links, devices and paths that leave ``dest``."""
    dest = Path(dest).resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                if not (member.isfile() or member.isdir()):
                    raise DataError(f"{archive}: refusing to extract {member.name!r} (not a plain file or folder)")
                target = (dest / member.name).resolve()
                if target != dest and dest not in target.parents:
                    raise DataError(f"{archive}: refusing to extract {member.name!r} (outside {dest})")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # Python < 3.11.4: the checks above are the filter
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive}: not a readable tar archive ({exc})") from None


def load_digits(train: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 handwritten digits as ``(uint8 (N,3,32,32), int64 (N,))``.

    The 8x8 images (values 0..16) are scaled to 0..255, resized bilinearly to 28x28, zero-padded to
    32x32 and repeated over 3 channels, so every CIFAR model runs on them unchanged. Every sixth
    image (300) forms the test split, the other 1,497 the training split.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise DataError("the digits dataset needs scikit-learn: pip install 'radixsnn[demo]'") from None
    bunch = sklearn_digits()
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32)) * (255.0 / 16.0)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    images = torch.nn.functional.interpolate(images[:, None], size=(28, 28), mode="bilinear", align_corners=False)
    images = torch.nn.functional.pad(images, (2, 2, 2, 2))
    images = images.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    test = torch.arange(len(labels)) % 6 == 0
    keep = ~test if train else test
    return images[keep].contiguous(), labels[keep].contiguous()


def load_dataset(dataset: str, data_dir=None, train: bool = False, *, download: bool = False):
    """One split of any dataset in :data:`DATASETS` as ``(uint8 images, int64 labels)``."""
    if dataset == "digits":
        return load_digits(train)
    return load_cifar(dataset, data_dir, train, download=download)
