"""convert / evaluate: bad input gives one clear line and exit code 2, never a traceback."""
import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from radixsnn.cli import build_parser, main

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def radixsnn(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "radixsnn", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def assert_clean_error(proc, *words):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_help_lists_commands():
    out = radixsnn("--help").stdout
    for cmd in ("convert", "evaluate"):
        assert cmd in out


@pytest.mark.parametrize("command", ["convert", "evaluate", "train", "finetune", "sweep", "search", "rate", "rmse", "demo"])
def test_long_commands_take_no_progress(command, capsys):
    assert main([command, "--help"]) == 0
    assert "--no-progress" in capsys.readouterr().out


def test_every_option_of_every_command_is_documented():
    """docs/cli.md names each long option in the command's section, in the page's header (options every
    command shares) or in a section the command's section refers to (`convert`, options of train)."""
    doc = DOCS.read_text()
    header = doc.split("\n## ", 1)[0]
    sections = {m.group(1): m.group(2) for m in re.finditer(r"^## `radixsnn (\w+)`(.*?)(?=^## |\Z)", doc, re.S | re.M)}
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = []
    for name, parser in commands.items():
        assert name in sections, f"docs/cli.md has no section for {name}"
        own = sections[name]
        text = header + own + "".join(sections[o] for o in sections
                                      if o != name and re.search(rf"`(radixsnn )?{o}`|options of {o}\b", own))
        missing += [f"{name} {o}" for a in parser._actions for o in a.option_strings
                    if o.startswith("--") and o != "--help" and o not in text]
    assert not missing, missing


def test_convert_missing_weights(tmp_path):
    assert_clean_error(radixsnn("convert", "--model", "resnet20", "--weights", tmp_path / "none.th", "-T", "4",
                                "--out", tmp_path / "o.snn"), "not found")


def test_convert_unknown_model(tmp_path):
    (tmp_path / "w.th").write_bytes(b"x")
    assert_clean_error(radixsnn("convert", "--model", "resnet21", "--weights", tmp_path / "w.th", "-T", "4",
                                "--out", tmp_path / "o.snn"), "resnet21")


@pytest.mark.parametrize("T", [0, 17, -2])
def test_convert_time_steps_out_of_range(tmp_path, T):
    assert_clean_error(radixsnn("convert", "--model", "resnet20", "--weights", tmp_path / "w.th", "-T", T,
                                "--out", tmp_path / "o.snn"), "--time-steps must be an integer in 1..16")


def test_convert_corrupt_weights(tmp_path):
    (tmp_path / "w.th").write_bytes(b"garbage")
    assert_clean_error(radixsnn("convert", "--model", "resnet20", "--weights", tmp_path / "w.th", "-T", "4",
                                "--out", tmp_path / "o.snn"), "cannot read")


def test_convert_data_dir_without_cifar(tmp_path, resnet20_weights):
    assert_clean_error(radixsnn("convert", "--model", "resnet20", "--weights", resnet20_weights, "-T", "4",
                                "--data-dir", tmp_path, "--out", tmp_path / "o.snn"), "no cifar10 data")


def test_evaluate_missing_and_corrupt_file(tmp_path):
    assert_clean_error(radixsnn("evaluate", tmp_path / "none.snn"), "not found")
    (tmp_path / "bad.snn").write_bytes(b"\x00" * 64)
    assert_clean_error(radixsnn("evaluate", tmp_path / "bad.snn"), "bad.snn")
