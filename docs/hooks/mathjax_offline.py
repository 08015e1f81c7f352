"""mkdocs hook: serve MathJax from the built site itself, so that the pages render their
mathematics without a network connection.

MathJax 3 comes from the package index at build time (the `docs` extra's
`django-static-mathjax`, which ships MathJax's release files; Django itself is not needed)
and is copied into `<site>/javascripts/mathjax/`: the combined TeX + MathML + CommonHTML
component that `mkdocs.yml` loads, with the fonts, the TeX extensions it may load on demand,
and the menu and accessibility components. Nothing of it is committed to the repository.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

#: what the page needs from MathJax's `es5/` folder
_PARTS = ("tex-mml-chtml.js", "input", "output/chtml", "ui", "a11y", "adaptors", "sre")


def mathjax_root() -> Path:
    """MathJax's `es5/` folder in the installed `django-static-mathjax` package."""
    spec = importlib.util.find_spec("mathjax")
    root = None
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5"
    if root is None or not (root / "tex-mml-chtml.js").is_file():
        raise RuntimeError(
            "mathjax_offline: MathJax's files were not found; install the docs extra"
            ' (pip install -e ".[docs]", which includes django-static-mathjax)'
        )
    return root


def on_post_build(config, **kwargs) -> None:
    src, dst = mathjax_root(), Path(config["site_dir"]) / "javascripts" / "mathjax"
    for part in _PARTS:
        if (src / part).is_dir():
            shutil.copytree(src / part, dst / part, dirs_exist_ok=True)
        else:
            (dst / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / part, dst / part)
