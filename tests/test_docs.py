"""The documentation site: the tutorial's code runs as written, and every page of the nav exists.

The tutorial (docs/tutorial.md) is executed block by block: every ```python fence, in order, in one
namespace, from a scratch folder, with ``RADIXSNN_DATA_DIR`` / ``RADIXSNN_MODELS_DIR`` pointing at the
assets the ``cifar10_dir`` / ``models_dir`` fixtures found (skipped without them, failed in CI). The
site itself is built by ``make docs`` (``mkdocs build --strict``), which CI runs after the tests.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIAL = DOCS / "tutorial.md"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def python_blocks(markdown: str) -> list[tuple[int, str]]:
    """``(line, code)`` of every ```python fence of ``markdown``, in order (``line``: the fence's line)."""
    return [(markdown.count("\n", 0, m.start()) + 1, m.group(1)) for m in FENCE.finditer(markdown)]


def nav_pages(config: str) -> list[str]:
    """The Markdown pages the ``nav`` of an mkdocs.yml names (read without a YAML parser: the docs
    extra need not be installed for the tests)."""
    nav = re.search(r"^nav:\n((?:[ \t]+.*\n|\n)+)", config, re.MULTILINE)
    assert nav, "mkdocs.yml has no nav"
    return re.findall(r"^[ \t]+-[^\n]*?([\w./-]+\.md)[ \t]*$", nav.group(1), re.MULTILINE)


def test_every_nav_page_exists():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert re.search(r"^docs_dir: docs$", config, re.MULTILINE)
    pages = nav_pages(config)
    assert {"index.md", "tutorial.md", "api.md", "guide/convert.md"} <= set(pages), pages
    assert len(pages) == len(set(pages)), "a page is listed twice"
    missing = [p for p in pages if not (DOCS / p).is_file()]
    assert not missing, f"pages in mkdocs.yml's nav that docs/ lacks: {missing}"


def test_the_fence_reader():
    text = "a\n```python\nx = 1\n```\n```text\nno\n```\n\n```python\ny = x + 1\n```\n"
    assert python_blocks(text) == [(2, "x = 1\n"), (9, "y = x + 1\n")]


@pytest.mark.cifar
@pytest.mark.pretrained
@pytest.mark.slow
def test_tutorial_runs(cifar10_dir, models_dir, one_thread, tmp_path, monkeypatch, capsys):
    import radixsnn as rs
    from radixsnn.core.rules import RULES

    blocks = python_blocks(TUTORIAL.read_text(encoding="utf-8"))
    assert len(blocks) >= 8, "the tutorial lost its code"
    monkeypatch.setenv("RADIXSNN_DATA_DIR", str(cifar10_dir))
    monkeypatch.setenv("RADIXSNN_MODELS_DIR", str(models_dir))
    monkeypatch.chdir(tmp_path)  # the tutorial writes its .snn file into the current folder
    namespace = {"__name__": "tutorial"}
    try:
        for line, code in blocks:
            exec(compile(code, f"{TUTORIAL}:{line}", "exec"), namespace)
    finally:
        block = namespace.get("GatedConv")
        leaked = block is not None and RULES.lookup(block) is not None
        if leaked:  # a failed run must not leave its rule to the tests that follow
            rs.unregister_rule(block)
    out = capsys.readouterr().out
    assert "refused:" in out and (tmp_path / "resnet20_t4.snn").is_file()
    assert not leaked, "the tutorial left its rule registered"
