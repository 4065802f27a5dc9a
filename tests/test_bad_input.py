"""Every sub-command against a table of bad inputs, as a careless user and an attacker would give them.

Each case must end with exit code 2 and one line on stderr that says what is wrong (the expected
words), no traceback, and nothing written: no output file, no output folder. Errors must come before
any expensive work -- the data folder here is empty, so a command that reached its data would fail
with "no ... data" instead of the expected words.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from radixsnn.cli import main
from radixsnn.models import create_model


class Evil:
    """Unpickling this would run a shell command."""

    def __reduce__(self):
        return (os.system, ("touch HACKED",))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Input files, good and bad, in a folder of their own."""
    d = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    good = create_model("resnet20").state_dict()
    torch.save(good, d / "good.th")
    nan = dict(good)
    nan["linear.weight"] = torch.full_like(good["linear.weight"], float("nan"))
    torch.save(nan, d / "nan.th")
    torch.save({"fc.weight": torch.zeros(2, 2)}, d / "other.th")
    (d / "empty.th").write_bytes(b"")
    (d / "garbage.th").write_bytes(b"not a checkpoint" * 10)
    (d / "evil.th").write_bytes(pickle.dumps(Evil()))
    (d / "folder").mkdir()
    (d / "a_file").write_text("x")
    (d / "latin1.json").write_bytes('{"model": "caf\xe9"}'.encode("latin-1"))
    (d / "list.json").write_text("[1, 2]")
    (d / "steps_zero.json").write_text('{"default": 4, "conv1": [4, 0]}')
    (d / "steps_short.json").write_text('{"default": 4, "conv1": [4, 3]}')
    (d / "acc_text.json").write_text('{"model": "resnet20", "accuracy": "high", "time_steps": 4}')
    (d / "acc_150.json").write_text('{"model": "resnet20", "accuracy": 150, "time_steps": 4}')
    (d / "acc_nan.json").write_text('{"model": "resnet20", "accuracy": NaN, "time_steps": 4}')
    (d / "t99.json").write_text('{"model": "resnet20", "accuracy": 0.9, "time_steps": 99}')
    row = '[row]\nmodel = "resnet20"\ndataset = "cifar10"\ntime_steps = 4\nweight_bits = 8\n'
    (d / "quoted.toml").write_text(row + '[finetune]\n"time-steps" = 2\n')
    (d / "nan_lr.toml").write_text(row + "[finetune]\nlr = nan\nepochs = 1\n")
    (d / "t64.toml").write_text(row.replace("time_steps = 4", "time_steps = 64"))
    (d / "broken.toml").write_text("[row\n")
    (d / "latin1.toml").write_bytes(row.encode() + b"# caf\xe9\n")
    (d / "bad.snn").write_bytes(b"\x00" * 64)
    run = d / "run"
    run.mkdir()
    (run / "last.safetensors").write_bytes(b"garbage")
    empty = d / "no-data"
    empty.mkdir()
    return d


def cases(d: Path, out: Path) -> list[tuple[list[str], str]]:
    """``(argv, words the one error line must contain)``; every output goes under ``out``."""
    w = ["--model", "resnet20", "--weights", str(d / "good.th")]
    o = str(out / "x")
    return [
        # convert
        (["convert", *w, "-T", "0", "--out", o], "--time-steps must be an integer in 1..16"),
        (["convert", *w, "-T", "17", "--out", o], "--time-steps must be an integer in 1..16"),
        (["convert", *w, "-T", "4", "--weight-bits", "1", "--out", o], "--weight-bits"),
        (["convert", *w, "-T", "4", "--input-bits", "9", "--out", o], "--input-bits"),
        (["convert", *w, "-T", "default=4,conv1=17", "--out", o], "--time-steps must be an integer in 1..16, got 17"),
        (["convert", *w, "-T", "conv1=3", "--out", o], "--time-steps a per-layer assignment needs a 'default=V'"),
        (["convert", *w, "-T", "default=4,layer9.conv=3", "--out", o], "--time-steps names a layer 'layer9.conv'"),
        (["convert", *w, "-T", "4", "--weight-bits", "default=8,output=1", "--out", o], "--weight-bits must be an integer in 2..16"),
        (["convert", *w, "-T", str(d / "list.json"), "--out", o], "must hold a JSON object with an integer 'default'"),
        (["convert", *w, "-T", str(d / "steps_zero.json"), "--out", o], "--time-steps must be an integer in 1..16, got 0"),
        (["convert", *w, "-T", str(d / "steps_short.json"), "--out", o], "--time-steps of layer 'conv1' must be an integer or a list of 16"),
        (["convert", *w, "-T", "4", "--weight-grid", "min", "--out", o], "--weight-grid"),
        (["convert", *w, "-T", "4", "--gains", "fast", "--out", o], "--gains"),
        (["convert", *w, "-T", "4", "--calib", "percentile99", "--out", o], "--calib must be 'mse' or 'percentile:P'"),
        (["convert", *w, "-T", "4", "--calib", "percentile:inf", "--out", o], "--calib percentile must lie in (0, 100]"),
        (["convert", *w, "-T", "4", "--calib", "percentile:0", "--out", o], "--calib percentile must lie in (0, 100]"),
        (["convert", *w, "-T", "4", "--calib-images", "0", "--out", o], "--calib-images must be at least 1"),
        (["convert", *w, "-T", "4", "--act-scale", "neuron", "--out", o], "--act-scale invalid choice"),
        (["convert", *w, "-T", "4", "--crop-pct", "0", "--out", o], "--crop-pct must lie in (0, 1]"),
        (["convert", *w, "-T", "4", "--crop-pct", "nan", "--out", o], "--crop-pct must lie in (0, 1]"),
        (["convert", *w, "-T", "4", "--interpolation", "cubic", "--out", o], "--interpolation invalid choice"),
        (["convert", *w, "-T", "4", "--workers", "-1", "--out", o], "--workers must not be negative"),
        (["convert", *w, "-T", "4", "--dataset", "folder", "--out", o], "--data-dir is required for the folder dataset"),
        (["convert", *w, "-T", "4", "--dataset", "folder", "--data-dir", str(d / "no-data"), "--out", o],
         "has no train/<class>/ or val/<class>/ folders"),
        (["convert", *w, "-T", "4", "--out", str(d / "folder")], "--out must be a file"),
        (["convert", *w, "-T", "4", "--out", str(d / "a_file" / "x.snn")], "--out cannot be created"),
        (["convert", *w, "-T", "4", "--device", "tpu", "--out", o], "--device 'tpu'"),
        (["convert", "--model", "resnet21", "--weights", str(d / "good.th"), "-T", "4", "--out", o], "resnet21"),
        (["convert", "--model", "resnet20", "--weights", str(d / "none.th"), "-T", "4", "--out", o], "--weights file not found"),
        (["convert", "--model", "resnet20", "--weights", str(d / "empty.th"), "-T", "4", "--out", o], "the file is empty"),
        (["convert", "--model", "resnet20", "--weights", str(d / "garbage.th"), "-T", "4", "--out", o], "cannot read"),
        (["convert", "--model", "resnet20", "--weights", str(d / "evil.th"), "-T", "4", "--out", o], "weights_only"),
        (["convert", "--model", "resnet20", "--weights", str(d / "nan.th"), "-T", "4", "--out", o], "NaN or infinite"),
        (["convert", "--model", "resnet20", "--weights", str(d / "other.th"), "-T", "4", "--out", o], "does not fit this model"),
        # evaluate
        (["evaluate", str(d / "none.snn")], "not found"),
        (["evaluate", str(d / "folder")], "not found"),
        (["evaluate", str(d / "bad.snn")], "bad.snn"),
        (["evaluate", str(d / "bad.snn"), "--limit", "0"], "--limit must be at least 1"),
        (["evaluate", str(d / "bad.snn"), "--crop-pct", "1.5"], "--crop-pct must lie in (0, 1]"),
        (["train", "--model", "resnet20", "--epochs", "1", "--dataset", "folder", "--data-dir", str(d / "no-data"),
          "--out", o], "has no train/<class>/ or val/<class>/ folders"),
        (["evaluate", str(d / "bad.snn"), "--batch-size", "-3"], "--batch-size must be at least 1"),
        (["evaluate", str(d / "bad.snn"), "--json", str(d / "folder")], "--json must be a file"),
        (["evaluate", str(d / "bad.snn"), "--engine", "analog"], "--engine"),
        # train
        (["train", "--model", "resnet20", "--epochs", "1", "--lr", "nan", "--out", o], "--lr must be positive, got 'nan'"),
        (["train", "--model", "resnet20", "--epochs", "1", "--lr", "-0.1", "--out", o], "--lr must be positive"),
        (["train", "--model", "resnet20", "--epochs", "1", "--weight-decay", "inf", "--out", o], "--weight-decay must not be negative"),
        (["train", "--model", "resnet20", "--epochs", "1", "--momentum", "1", "--out", o], "--momentum must lie in [0, 1)"),
        (["train", "--model", "resnet20", "--epochs", "0", "--out", o], "--epochs must be at least 1"),
        (["train", "--model", "resnet20", "--epochs", "2", "--eval-every", "0", "--out", o], "--eval-every must be at least 1"),
        (["train", "--model", "resnet20", "--epochs", "2", "--warmup-epochs", "2", "--out", o], "--warmup-epochs must lie in [0, epochs = 2)"),
        (["train", "--model", "resnet20", "--epochs", "2", "--warmup-epochs", "-1", "--out", o], "--warmup-epochs"),
        (["train", "--model", "resnet20", "--epochs", "2", "--momentum", "0", "--nesterov", "--out", o], "--nesterov needs a momentum above 0"),
        (["train", "--model", "resnet20", "--epochs", "1", "--out", str(d / "a_file")], "--out must be a folder"),
        (["train", "--model", "nope", "--epochs", "1", "--out", o], "--model 'nope' is unknown"),
        (["train", "--model", "resnet20", "--epochs", "1", "--device", "tpu", "--out", o], "--device 'tpu'"),
        (["train", "--resume", "--out", str(d / "run")], "cannot be read"),
        # finetune
        (["finetune", *w, "-T", "4", "--distill", "nan", "--out", o], "--distill must lie in [0, 1]"),
        (["finetune", *w, "-T", "4", "--distill", "1.5", "--out", o], "--distill must lie in [0, 1]"),
        (["finetune", *w, "-T", "4", "--mixup", "-1", "--out", o], "--mixup"),
        (["finetune", *w, "-T", "4", "--distill-temperature", "0", "--out", o], "--distill-temperature"),
        (["finetune", *w, "-T", "4", "--distill-temperature", "inf", "--out", o], "--distill-temperature"),
        (["finetune", *w, "-T", "4", "--ema", "1", "--out", o], "--ema must lie in [0, 1)"),
        (["finetune", *w, "-T", "4", "--scale-lr", "0", "--out", o], "--scale-lr must be positive"),
        (["finetune", *w, "-T", "4", "--scale-lr", "nan", "--out", o], "--scale-lr must be positive"),
        (["finetune", *w, "-T", "4", "--teacher", "resnet56", "--out", o], "--teacher must be NAME=WEIGHTS"),
        (["finetune", *w, "-T", "4", "--teacher", f"nope={d / 'good.th'}", "--out", o], "--teacher 'nope' is not a registered model"),
        (["finetune", *w, "-T", "4", "--teacher", f"resnet20={d / 'missing.th'}", "--out", o], "weights file not found"),
        (["finetune", *w, "-T", "4", "--teacher", f"resnet20={d / 'nan.th'}", "--out", o], "NaN or infinite"),
        (["finetune", *w, "-T", "4", "--distill", "0", "--teacher", f"resnet20={d / 'good.th'}", "--out", o],
         "--teacher needs distillation (--distill > 0)"),
        (["train", "--model", "resnet20", "--epochs", "1", "--ema", "-0.5", "--out", o], "--ema must lie in [0, 1)"),
        (["finetune", *w, "-T", "4", "--amp", "fp16", "--device", "cpu", "--out", o], "--amp fp16 needs a CUDA device"),
        (["train", "--model", "resnet20", "--epochs", "1", "--amp", "int8", "--out", o], "--amp invalid choice"),
        (["finetune", *w, "-T", "0", "--out", o], "--time-steps must be an integer in 1..16"),
        (["finetune", *w, "-T", "4", "--calib", "percentile:200", "--out", o], "--calib percentile must lie in (0, 100]"),
        (["finetune", *w, "-T", "4", "--out", str(d / "a_file")], "--out must be a folder"),
        (["finetune", "--model", "resnet20", "--weights", str(d / "nan.th"), "-T", "4", "--out", o], "NaN or infinite"),
        # demo
        (["demo", "--images", "0", "--out", o], "--images must be at least 1"),
        (["demo", "--threads", "0", "--out", o], "--threads must be at least 1"),
        (["demo", "-T", "0", "--out", o], "--time-steps must be an integer in 1..16"),
        (["demo", "--out", str(d / "a_file")], "--out must be a folder"),
        # rmse
        (["rmse", *w, "--percentile", "0", "--out", o], "--percentile must be a percentile in (0, 100]"),
        (["rmse", *w, "--percentile", "nan", "--out", o], "--percentile must be a percentile in (0, 100]"),
        (["rmse", *w, "--radix-steps", "0..3", "--out", o], "--radix-steps values must lie in 1..65536"),
        (["rmse", *w, "--rate-steps", "1..5000", "--out", o], "--rate-steps must lie in 1..4096"),
        (["rmse", *w, "--out", str(d / "a_file")], "--out must be a folder"),
        (["rmse", "--model", "resnet20", "--weights", str(d / "evil.th"), "--out", o], "weights_only"),
        # rate
        (["rate", *w, "--time-steps", "1..5000"], "--time-steps must lie in 1..4096"),
        (["rate", *w, "--percentile", "101"], "--percentile must be a percentile in (0, 100]"),
        (["rate", *w, "--init-membrane", "1.5"], "--init-membrane must lie in [0, 1)"),
        (["rate", *w, "--json", str(d / "folder")], "--json must be a file"),
        # search
        (["search", *w, "--budget", "-1", "--out", o], "--budget must be a non-negative number of points"),
        (["search", *w, "--budget", "nan", "--out", o], "--budget must be a non-negative number of points"),
        (["search", *w, "--candidates", "6,7", "--out", o], "--candidates need at least one T below the base 6"),
        (["search", *w, "--base", "17", "--out", o], "--base must be an integer in 1..16, got 17"),
        (["search", *w, "--confidence", "1", "--out", o], "--confidence must be in [0.5, 1)"),
        (["search", *w, "--confidence", "nan", "--out", o], "--confidence must be in [0.5, 1)"),
        (["search", *w, "--method", "random", "--out", o], "--method invalid choice"),
        (["search", *w, "--granularity", "neuron", "--out", o], "--granularity invalid choice"),
        (["search", *w, "--act-scale", "layer", "--out", o], "--act-scale must be 'channel' or 'auto' with granularity"),
        (["search", *w, "--verify-images", "-1", "--out", o], "--verify-images must not be negative"),
        (["search", *w, "--out", str(d / "a_file")], "--out must be a folder"),
        # sweep
        (["sweep", *w, "--time-steps", "0,4", "--out", o], "--time-steps values must lie in 1..65536"),
        (["sweep", *w, "--time-steps", "4,20", "--out", o], "--time-steps must be an integer in 1..16, got 20"),
        (["sweep", *w, "--weight-bits", "1", "--out", o], "--weight-bits must be an integer in 2..16, got 1"),
        (["sweep", *w, "--finetune-steps", "-1", "--out", o], "--finetune-steps must not be negative"),
        (["sweep", *w, "--lr", "0", "--out", o], "--lr must be positive"),
        (["sweep", *w, "--calib", "mean", "--out", o], "--calib must be 'mse' or 'percentile:P'"),
        (["sweep", *w, "--out", str(d / "a_file")], "--out must be a folder"),
        (["sweep", *w, "--points", str(d / "missing.json"), "--out", o], "results file not found"),
        (["sweep", *w, "--points", str(d / "nan.th"), "--out", o], "is not a JSON file"),
        (["sweep", *w, "--from", str(d / "missing.json"), "--out", o], "results file not found"),
        (["sweep", *w, "--from", str(d / "list.json"), "--out", o], "expected a JSON object"),
        (["sweep", *w, "--from", str(d / "acc_nan.json"), "--out", o], "not a sweep.json of radixsnn sweep"),
        # ops
        (["ops", "--model", "nope", "-T", "4"], "--model 'nope' is not a registered name"),
        (["ops", "--model", "resnet20", "-T", "0"], "--time-steps must be an integer in 1..16"),
        (["ops", "--model", "resnet20", "-T", "100"], "--time-steps must be an integer in 1..16"),
        (["ops", "--model", "resnet20", "-T", "4", "--json", str(d / "folder")], "--json must be a file"),
        # report
        (["report", str(d / "none.json")], "results file not found"),
        (["report", str(d / "folder")], "not a results file"),
        (["report", str(d / "latin1.json")], "not a JSON file"),
        (["report", str(d / "list.json")], "expected a JSON object"),
        (["report", str(d / "acc_text.json")], "accuracy must be a finite number"),
        (["report", str(d / "acc_150.json")], "accuracy must be an accuracy in [0, 100]"),
        (["report", str(d / "acc_nan.json")], "accuracy must be a finite number"),
        (["report", str(d / "t99.json")], "time_steps must be an integer in 1..16"),
        (["report", "--output", str(d / "folder")], "--output must be a file"),
        (["report", "--cost-check", str(d / "t99.json")], "--cost-check takes no result files"),
        # reproduce
        (["reproduce", str(d / "none.toml")], "file not found"),
        (["reproduce", str(d / "folder")], "not a recipe file"),
        (["reproduce", str(d / "latin1.toml")], "cannot be read as UTF-8"),
        (["reproduce", str(d / "broken.toml")], "not valid TOML"),
        (["reproduce", str(d / "quoted.toml"), "--out", o], "must not set 'time-steps'"),
        (["reproduce", str(d / "nan_lr.toml"), "--out", o], "--lr must be positive, got 'nan'"),
        (["reproduce", str(d / "t64.toml"), "--out", o], "time_steps must be an integer in 1..16"),
    ]


def _listing(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


@pytest.mark.parametrize("index", range(len(cases(Path("d"), Path("o")))))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(index, files, tmp_path, monkeypatch, capsys):
    argv, words = cases(files, tmp_path / "out")[index]
    monkeypatch.setenv("RADIXSNN_DATA_DIR", str(files / "no-data"))
    monkeypatch.chdir(tmp_path)
    before = _listing(files)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert words in lines[0], lines[0]
    assert lines[0].startswith(f"radixsnn {argv[0]}: error: "), lines[0]
    assert not (tmp_path / "out").exists(), "an output was written"
    assert not (tmp_path / "HACKED").exists(), "code ran from a checkpoint"
    assert _listing(files) == before, "an input folder was changed"
