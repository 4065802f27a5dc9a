"""Published float weights: fp16 safetensors files with their provenance, checksums and a table.

The networks this project trains are published in the repository's ``weights/`` folder, as the CIFAR
model repositories people use publish theirs: one fp16 safetensors file per network, named
``<name>-<first 8 hex digits of its SHA-256>.safetensors``, whose metadata says what it is (model,
dataset, classes, test accuracy of this very file, the ``radixsnn train`` command and commit that made
it), a ``SHA256SUMS`` file (``sha256sum -c`` reads it) and a ``README.md`` table made from the files'
metadata. Load one like any checkpoint: ``rs.create_model("mobilenet", weights="weights/...")``.

>>> import tempfile, torch, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> state = {"w": torch.tensor([1.0, 0.5]), "n": torch.tensor(3)}
>>> path = write_published(state, folder, name="tiny", info={"model": "tiny", "dataset": "digits",
...                        "num_classes": "2", "accuracy": "50.00", "recipe": "radixsnn train ...",
...                        "commit": "abc", "epochs": "1", "train_hours": "0.1"})
>>> write_index(folder)
>>> path.name.startswith("tiny-"), read_info(path)["model"], verify_folder(folder)
(True, 'tiny', ['tiny'])
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from radixsnn.core.inputs import normalize
from radixsnn.errors import ConfigError
from radixsnn.models.registry import model_config
from radixsnn.outputs import atomic_write, write_text

FORMAT = "radixsnn-weights"
#: What every published file's metadata holds (strings, as safetensors metadata must be).
FIELDS = ("model", "dataset", "num_classes", "accuracy", "recipe", "commit", "epochs", "train_hours")
SUMS = "SHA256SUMS"
TABLE = "README.md"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def as_fp16(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with floating tensors in fp16 (integers, such as BatchNorm's step counter, kept)."""
    return {k: (v.to(torch.float16) if v.dtype.is_floating_point else v).contiguous() for k, v in state.items()}


def _canonical(data: bytes) -> bytes:
    """The safetensors bytes with their JSON header's keys sorted: safetensors writes the metadata in hash
    order, which differs from run to run, and a published file's name carries its checksum."""
    size = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + size]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the data stays 8-byte aligned, as safetensors writes it
    return len(header).to_bytes(8, "little") + header + data[8 + size:]


def check_name(name: str) -> str:
    """``name`` if it can name published weights (lower-case letters, digits, ``.``, ``_``, ``-``)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError("name", f"must be lower-case letters, digits, '.', '_' or '-', got {name!r}")
    return name


def write_published(state: dict[str, torch.Tensor], folder: str | Path, *, name: str, info: dict[str, str]) -> Path:
    """Write ``state`` as fp16 ``folder/<name>-<sha8>.safetensors`` with ``info`` (every key of
    :data:`FIELDS`) as its metadata; replaces an earlier file of the same ``name``. Returns the path."""
    check_name(name)
    missing = [k for k in FIELDS if not isinstance(info.get(k), str)]
    if missing:
        raise ConfigError("info", f"needs the text fields {', '.join(missing)}")
    folder = Path(folder)
    data = _canonical(save(as_fp16(state), metadata={"format": FORMAT, "name": name, **{k: info[k] for k in FIELDS}}))
    path = folder / f"{name}-{_sha256(data)[:8]}.safetensors"
    for old in folder.glob(f"{name}-*.safetensors"):
        if old != path and read_info(old)["name"] == name:
            old.unlink()
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), "out")
    return path


def read_info(path: str | Path) -> dict[str, str]:
    """The metadata of a published file (raises :class:`ConfigError` naming ``weights`` if it is none)."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ConfigError("weights", f"cannot read {path}: {exc}") from None
    if meta.get("format") != FORMAT or any(k not in meta for k in FIELDS):
        raise ConfigError("weights", f"{path} is not a published radixsnn weights file")
    return meta


def published_files(folder: str | Path) -> list[Path]:
    """The published weight files of ``folder``, sorted by name."""
    return sorted(Path(folder).glob("*.safetensors"))


def sums_text(folder: str | Path) -> str:
    """``SHA256SUMS`` for the published files of ``folder`` (the ``sha256sum`` format)."""
    return "".join(f"{_sha256(p.read_bytes())}  {p.name}\n" for p in published_files(folder))


def table_text(folder: str | Path) -> str:
    """The folder's ``README.md``: one row per published file, from its metadata."""
    rows = []
    for p in published_files(folder):
        m = read_info(p)
        rows.append(f"| [`{p.name}`]({p.name}) | `{m['model']}` | {m['dataset']} | {m['accuracy']} % | {m['epochs']} "
                    f"({m['train_hours']} h) | `{m['recipe']}` | `{m['commit'][:8]}` |")
    return (
        "# Published weights\n\n"
        "<!-- Generated by `python scripts/weights.py table` from the files' metadata; do not edit by hand. -->\n\n"
        "Float networks trained with `radixsnn train` on this project's CPUs, stored as fp16 safetensors "
        "(the accuracy is this fp16 file's, on all 10,000 test images). Check them with "
        f"`sha256sum -c {SUMS}`; load one with `rs.create_model(model, weights=path)` or `--weights path`.\n\n"
        "| file | model | data | test accuracy | epochs (hours) | recipe | commit |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def write_index(folder: str | Path) -> None:
    """Rewrite ``SHA256SUMS`` and ``README.md`` of ``folder`` from its files."""
    folder = Path(folder)
    write_text(folder / SUMS, sums_text(folder))
    write_text(folder / TABLE, table_text(folder))


def verify_folder(folder: str | Path) -> list[str]:
    """Raise :class:`ConfigError` naming ``weights`` unless every file's checksum, name and metadata and the
    folder's ``SHA256SUMS`` and ``README.md`` agree; returns the published names."""
    folder = Path(folder)
    names = []
    for p in published_files(folder):
        info = read_info(p)
        if p.name != f"{info['name']}-{_sha256(p.read_bytes())[:8]}.safetensors":
            raise ConfigError("weights", f"{p.name}: its name does not carry its name and checksum")
        names.append(info["name"])
    for file, want in ((SUMS, sums_text(folder)), (TABLE, table_text(folder))):
        if not (folder / file).is_file() or (folder / file).read_text() != want:
            raise ConfigError("weights", f"{folder / file} does not match the files: run `python scripts/weights.py table`")
    return names


def accuracy(model: torch.nn.Module, name: str, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Accuracy in percent of ``model``, the registered model ``name`` (whose config gives the input
    normalization), on uint8 ``images``: what a published file's ``accuracy`` records for the test split."""
    config = model_config(name)
    correct = 0
    with torch.no_grad():
        for x, y in zip(images.split(batch_size), labels.split(batch_size)):
            correct += int((model.eval()(normalize(x, config.mean, config.std)).argmax(1) == y).sum())
    return 100 * correct / len(images)
