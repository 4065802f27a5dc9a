"""Output files: checked before any work, written atomically, with ordinary permissions.

Every file radixsnn writes (SNN files, checkpoints, JSON, CSV, Markdown, figures) goes through
:func:`atomic_write`: the bytes go to a temporary file in the same folder, which then replaces the
target in one step, so a reader -- or a rerun after a crash, a full disk or Ctrl-C -- sees the previous
file or the new one, never a torn one. The file gets the permissions a plain ``open(path, "w")`` would
give (``0o666`` less the umask), not the ``0o600`` of a temporary file.

Commands call :func:`check_file` / :func:`check_folder` on their output paths before they start, so a
path that cannot be written fails in a second, not after an hour of training.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> check_file(folder / "a" / "b.json", "out") == folder / "a" / "b.json"
True
>>> write_text(folder / "a" / "b.json", "{}\\n").read_text()
'{}\\n'
>>> check_folder(folder / "a" / "b.json", "out")
Traceback (most recent call last):
radixsnn.errors.ConfigError: out must be a folder, but ... is a file
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from radixsnn.errors import ConfigError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _creatable_folder(folder: Path, argument: str) -> None:
    """Raise unless ``folder`` exists as a writable folder or can be created (nothing is created)."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(argument, f"cannot be created under {probe}: it is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(argument, f"cannot be written: no permission to write in {probe}")


def check_file(path: str | os.PathLike, argument: str = "path") -> Path:
    """``path`` as a :class:`Path` if a file can be written there (its folder exists or can be created,
    and the path is not a folder); raises :class:`ConfigError` naming ``argument`` otherwise."""
    path = Path(path)
    if str(path) in ("", "."):
        raise ConfigError(argument, "must name a file")
    if path.is_dir():
        raise ConfigError(argument, f"must be a file, but {path} is a folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(argument, f"cannot be written: {path} is read-only")
    _creatable_folder(path.parent, argument)
    return path


def check_folder(path: str | os.PathLike, argument: str = "out") -> Path:
    """``path`` as a :class:`Path` if it is, or can be created as, a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(argument, f"must be a folder, but {path} is a file")
    _creatable_folder(path, argument)
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], argument: str = "path") -> Path:
    """Write ``path`` through ``write(temporary_path)`` and move the result into place.

    The folder is created if needed. An ``OSError`` (full disk, no permission) becomes one
    :class:`ConfigError` naming ``argument``, and the previous file at ``path`` stays as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise ConfigError(argument, f"cannot be written to {path}: {exc.strerror or exc}") from None
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(argument, f"cannot be written to {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text(path: str | os.PathLike, text: str, argument: str = "path") -> Path:
    """Replace ``path`` with ``text`` (UTF-8), atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write, argument)


def write_json(path: str | os.PathLike, obj, argument: str = "path", indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (keys sorted, so files compare), atomically."""
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n", argument)
