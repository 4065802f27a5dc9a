"""Datasets, download/extraction, on-device augmentation and the device loader."""
from __future__ import annotations

import functools
import http.server
import io
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from radixsnn.data.augment import cifar_augment, random_crop, random_hflip
from radixsnn.data import (
    DataError,
    download_dataset,
    file_md5,
    load_cifar,
    load_digits,
    num_classes,
    prepare_dataset,
)
from radixsnn.errors import RadixSNNError
from radixsnn.data.loader import DeviceLoader


# --------------------------------------------------------------------------- fake archives
def _batch(n: int, seed: int, cifar100: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
    if cifar100:
        batch["fine_labels"] = [int(v) for v in rng.integers(0, 100, n)]
        batch["coarse_labels"] = [v // 5 for v in batch["fine_labels"]]
    else:
        batch["labels"] = [int(v) for v in rng.integers(0, 10, n)]
    return batch


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def make_cifar10_tarball(path: Path) -> dict[str, dict]:
    """A tiny archive in the official layout (4 images per training batch, 3 test images)."""
    batches = {f"data_batch_{i}": _batch(4, i) for i in range(1, 6)}
    batches["test_batch"] = _batch(3, 99)
    with tarfile.open(path, "w:gz") as tar:
        for name, batch in batches.items():
            _add(tar, f"cifar-10-batches-py/{name}", pickle.dumps(batch, protocol=2))
    return batches


def make_cifar100_tarball(path: Path) -> dict[str, dict]:
    batches = {"train": _batch(6, 1, cifar100=True), "test": _batch(5, 2, cifar100=True)}
    with tarfile.open(path, "w:gz") as tar:
        for name, batch in batches.items():
            _add(tar, f"cifar-100-python/{name}", pickle.dumps(batch, protocol=2))
    return batches


@pytest.fixture
def http_root(tmp_path):
    """Serve ``tmp_path/www`` over HTTP on 127.0.0.1; yields ``(folder, base_url)``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- download
def test_download_verifies_extracts_and_loads(http_root, tmp_path):
    www, base = http_root
    batches = make_cifar10_tarball(www / "cifar-10-python.tar.gz")
    data_dir = tmp_path / "data"
    folder = download_dataset(
        "cifar10", data_dir, url=f"{base}/cifar-10-python.tar.gz", md5=file_md5(www / "cifar-10-python.tar.gz")
    )
    assert folder == data_dir / "cifar-10-batches-py"
    images, labels = load_cifar("cifar10", data_dir, train=True)
    want = np.concatenate([batches[f"data_batch_{i}"]["data"] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert torch.equal(images, torch.from_numpy(want))
    assert labels.tolist() == sum((batches[f"data_batch_{i}"]["labels"] for i in range(1, 6)), [])
    test_images, test_labels = load_cifar("cifar10", data_dir, train=False)
    assert test_images.shape == (3, 3, 32, 32) and test_labels.tolist() == batches["test_batch"]["labels"]
    assert not list(data_dir.glob("*.part"))


def test_download_rejects_bad_checksum(http_root, tmp_path):
    www, base = http_root
    make_cifar10_tarball(www / "cifar-10-python.tar.gz")
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match="checksum mismatch"):
        download_dataset("cifar10", data_dir, url=f"{base}/cifar-10-python.tar.gz", md5="0" * 32)
    assert list(data_dir.iterdir()) == []  # neither the archive nor a partial file nor extracted data


def test_download_reports_unreachable_server(http_root, tmp_path):
    _, base = http_root
    with pytest.raises(DataError, match="cannot download"):
        download_dataset("cifar10", tmp_path / "data", url=f"{base}/missing.tar.gz", md5="0" * 32)


@pytest.mark.parametrize("kind", ["traversal", "absolute", "symlink"])
def test_extraction_refuses_members_outside_the_data_folder(http_root, tmp_path, kind):
    www, base = http_root
    archive = www / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        if kind == "traversal":
            _add(tar, "cifar-10-batches-py/../../evil.txt", b"x")
        elif kind == "absolute":
            _add(tar, str(tmp_path / "evil.txt"), b"x")
        else:
            info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match="refusing to extract"):
        download_dataset("cifar10", data_dir, url=f"{base}/cifar-10-python.tar.gz", md5=file_md5(archive))
    assert not (tmp_path / "evil.txt").exists() and not (www / "evil.txt").exists()
    assert not (data_dir / "cifar-10-batches-py").exists()


def test_missing_data_without_download_names_the_flag(tmp_path):
    with pytest.raises(DataError, match="--download"):
        load_cifar("cifar10", tmp_path, train=True)


def test_archive_already_in_data_dir_is_extracted_without_network(tmp_path, monkeypatch):
    import radixsnn.data.datasets as data

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    make_cifar100_tarball(data_dir / "cifar-100-python.tar.gz")
    official = data.ARCHIVES["cifar100"]
    monkeypatch.setitem(
        data.ARCHIVES, "cifar100", data.Archive(official.url, file_md5(data_dir / "cifar-100-python.tar.gz"))
    )
    monkeypatch.setattr(data, "_fetch", lambda *a: pytest.fail("must not download"))
    assert prepare_dataset("cifar100", data_dir, download=False).name == "cifar-100-python"


def test_corrupt_archive_in_data_dir_is_reported_without_network(tmp_path, monkeypatch):
    import radixsnn.data.datasets as data

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "cifar-100-python.tar.gz").write_bytes(b"truncated download")
    monkeypatch.setattr(data, "_fetch", lambda *a: pytest.fail("must not download"))
    with pytest.raises(DataError, match="cifar-100-python.tar.gz is corrupt"):
        prepare_dataset("cifar100", data_dir, download=False)


def test_labels_outside_the_classes_are_a_data_error(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    batch = {"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [3, 10]}
    (d / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match="labels must lie in 0..9"):
        load_cifar("cifar10", tmp_path)


def test_download_deadline(tmp_path, monkeypatch):
    """A server that trickles bytes forever is cut off by the overall deadline, not only per read."""
    import radixsnn.data.datasets as data

    class Slow:
        headers: dict = {}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n):
            return b"x"

    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: Slow())
    with pytest.raises(DataError, match="not done after 0 s"):
        data._fetch("http://example.invalid/a.tar.gz", tmp_path / "a.part", timeout=1.0, deadline=0.0)


def test_cifar100_fine_and_coarse_labels(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    batches = make_cifar100_tarball(data_dir / "c.tar.gz")
    with tarfile.open(data_dir / "c.tar.gz") as tar:
        tar.extractall(data_dir, filter="data")
    _, fine = load_cifar("cifar100", data_dir, train=True)
    _, coarse = load_cifar("cifar100", data_dir, train=True, coarse=True)
    assert fine.tolist() == batches["train"]["fine_labels"]
    assert coarse.tolist() == batches["train"]["coarse_labels"]
    assert num_classes("cifar100") == 100
    with pytest.raises(DataError, match="coarse"):
        load_cifar("cifar10", data_dir, coarse=True)


def test_real_cifar100_coarse_labels_group_the_fine_ones(cifar100_dir):
    _, fine = load_cifar("cifar100", cifar100_dir, train=False)
    _, coarse = load_cifar("cifar100", cifar100_dir, train=False, coarse=True)
    assert sorted(set(fine.tolist())) == list(range(100)) and sorted(set(coarse.tolist())) == list(range(20))
    pairs = set(zip(fine.tolist(), coarse.tolist()))
    assert len(pairs) == 100  # every fine class lies in exactly one superclass


# --------------------------------------------------------------------------- digits
def test_digits_are_cifar_shaped_uint8_with_disjoint_splits():
    train_x, train_y = load_digits(train=True)
    test_x, test_y = load_digits(train=False)
    assert train_x.shape == (1497, 3, 32, 32) and test_x.shape == (300, 3, 32, 32)
    assert train_x.dtype == test_x.dtype == torch.uint8
    assert torch.equal(train_x[:, 0], train_x[:, 2])  # grey: the same plane three times
    assert int(train_x.max()) == 255 and int(train_x[:, :, :2].max()) == 0  # zero border rows
    assert sorted(set(train_y.tolist())) == sorted(set(test_y.tolist())) == list(range(10))
    # no test image repeats a training image
    train_set = {bytes(img.numpy()) for img in train_x}
    assert not any(bytes(img.numpy()) in train_set for img in test_x)


# --------------------------------------------------------------------------- augmentation
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 6), padding=st.integers(0, 5), seed=st.integers(0, 2**31))
def test_random_crop_takes_a_window_of_the_zero_padded_image(n, padding, seed):
    images = torch.randint(1, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    out = random_crop(images, padding, torch.Generator().manual_seed(seed))
    assert out.shape == images.shape and out.dtype == torch.uint8
    # Reference: redraw the same offsets and slice the padded image.
    g = torch.Generator().manual_seed(seed)
    if padding:
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=g)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=g)
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    for i in range(n):
        y, x = (int(dy[i]), int(dx[i])) if padding else (0, 0)
        assert torch.equal(out[i], padded[i, :, y : y + 8, x : x + 8])


def test_random_crop_reaches_every_offset():
    images = torch.zeros(2000, 1, 1, 1, dtype=torch.uint8)
    images[:] = 7
    out = random_crop(images, 1, torch.Generator().manual_seed(0))  # 1x1 window in a 3x3 padded image
    assert (out == 7).float().mean().item() == pytest.approx(1 / 9, abs=0.03)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_hflip_mirrors_some_images_and_keeps_the_rest(seed):
    images = torch.randint(0, 256, (64, 3, 4, 4), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    out = random_hflip(images, torch.Generator().manual_seed(seed))
    flipped = [torch.equal(o, i.flip(2)) for o, i in zip(out, images)]
    kept = [torch.equal(o, i) for o, i in zip(out, images)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 0 < sum(flipped) < 64


def test_augment_is_reproducible_from_the_generator_seed():
    images = torch.randint(0, 256, (16, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    a = cifar_augment(images, torch.Generator().manual_seed(5))
    b = cifar_augment(images, torch.Generator().manual_seed(5))
    c = cifar_augment(images, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


# --------------------------------------------------------------------------- loader
def _toy(n: int):
    images = torch.arange(n, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2)
    return images.contiguous(), torch.arange(n)


def _epoch_labels(loader: DeviceLoader, epoch: int) -> list[int]:
    loader.set_epoch(epoch)
    batches = list(loader)
    assert len(batches) == len(loader)
    return [int(v) for _, y in batches for v in y]


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_training_shards_are_disjoint_equal_and_cover_the_epoch(world_size):
    images, labels = _toy(101)
    loaders = [
        DeviceLoader(images, labels, 6 * world_size, train=True, seed=3, rank=r, world_size=world_size, augment=None)
        for r in range(world_size)
    ]
    seen = [_epoch_labels(loader, 0) for loader in loaders]
    per_rank = (101 // world_size) // 6 * 6  # full per-rank batches of 6
    assert all(len(s) == per_rank for s in seen)
    flat = sum(seen, [])
    assert len(set(flat)) == len(flat)
    # the shards before batching cover all but the < world_size remainder
    shards = [set(loader.indices().tolist()) for loader in loaders]
    assert len(set().union(*shards)) == 101 - 101 % world_size


def test_training_order_depends_on_seed_and_epoch_only():
    images, labels = _toy(50)
    a = DeviceLoader(images, labels, 10, train=True, seed=1, augment=None)
    b = DeviceLoader(images, labels, 10, train=True, seed=1, augment=None)
    c = DeviceLoader(images, labels, 10, train=True, seed=2, augment=None)
    assert _epoch_labels(a, 4) == _epoch_labels(b, 4)  # b never saw epochs 0..3
    assert _epoch_labels(a, 4) != _epoch_labels(a, 5)
    assert _epoch_labels(a, 4) != _epoch_labels(c, 4)
    assert sorted(_epoch_labels(a, 0)) == list(range(50))


def test_training_batches_are_augmented_copies():
    images, labels = load_digits(train=False)
    loader = DeviceLoader(images, labels, 100, train=True, seed=0)
    (x, y), *_ = list(loader)
    assert x.dtype == torch.uint8 and x.shape == (100, 3, 32, 32)
    assert not torch.equal(x, images[: len(x)])
    # the batch's pixel sums can only lose mass to the crop, never gain
    originals = images[loader.indices()[:100]]
    assert bool((x.view(100, -1).sum(1) <= originals.view(100, -1).sum(1)).all())


def test_evaluation_loader_covers_the_split_once_in_order():
    images, labels = _toy(23)
    loaders = [DeviceLoader(images, labels, 4, rank=r, world_size=2) for r in range(2)]
    seen = [_epoch_labels(loader, 0) for loader in loaders]
    assert seen[0] == list(range(0, 23, 2)) and seen[1] == list(range(1, 23, 2))
    assert _epoch_labels(DeviceLoader(images, labels, 5, limit_batches=2), 0) == list(range(10))


def test_small_training_split_still_gives_one_batch():
    images, labels = _toy(5)
    loader = DeviceLoader(images, labels, 128, train=True, augment=None)
    assert len(loader) == 1 and sorted(_epoch_labels(loader, 0)) == list(range(5))


def test_batch_size_must_split_evenly_over_processes():
    images, labels = _toy(8)
    with pytest.raises(RadixSNNError, match="multiple"):
        DeviceLoader(images, labels, 5, train=True, world_size=2)
