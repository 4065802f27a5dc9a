"""The reference results: every run of docs/results/runs.toml has its result file, made by the commands
the spec lists, and the README's table and docs/reference.md are exactly what those files give."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from radixsnn.errors import ConfigError, DataError
from radixsnn.experiments import reference

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
SPEC = reference.load_spec(RESULTS / "runs.toml")


@pytest.mark.parametrize("run", SPEC.runs, ids=lambda r: r.name)
def test_every_run_has_its_result_made_by_the_listed_commands(run):
    data = reference.read_result(run, RESULTS)  # refuses an SNN result whose logits differ from its QANN's
    assert data is not None, f"{run.name}: no docs/results/{run.name}.json (python scripts/results.py run {run.name})"
    assert data["provenance"]["commands"] == list(run.commands)
    if run.time_steps is not None:
        assert data["images"] == 10_000 and data["agreement"] == 1.0 and data["time_steps"] == run.time_steps


def test_pages_are_what_the_result_files_give():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "results.py"), "render", "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert reference.front_table(SPEC, RESULTS) in readme
    assert (ROOT / "docs" / "reference.md").read_text(encoding="utf-8") == reference.reference_page(SPEC, RESULTS)


def test_table_shows_each_stored_accuracy():
    table = reference.front_table(SPEC, RESULTS)
    for row in SPEC.rows:
        for run in row.runs:
            assert f"{100 * reference.read_result(run, RESULTS)['accuracy']:.2f} %" in table


ROW = """
[[row]]
name = "r20"
label = "ResNet-20"
weights = "w"
how = "post-training"
time_steps = [4]
commands = ["radixsnn convert --time-steps {T} --out {work}/{run}.snn"]
result = "{work}/{run}.json"
"""


@pytest.mark.parametrize("change, key", [
    (('name = "r20"', 'name = "R 20"'), "name"),
    (("time_steps = [4]", "time_steps = [4, 4]"), "time_steps"),
    (("time_steps = [4]", "time_steps = [0]"), "time_steps"),
    (("time_steps = [4]", 'time_steps = "4"'), "time_steps"),
    (('commands = ["radixsnn', 'commands = ["rm'), "commands"),
    (('label = "ResNet-20"', 'label = ""'), "label"),
    (('how = "post-training"', 'how = "x"\ncolour = "red"'), "spec"),
])
def test_a_malformed_spec_names_its_key(change, key):
    with pytest.raises(ConfigError) as err:
        reference.parse_spec(ROW.replace(*change))
    assert err.value.argument == key


def test_a_spec_refuses_a_name_used_twice_and_an_unknown_table():
    with pytest.raises(ConfigError, match="used twice"):
        reference.parse_spec(ROW + ROW)
    with pytest.raises(ConfigError, match="unknown tables"):
        reference.parse_spec(ROW + "[other]\nx = 1\n")


def test_the_runs_expand_per_time_step():
    spec = reference.parse_spec(ROW.replace("[4]", "[2, 8]"))
    assert [(r.name, r.commands[0]) for r in spec.rows[0].runs] == [
        ("r20-t2", "radixsnn convert --time-steps 2 --out {work}/r20-t2.snn"),
        ("r20-t8", "radixsnn convert --time-steps 8 --out {work}/r20-t8.snn")]


def test_a_result_that_breaks_exactness_is_refused(tmp_path):
    run = reference.parse_spec(ROW).rows[0].runs[0]
    result = {"accuracy": 0.9, "images": 10, "time_steps": 4, "agreement": 0.9, "model": "resnet20"}
    (tmp_path / "r20-t4.json").write_text(json.dumps(result))
    with pytest.raises(DataError, match="differ from its QANN"):
        reference.read_result(run, tmp_path)
    (tmp_path / "r20-t4.json").write_text(json.dumps(result | {"agreement": 1.0, "time_steps": 8}))
    with pytest.raises(DataError, match="T = 8"):
        reference.read_result(run, tmp_path)
    assert reference.read_result(run, tmp_path / "nowhere") is None
