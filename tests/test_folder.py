"""Image folders (``--dataset folder``): layout and decoding, the uint8 resize-and-crop, streaming loaders
equal to the in-memory ones, and real CIFAR-10 images written as PNG folders giving exactly the CIFAR
loader's numbers (and exact SNNs at 64x64 and 224x224)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

import radixsnn as rs
from radixsnn.cli import main
from radixsnn.data import (DeviceLoader, ImageFolder, Preprocess, StreamLoader, TensorImages, calibration_images, first_images,
                           iterate_batches, load_cifar, open_split, take_images)
from radixsnn.data.folder import write_image_folder
from radixsnn.errors import ConfigError, DataError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def tiny_folder(root, n=12, classes=("a", "b", "c"), size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % len(classes)
    for split in ("train", "val"):
        write_image_folder(images, labels, root / split, list(classes))
    return images, labels


def folder_order(images, labels):
    """The folder's order of tensors written by write_image_folder: by class, then by index."""
    order = sorted(range(len(labels)), key=lambda i: (int(labels[i]), i))
    return images[order], labels[order]


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 20), w=st.integers(1, 20), grey=st.booleans(), seed=st.integers(0, 2**16))
def test_png_round_trip_is_exact_at_the_input_size(tmp_path_factory, h, w, grey, seed):
    channels = 1 if grey else 3
    img = torch.randint(0, 256, (1, channels, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    root = tmp_path_factory.mktemp("rt")
    write_image_folder(img, torch.zeros(1, dtype=torch.int64), root / "val", ["only"])
    folder = ImageFolder(root / "val", Preprocess((channels, min(h, w), min(h, w))))
    got, label = folder[0]
    top, left = round((h - min(h, w)) / 2), round((w - min(h, w)) / 2)
    assert label == 0 and torch.equal(got, img[0, :, top:top + min(h, w), left:left + min(h, w)])


def test_resize_then_centre_crop_matches_pillow_by_hand(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)  # H 30, W 50
    p = Preprocess((3, 16, 16), crop_pct=0.8)
    assert p.resize_to == 20
    by_hand = Image.fromarray(pixels).resize((33, 20), Image.Resampling.BILINEAR).crop((8, 2, 24, 18))
    assert torch.equal(p(Image.fromarray(pixels)), torch.from_numpy(np.asarray(by_hand).transpose(2, 0, 1).copy()))
    assert p(Image.fromarray(pixels).convert("RGBA")).shape == (3, 16, 16)
    assert Preprocess.from_dict(p.as_dict()) == p


@pytest.mark.parametrize("kwargs, argument", [
    (dict(input_shape=(2, 8, 8)), "input_shape"), (dict(input_shape=(3, 0, 8)), "input_shape"),
    (dict(input_shape=(3, 8, 8), crop_pct=0.0), "crop_pct"), (dict(input_shape=(3, 8, 8), crop_pct=float("nan")), "crop_pct"),
    (dict(input_shape=(3, 8, 8), interpolation="cubic"), "interpolation"),
])
def test_bad_preprocess_is_refused(kwargs, argument):
    with pytest.raises(ConfigError) as err:
        Preprocess(**kwargs)
    assert err.value.argument == argument


@pytest.mark.parametrize("recorded", [{"input_shape": [3, 8, 8]}, {"input_shape": [3, 8, 8], "crop_pct": 2.0, "interpolation": "bilinear"},
                                      {"input_shape": [4, 8, 8], "crop_pct": 1.0, "interpolation": "bilinear"}, [3, 8, 8]])
def test_a_corrupt_recorded_preprocess_is_refused(recorded):
    with pytest.raises(ConfigError):
        Preprocess.from_dict(recorded)


def test_layout_errors_are_one_line(tmp_path):
    p = Preprocess((3, 8, 8))
    with pytest.raises(DataError, match="is not a folder"):
        ImageFolder(tmp_path / "nowhere", p)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        ImageFolder(tmp_path / "empty", p)
    tiny_folder(tmp_path / "ok")
    Image.new("RGB", (8, 8)).save(tmp_path / "ok" / "val" / "loose.png")
    with pytest.raises(DataError, match="one sub-folder per class"):
        ImageFolder(tmp_path / "ok" / "val", p)
    (tmp_path / "ok" / "train" / "a" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="notes.txt is not an image file"):
        ImageFolder(tmp_path / "ok" / "train", p)
    (tmp_path / "two" / "x").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        ImageFolder(tmp_path / "two", p)
    with pytest.raises(DataError, match="has no val/ folder"):
        open_split("folder", tmp_path / "two", train=False, preprocess=p)
    with pytest.raises(ConfigError, match="data_dir is required"):
        open_split("folder", None, preprocess=p)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_image_is_one_line_naming_it(tmp_path, workers):
    tiny_folder(tmp_path)
    bad = tmp_path / "val" / "b" / "01.png"
    bad.write_bytes(b"not a png")
    split = open_split("folder", tmp_path, train=False, preprocess=Preprocess((3, 8, 8)))
    with pytest.raises(DataError) as err:
        list(iterate_batches(split, range(len(split)), 4, workers))
    assert "\n" not in str(err.value) and str(bad) in str(err.value) and "cannot be decoded" in str(err.value)


def test_folder_items_and_order(tmp_path):
    images, labels = tiny_folder(tmp_path)
    split = open_split("folder", tmp_path, train=True, preprocess=Preprocess((3, 8, 8)))
    assert split.classes == ("a", "b", "c") and rs.data.num_classes("folder", tmp_path) == 3
    want_x, want_y = folder_order(images, labels)
    got = list(iterate_batches(split, range(len(split)), 5, workers=2))
    assert [len(x) for x, _ in got] == [5, 5, 2]
    assert torch.equal(torch.cat([x for x, _ in got]), want_x) and torch.equal(torch.cat([y for _, y in got]), want_y)
    assert torch.equal(take_images(split, [3, 0], workers=0), want_x[[3, 0]])
    assert first_images(split, 4) == [0, 3, 6, 9] and first_images(split, None) == list(range(12))
    assert first_images(TensorImages(images, labels), 4) == [0, 1, 2, 3]
    calib = calibration_images("folder", tmp_path, 5, seed=3, preprocess=Preprocess((3, 8, 8)), workers=0)
    assert torch.equal(calib, want_x[torch.randperm(12, generator=torch.Generator().manual_seed(3))[:5]])


def test_write_image_folder_refuses_unsorted_classes_and_never_overwrites(tmp_path):
    x, y = torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1])
    with pytest.raises(ConfigError, match="sorted order"):
        write_image_folder(x, y, tmp_path, ["b", "a"])
    write_image_folder(x, y, tmp_path, ["a", "b"])
    with pytest.raises(FileExistsError):
        write_image_folder(x, y, tmp_path, ["a", "b"])


@pytest.mark.parametrize("world_size", [1, 2])
def test_stream_loader_serves_the_device_loaders_batches(tmp_path, world_size):
    images, labels = tiny_folder(tmp_path, n=21)
    x, y = folder_order(images, labels)
    split = open_split("folder", tmp_path, train=True, preprocess=Preprocess((3, 8, 8)))
    for train in (True, False):
        for rank in range(world_size):
            opts = dict(train=train, seed=5, rank=rank, world_size=world_size)
            memory, stream = DeviceLoader(x, y, 4, **opts), StreamLoader(split, 4, workers=1, **opts)
            for epoch in (0, 3):
                memory.set_epoch(epoch)
                stream.set_epoch(epoch)
                a, b = list(memory), list(stream)
                assert len(a) == len(b) == len(stream)
                assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))


def test_tiny_folder_trains_and_finetunes_from_the_command_line(tmp_path, resnet20_weights):
    data = tmp_path / "data"
    tiny_folder(data, n=40, classes=[f"c{i}" for i in range(10)], size=32)
    assert main(["train", "--model", "resnet20", "--dataset", "folder", "--data-dir", str(data), "--epochs", "1",
                 "--batch-size", "8", "--limit-batches", "2", "--device", "cpu", "--workers", "1", "--out", str(tmp_path / "t"),
                 "--no-progress"]) == 0
    assert main(["finetune", "--model", "resnet20", "--weights", str(resnet20_weights), "--dataset", "folder", "--data-dir",
                 str(data), "--time-steps", "3", "--epochs", "1", "--batch-size", "8", "--limit-batches", "2",
                 "--calib-images", "16", "--device", "cpu", "--workers", "0", "--engine", "integer",
                 "--out", str(tmp_path / "f"), "--no-progress"]) == 0
    result = json.loads((tmp_path / "f" / "eval.json").read_text())
    assert result["images"] == 40 and result["agreement"] == 1.0
    snn = rs.IntegerSNN.load(tmp_path / "f" / "model.snn")
    assert snn.metadata["classes"] == [f"c{i}" for i in range(10)] and snn.metadata["preprocess"]["input_shape"] == [3, 32, 32]


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory, cifar10_dir):
    """CIFAR-10 as PNG folders: the first 300 test and 200 training images at 32 pixels; at 64 and 224 pixels
    the first 4 / 1 test and 6 / 2 training images of every class."""
    test_x, test_y = load_cifar("cifar10", cifar10_dir, train=False)
    train_x, train_y = load_cifar("cifar10", cifar10_dir, train=True)

    def per_class(labels, k):
        return torch.cat([torch.nonzero(labels == c)[:k, 0] for c in range(10)]).sort().values

    roots = {}
    for size, (n_test, n_train) in {32: (300, 200), 64: (4, 6), 224: (1, 2)}.items():
        test = torch.arange(n_test) if size == 32 else per_class(test_y, n_test)
        train = torch.arange(n_train) if size == 32 else per_class(train_y, n_train)
        root = tmp_path_factory.mktemp(f"cifar{size}")
        write_image_folder(test_x[test], test_y[test], root / "val", CLASSES, size=None if size == 32 else size)
        write_image_folder(train_x[train], train_y[train], root / "train", CLASSES, size=None if size == 32 else size)
        roots[size] = root
    return roots


def test_cifar_written_as_pngs_gives_the_cifar_loaders_numbers(cifar_folder, cifar10_dir, resnet20_weights, tmp_path, one_thread):
    snn_file = tmp_path / "r20.snn"
    assert main(["convert", "--model", "resnet20", "--weights", str(resnet20_weights), "--time-steps", "4", "--data-dir",
                 str(cifar10_dir), "--calib-images", "256", "--out", str(snn_file), "--no-progress"]) == 0
    for engine in ("integer", "spikes"):
        runs = {}
        for name, args in {"cifar": ["--data-dir", str(cifar10_dir), "--limit", "300"],
                           "folder": ["--dataset", "folder", "--data-dir", str(cifar_folder[32])]}.items():
            out = tmp_path / f"{name}-{engine}.json"
            assert main(["evaluate", str(snn_file), "--engine", engine, "--json", str(out), "--no-progress", *args]) == 0
            runs[name] = json.loads(out.read_text())
        for key in ("images", "accuracy", "qann_accuracy", "fp_accuracy", "agreement", "spikes", "ops_graph"):
            assert runs["folder"][key] == runs["cifar"][key], key
        assert runs["folder"]["agreement"] == 1.0


@pytest.mark.parametrize("size", [64, 224])
def test_resized_cifar_folders_convert_and_run_exactly(cifar_folder, resnet20_weights, tmp_path, size, one_thread, capsys):
    snn_file = tmp_path / f"r20-{size}.snn"
    assert main(["convert", "--model", "resnet20", "--weights", str(resnet20_weights), "--input-shape", f"3,{size},{size}",
                 "--dataset", "folder", "--data-dir", str(cifar_folder[size]), "--time-steps", "3", "--calib-images", "16",
                 "--workers", "1", "--out", str(snn_file), "--no-progress"]) == 0
    snn = rs.IntegerSNN.load(snn_file)
    assert snn.graph.input.shape == [3, size, size] and snn.metadata["classes"] == CLASSES
    assert snn.metadata["preprocess"] == {"input_shape": [3, size, size], "crop_pct": 1.0, "interpolation": "bilinear"}
    for engine in ("integer", "spikes"):
        out = tmp_path / f"{engine}.json"
        assert main(["evaluate", str(snn_file), "--engine", engine, "--data-dir", str(cifar_folder[size]), "--json", str(out),
                     "--no-progress"]) == 0
        assert json.loads(out.read_text())["agreement"] == 1.0
    capsys.readouterr()
    other = tmp_path / "other"
    write_image_folder(torch.zeros(10, 3, 4, 4, dtype=torch.uint8), torch.arange(10), other / "val", [f"k{i}" for i in range(10)])
    assert main(["evaluate", str(snn_file), "--data-dir", str(other)]) == 2
    assert "classes differ from those the SNN was converted with" in capsys.readouterr().err


def test_streamed_evaluation_equals_the_tensor_one(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 3))
    images, labels = tiny_folder(tmp_path)
    snn = rs.convert(model, images, time_steps=3, input_shape=(3, 8, 8), mean=(0.5,) * 3, std=(0.25,) * 3, progress=False)
    x, y = folder_order(images, labels)
    split = open_split("folder", tmp_path, train=False, preprocess=Preprocess((3, 8, 8)))
    streamed = rs.evaluate(snn, iterate_batches(split, range(12), 5, workers=0), total=12, limit=7, progress=False)
    direct = rs.evaluate(snn, x, y, batch_size=5, limit=7, progress=False)
    for key in ("images", "accuracy", "qann_accuracy", "agreement"):
        assert streamed[key] == direct[key], key
    with pytest.raises(ConfigError, match="images must be uint8"):
        rs.evaluate(snn, [(x.float(), y)], progress=False)
    with pytest.raises(ConfigError, match="labels must be None"):
        rs.evaluate(snn, iter([(x, y)]), y, progress=False)
