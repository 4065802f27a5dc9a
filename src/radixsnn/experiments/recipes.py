"""Recipes for the paper's rows: one TOML file in ``configs/`` per row of Tables 2 and 3.

A recipe has three tables::

    [row]        # which paper row: table, model, dataset, time_steps, weight_bits, out
    [train]      # options of `radixsnn train` (float network), e.g. epochs, lr, batch_size, device
    [finetune]   # options of `radixsnn finetune` (quantization-aware fine-tuning at T steps)

Keys of ``[train]`` and ``[finetune]`` are passed on as command-line options (``batch_size = 128``
-> ``--batch-size 128``; ``true`` -> a bare flag, ``false`` -> left out). The recipe adds the options
the row fixes: the float run goes to ``OUT/float`` (``--resume``, so recipes that share a float network
train it once), the fine-tuned SNN to ``OUT/t<T>``, whose ``eval.json`` is what ``radixsnn report`` reads.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from radixsnn.core.quant import MAX_TIME_STEPS
from radixsnn.errors import ConfigError
from radixsnn.models import list_models

DATASETS = ("cifar10", "cifar100")
MAX_RECIPE_BYTES = 64 << 10
ROW_KEYS = {"table", "model", "dataset", "time_steps", "weight_bits", "out", "note"}
#: Options ``reproduce`` sets itself; a recipe must not set them in [train] / [finetune].
RESERVED = {"model", "dataset", "out", "resume", "weights", "time_steps", "weight_bits"}


@dataclass(frozen=True)
class Recipe:
    """One paper row's recipe: the row it reproduces and the ``train`` / ``finetune`` options."""

    path: Path
    table: int
    model: str
    dataset: str
    time_steps: int
    weight_bits: int
    out: Path
    train: dict
    finetune: dict

    @property
    def float_dir(self) -> Path:
        return self.out / "float"

    @property
    def snn_dir(self) -> Path:
        return self.out / f"t{self.time_steps}"

    def commands(self) -> list[list[str]]:
        """The ``radixsnn`` argument lists the recipe runs, in order."""
        train = ["train", "--model", self.model, "--dataset", self.dataset, "--out", str(self.float_dir), "--resume"]
        finetune = [
            "finetune", "--weights", str(self.float_dir / "best.safetensors"), "--model", self.model,
            "--dataset", self.dataset, "--time-steps", str(self.time_steps), "--weight-bits", str(self.weight_bits),
            "--out", str(self.snn_dir), "--resume",
        ]
        return [train + _options(self.train), finetune + _options(self.finetune)]


def _options(table: dict) -> list[str]:
    argv: list[str] = []
    for key, value in table.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False:
            continue
        else:
            argv += [flag, str(value)]
    return argv


def load_recipe(path: str | Path, out: str | Path | None = None) -> Recipe:
    """Read and check a recipe; ``out`` overrides its ``[row] out`` folder."""
    path = Path(path)
    if not path.exists():
        raise ConfigError("config", f"file not found: {path}")
    if not path.is_file() or path.stat().st_size > MAX_RECIPE_BYTES:
        raise ConfigError("config", f"{path} is not a recipe file (a folder, or larger than {MAX_RECIPE_BYTES >> 10} KiB)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("config", f"{path} cannot be read as UTF-8 text ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"row", "train", "finetune"}
    if unknown:
        raise ConfigError("config", f"{path}: unknown table(s) {', '.join(sorted(unknown))}; expected [row], [train], [finetune]")
    row = data.get("row")
    if not isinstance(row, dict):
        raise ConfigError("config", f"{path}: missing the [row] table")
    extra = set(row) - ROW_KEYS
    if extra:
        raise ConfigError("config", f"{path}: unknown [row] key(s) {', '.join(sorted(extra))}")
    for key in ("model", "dataset", "time_steps", "weight_bits"):
        if key not in row:
            raise ConfigError("config", f"{path}: [row] needs {key!r}")
    if row["model"] not in list_models():
        raise ConfigError("config", f"{path}: unknown model {row['model']!r}; choose one of: {', '.join(list_models())}")
    if row["dataset"] not in DATASETS:
        raise ConfigError("config", f"{path}: dataset must be one of {', '.join(DATASETS)}, got {row['dataset']!r}")
    for key, lo, hi in (("time_steps", 1, MAX_TIME_STEPS), ("weight_bits", 2, 16)):
        if not isinstance(row[key], int) or isinstance(row[key], bool) or not lo <= row[key] <= hi:
            raise ConfigError("config", f"{path}: [row] {key} must be an integer in {lo}..{hi}, got {row[key]!r}")
    tables = {}
    for name in ("train", "finetune"):
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError("config", f"{path}: [{name}] must be a table")
        options = {}
        for key, value in table.items():
            option = key.replace("-", "_")  # "time-steps" and time_steps are the same option
            if not re.fullmatch(r"[a-z][a-z0-9_]*", option):
                raise ConfigError("config", f"{path}: [{name}] key {key!r} is not an option name")
            if option in RESERVED:
                raise ConfigError("config", f"{path}: [{name}] must not set {key!r}; reproduce sets it from [row]")
            if option in options:
                raise ConfigError("config", f"{path}: [{name}] sets {option!r} twice")
            if not isinstance(value, (str, int, float, bool)):
                raise ConfigError("config", f"{path}: [{name}] {key} must be a string, number or boolean")
            options[option] = value
        tables[name] = options
    default_out = Path("runs") / f"{row['model']}-{row['dataset']}"
    return Recipe(path, int(row.get("table", 0)), row["model"], row["dataset"], row["time_steps"],
                  row["weight_bits"], Path(out) if out else Path(row.get("out", default_out)),
                  tables["train"], tables["finetune"])
