"""The documentation cannot rot: every executed code block of every page runs here.

A block runs when its fence reads ```` ```python exec="true" ... ```` (the blocks that
markdown-exec executes when the site is built). Blocks of one page share a namespace per
`session="..."` (one unnamed session per page otherwise), in page order, in a temporary
working directory, exactly as the site build runs them. The README's Python example runs
too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<code>.*?)^```\s*$", re.S | re.M)


def executed_blocks(text: str) -> list[tuple[str, str, int]]:
    """(session, code, line) of each executed python block, in page order."""
    blocks = []
    for m in FENCE.finditer(text):
        info = m.group("info").strip()
        if not info.startswith("python") or 'exec="true"' not in info.replace("'", '"'):
            continue
        session = re.search(r'session="([^"]*)"', info)
        line = text[: m.start()].count("\n") + 2
        blocks.append((session.group(1) if session else "", m.group("code"), line))
    return blocks


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if executed_blocks(p.read_text()))


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_page_code_runs(page, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    namespaces: dict[str, dict] = {}
    for session, code, line in executed_blocks(page.read_text()):
        ns = namespaces.setdefault(session, {"__name__": "__main__"})
        compiled = compile("\n" * (line - 1) + code, str(page), "exec")
        exec(compiled, ns)  # a failing block fails here, with the page's line numbers
    import matplotlib.pyplot as plt

    plt.close("all")


def test_there_are_tutorials():
    tutorials = [p for p in pages() if p.parent.name == "tutorials"]
    assert len(tutorials) >= 1


def test_readme_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "README.md").read_text()
    blocks = [m.group("code") for m in FENCE.finditer(text) if m.group("info").strip() == "python"]
    assert blocks, "README has a Python example"
    namespace = {"__name__": "__main__"}  # the README's blocks continue one another
    for code in blocks:
        exec(compile(code, "README.md", "exec"), namespace)
