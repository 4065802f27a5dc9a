"""``radixsnn report`` / ``ops`` / ``reproduce``: Markdown tables, result files, JSON, recipes."""
import argparse
import json
from pathlib import Path

import pytest

from radixsnn.cli import ops, report, reproduce
from radixsnn.errors import RadixSNNError
from radixsnn.experiments.recipes import load_recipe
from radixsnn.experiments.report import TABLE2, TABLE3, collect_results, read_results, report_markdown


pytestmark = pytest.mark.usefixtures("one_thread")


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="radixsnn")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (ops, report, reproduce):
        module.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def _row_line(text, table_title, first_cells):
    block = text.split(table_title, 1)[1]
    for line in block.splitlines():
        if line.startswith("| " + " | ".join(first_cells) + " |"):
            return [c.strip() for c in line.strip("|").split("|")]
    raise AssertionError(f"no row starting {first_cells} after {table_title}")


def test_report_without_results_has_every_paper_cell():
    text = report_markdown([])
    for row in TABLE2 + TABLE3:
        assert row.operations in text and row.latency in text
    cells = _row_line(text, "Table 2 — CIFAR-10", ["VGG-16", "ANN", "N/A"])
    assert cells[3:5] == ["93.8%", ""]  # paper accuracy, ours blank
    assert cells[7:11] == ["20.7e9", "20.67e9", "1.00", "1.000"]
    cells = _row_line(text, "**Table 3**", ["Hybrid [Rathi et al., 2020]"])
    assert cells[8:] == ["31.3e9", "31.32e9", "1.51", "1.515", "1X", "1X"]


def test_report_places_results(tmp_path):
    snn = _write(tmp_path, "snn.json", {"accuracy": 0.9251, "fp_accuracy": 0.9402, "time_steps": 4,
                                        "metadata": {"model": "VGG-16", "dataset": "cifar10"}})
    ann = _write(tmp_path, "ann.json", {"accuracy": 73.0, "model": "resnet44", "dataset": "cifar100", "engine": "float"})
    t8 = _write(tmp_path, "t8.json", {"accuracy": 0.697, "model": "resnet44", "dataset": "cifar100", "time_steps": 8})
    other = _write(tmp_path, "other.json", {"accuracy": 0.5, "model": "resnet20", "dataset": "cifar10", "time_steps": 3})
    text = report_markdown([snn, ann, t8, other])
    assert _row_line(text, "Table 2 — CIFAR-10", ["VGG-16", "ANN", "N/A"])[4] == "94.0%"
    assert _row_line(text, "Table 2 — CIFAR-10", ["", "SNN", "4", "92.2%"])[4:7] == ["92.5%", "-1.6%", "-1.5%"]
    resnet44 = _row_line(text, "**Table 3**", ["Radix Encoding (this work)", "ResNet-44"])
    assert resnet44[5] == "69.7%" and resnet44[7] == "-3.3%"
    # Another method's row never shows our accuracy.
    assert _row_line(text, "**Table 3**", ["S-ResNet [Hu et al., 2018]"])[5] == ""
    assert "Results not in any paper row: " + other in text


def test_read_results_errors(tmp_path):
    with pytest.raises(RadixSNNError, match="no model name"):
        read_results(_write(tmp_path, "a.json", {"accuracy": 0.9, "time_steps": 8}))
    with pytest.raises(RadixSNNError, match="no 'accuracy'"):
        read_results(_write(tmp_path, "b.json", {"model": "vgg16"}))
    bad = tmp_path / "c.json"
    bad.write_text("{not json")
    with pytest.raises(RadixSNNError, match="not a JSON"):
        read_results(bad)
    with pytest.raises(RadixSNNError, match="not found"):
        collect_results([tmp_path / "missing.json"])


def test_report_command_writes_file(tmp_path, capsys):
    out = tmp_path / "report.md"
    assert run_cli(["report", "--output", str(out)]) == 0
    assert out.read_text() == report_markdown([])
    assert f"wrote {out}" in capsys.readouterr().out


def test_ops_command_json(tmp_path, capsys):
    out = tmp_path / "ops.json"
    assert run_cli(["ops", "--model", "resnet18", "--time-steps", "8", "--dataset", "cifar100", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["macs"] == 555_468_800
    assert data["ops_table"] == 8 * 555_468_800 and data["ann_ops"] == 66 * 555_468_800
    assert data["latency"] == pytest.approx(8 * 555_468_800 / (66 * 313_247_744))
    assert data["ann_latency"] == pytest.approx(555_468_800 / 313_247_744)
    assert sum(layer["macs"] for layer in data["per_layer"]) == data["macs"]
    assert data["energy_j"]["ann_fp32"] == pytest.approx(555_468_800 * 4.6e-12)
    printed = capsys.readouterr().out
    assert "layer4.1.conv2" in printed and "4.444e9" in printed


def test_ops_command_conv_only_and_errors(capsys):
    assert run_cli(["ops", "--model", "vgg9", "-T", "4", "--layers", "conv", "--summary"]) == 0
    printed = capsys.readouterr().out
    assert "190.5e6" in printed and "762.1e6" in printed and "features.0" not in printed
    with pytest.raises(RadixSNNError):
        run_cli(["ops", "--model", "nope", "-T", "8"])
    with pytest.raises(RadixSNNError):
        run_cli(["ops", "--model", "vgg16", "-T", "0"])
    with pytest.raises(RadixSNNError, match="time_steps must be an integer in 1..16"):  # a radix SNN's T, as convert's
        run_cli(["ops", "--model", "vgg16", "-T", "100"])


def test_ops_counts_any_model_at_its_input_size(tmp_path):
    small, large = tmp_path / "32.json", tmp_path / "64.json"
    assert run_cli(["ops", "--model", "resnet20", "-T", "4", "--summary", "--json", str(small)]) == 0
    assert run_cli(["ops", "--model", "resnet20", "-T", "4", "--input-shape", "3,64,64", "--summary", "--json", str(large)]) == 0
    a, b = json.loads(small.read_text()), json.loads(large.read_text())
    linear = 64 * 10  # the classifier after the global pool does not grow with the image
    assert (a["input_shape"], b["input_shape"]) == ([3, 32, 32], [3, 64, 64]) and b["macs"] - linear == 4 * (a["macs"] - linear)
    model_file = tmp_path / "net.py"
    model_file.write_text("import torch.nn as nn\n"
                          "def net(k=5):\n"
                          "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, k))\n")
    out = tmp_path / "net.json"
    assert run_cli(["ops", "--model", f"{model_file}:net", "--model-args", '{"k": 7}', "--input-shape", "3,16,16", "-T", "2",
                    "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["num_classes"] == 7 and data["macs"] == 27 * 8 * 14 * 14 + 8 * 14 * 14 * 7


def test_recipes_cover_every_radix_row():
    recipes = [load_recipe(path) for path in sorted(CONFIGS.glob("*.toml"))]
    covered = {(r.model, r.dataset, r.time_steps) for r in recipes}
    rows = {(r.model, r.dataset, r.time_steps) for r in TABLE2 + TABLE3 if r.method == "radix"}
    assert covered == rows and len(recipes) == len(rows) == 14
    for recipe in recipes:
        assert recipe.weight_bits == 8
        assert {"epochs", "lr", "batch_size", "device"} <= set(recipe.train) & set(recipe.finetune)


def test_reproduce_dry_run(capsys, tmp_path):
    assert run_cli(["reproduce", str(CONFIGS / "table2-vgg16-cifar10-t8.toml"), "--dry-run", "--out", str(tmp_path / "r")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    train, finetune = lines
    assert train.startswith(f"radixsnn train --model vgg16 --dataset cifar10 --out {tmp_path}/r/float --resume ")
    assert "--epochs 200 --lr 0.1 --warmup-epochs 2 --batch-size 128" in train and "--device auto" in train
    assert finetune.startswith(f"radixsnn finetune --weights {tmp_path}/r/float/best.safetensors --model vgg16 ")
    assert "--time-steps 8 --weight-bits 8" in finetune and f"--out {tmp_path}/r/t8" in finetune
    assert not (tmp_path / "r").exists()


def test_recipe_errors(tmp_path):
    def recipe(text):
        path = tmp_path / "r.toml"
        path.write_text(text)
        return path

    good = '[row]\nmodel = "vgg16"\ndataset = "cifar10"\ntime_steps = 8\nweight_bits = 8\n'
    assert load_recipe(recipe(good)).out == Path("runs/vgg16-cifar10")
    for text, message in [
        (good.replace('"vgg16"', '"vgg17"'), "unknown model"),
        (good.replace('"cifar10"', '"mnist"'), "dataset must be"),
        (good.replace("time_steps = 8", "time_steps = 0"), "time_steps must be"),
        (good.replace("weight_bits = 8\n", ""), "needs 'weight_bits'"),
        (good + "[train]\nmodel = 'x'\n", "must not set 'model'"),
        (good + "[evaluate]\nx = 1\n", "unknown table"),
        ("[row\n", "not valid TOML"),
    ]:
        with pytest.raises(RadixSNNError, match=message):
            load_recipe(recipe(text))
    with pytest.raises(RadixSNNError, match="not found"):
        load_recipe(tmp_path / "none.toml")


def test_recipe_command_lines_parse_with_train_and_finetune():
    """Every option a recipe passes on is one `radixsnn train` / `finetune` accept."""
    from radixsnn.cli import finetune, train

    parser = argparse.ArgumentParser(prog="radixsnn")
    sub = parser.add_subparsers(dest="command", required=True)
    train.register(sub)
    finetune.register(sub)
    for path in sorted(CONFIGS.glob("*.toml")):
        recipe = load_recipe(path)
        train_args, finetune_args = (parser.parse_args(argv) for argv in recipe.commands())
        assert (train_args.model, train_args.dataset, train_args.epochs) == (recipe.model, recipe.dataset, recipe.train["epochs"])
        assert (finetune_args.time_steps, finetune_args.weight_bits) == (recipe.time_steps, recipe.weight_bits)
        assert finetune_args.weights == str(recipe.float_dir / "best.safetensors")


@pytest.mark.cifar
def test_reproduce_runs_a_tiny_recipe(cifar100_dir, tmp_path, monkeypatch, capsys):
    """A recipe cut down to a few images runs train + finetune and its eval.json lands in Table 3."""
    monkeypatch.setenv("RADIXSNN_DATA_DIR", str(cifar100_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    small = "epochs = 1\nbatch_size = 16\ntrain_subset = 32\ntest_subset = 16\ndevice = 'cpu'\nno_progress = true\n"
    path = tmp_path / "tiny.toml"
    path.write_text(
        '[row]\ntable = 3\nmodel = "resnet44"\ndataset = "cifar100"\ntime_steps = 8\nweight_bits = 8\n'
        f"[train]\n{small}[finetune]\n{small}calib_images = 16\neval_images = 8\n"
    )
    assert run_cli(["reproduce", str(path), "--out", str(tmp_path / "run")]) == 0
    result = tmp_path / "run" / "t8" / "eval.json"
    data = json.loads(result.read_text())
    assert (data["model"], data["dataset"], data["time_steps"], data["images"]) == ("resnet44", "cifar100", 8, 8)
    text = report_markdown([result])
    cells = _row_line(text, "**Table 3**", ["Radix Encoding (this work)", "ResNet-44"])
    assert cells[5] == f"{100 * data['accuracy']:.1f}%"
    # Running the recipe again resumes both finished runs instead of failing on existing output.
    assert run_cli(["reproduce", str(path), "--out", str(tmp_path / "run")]) == 0


def test_cost_check_lists_every_cell(capsys):
    assert run_cli(["report", "--cost-check"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 2 |") or line.startswith("| 3 |")]
    assert len(lines) == 18 * 2 + 8 * 3
    assert sum(line.endswith("| within 2 % |") for line in lines) == 48
    assert sum(line.endswith("| at printed precision |") for line in lines) == 12
    with pytest.raises(RadixSNNError):
        run_cli(["report", "--cost-check", "x.json"])
