"""The docs math check (`docs/hooks/check_math.py`): it tells typeset pages from raw ones.

CI runs it on the built site in headless Chromium (`.ci/run`); here its DOM scan is checked on
fixed HTML, and, where Chromium and the docs extra's MathJax are installed, the whole check on a
one-page site served offline.
"""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "hooks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, mod)
    spec.loader.exec_module(mod)
    return mod


RAW = '<p>inline <span class="arithmatex">\\(\\alpha_t\\)</span></p>'
TYPESET = ('<p>inline <span class="arithmatex"><mjx-container class="MathJax"><mjx-math>'
           '<mjx-mi>a</mjx-mi></mjx-math></mjx-container></span></p>')


def test_scan_tells_typeset_from_raw():
    check = _load("check_math")
    raw, done = check.scan(RAW), check.scan(TYPESET)
    assert [e["typeset"] for e in raw.elements] == [False]
    assert check.RAW.search(raw.elements[0]["text"])
    assert [e["typeset"] for e in done.elements] == [True]
    assert not check.RAW.search(done.elements[0]["text"])


def test_offline_page_is_typeset_in_a_browser(tmp_path):
    check = _load("check_math")
    if check.find_browser(None) is None:
        pytest.skip("no Chromium (apt-get install chromium)")
    hook = _load("mathjax_offline")
    try:
        hook.mathjax_root()
    except RuntimeError:
        pytest.skip("MathJax's files are not installed (the docs extra's django-static-mathjax)")
    site = tmp_path / "site"
    hook.on_post_build({"site_dir": str(site)})
    shutil.copy(ROOT / "docs" / "javascripts" / "mathjax.js", site / "javascripts" / "mathjax.js")
    page = ('<html><head><script src="javascripts/mathjax.js"></script>'
            f'<script src="{check.LOCAL_MATHJAX}"></script></head><body>{RAW}'
            '<div class="arithmatex">\\[\\hat x_0 = \\frac{x}{\\alpha}\\]</div></body></html>')
    (site / "index.html").write_text(page)
    assert check.main([str(site)]) == 0
    (site / check.LOCAL_MATHJAX).unlink()  # without the local MathJax (and no network) it must fail
    assert check.main([str(site)]) == 1
