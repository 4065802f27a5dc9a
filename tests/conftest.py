"""Shared fixtures: where the real CIFAR data and pretrained checkpoints are.

Tests that need them take the ``cifar10_dir`` / ``cifar100_dir`` / ``models_dir`` fixtures, which skip
with a visible reason when the environment does not point at them (a user's clone). CI sets
``RADIXSNN_REQUIRE_ASSETS=1``: then a missing asset fails the test instead of skipping it.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

DATA_ENV = "RADIXSNN_DATA_DIR"
MODELS_ENV = "RADIXSNN_MODELS_DIR"


def _missing(reason: str):
    if os.environ.get("RADIXSNN_REQUIRE_ASSETS") == "1":
        pytest.fail(f"required asset missing: {reason}")
    pytest.skip(reason)


def _data_dir(folder: str, probe: str) -> Path:
    root = os.environ.get(DATA_ENV)
    if not root:
        _missing(f"set {DATA_ENV} to a folder holding {folder}/")
    path = Path(root)
    for cand in (path / folder, path):
        if (cand / probe).is_file():
            return path
    _missing(f"{DATA_ENV}={root} holds no {folder}/{probe}")


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    return _data_dir("cifar-10-batches-py", "test_batch")


@pytest.fixture(scope="session")
def cifar100_dir() -> Path:
    return _data_dir("cifar-100-python", "test")


@pytest.fixture(scope="session")
def models_dir() -> Path:
    root = os.environ.get(MODELS_ENV)
    if not root or not (Path(root) / "resnet20-12fca82f.th").is_file():
        _missing(f"set {MODELS_ENV} to the folder with resnet20-12fca82f.th")
    return Path(root)


@pytest.fixture(scope="session")
def resnet20_weights(models_dir) -> Path:
    return models_dir / "resnet20-12fca82f.th"


@pytest.fixture(scope="module")
def one_thread():
    """For modules that push single images through small networks: one thread is fastest, and extra
    threads only contend with other work on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def interrupt_second_epoch(monkeypatch):
    """A function that makes the shared trainer stop with KeyboardInterrupt (as Ctrl-C would) when epoch 2
    begins; it returns the original ``train_epoch`` so a test can restore it."""
    from radixsnn.training.trainer import Trainer

    def interrupt():
        original = Trainer.train_epoch

        def stop_in_second_epoch(self, epoch):
            if epoch == 1:
                raise KeyboardInterrupt
            return original(self, epoch)

        monkeypatch.setattr(Trainer, "train_epoch", stop_in_second_epoch)
        return original

    return interrupt
