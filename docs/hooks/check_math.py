"""Check that the built documentation typesets its mathematics offline, in a real browser.

    python docs/hooks/check_math.py SITE_DIR [--browser chromium] [--pages 0]

For the built site in SITE_DIR:

1. statically, every page loads MathJax from the site itself (no `http(s)://` script for
   it) and the loaded file exists;
2. in a headless Chromium with every host name unresolvable (`--host-resolver-rules`, so
   nothing can come from the network) and the site served from localhost, each page with
   mathematics is loaded and its DOM after the scripts ran is read (`--dump-dom`): every
   `arithmatex` element must hold MathJax output (`mjx-container`) and no raw `\\(`,
   `\\)`, `\\[` or `\\]` delimiter may remain in its text.

Exits 1 with the pages and the first failures when a check fails, 2 when no browser is found.
"""

from __future__ import annotations

import argparse
import functools
import html.parser
import http.server
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
LOCAL_MATHJAX = "javascripts/mathjax/tex-mml-chtml.js"
RAW = re.compile(r"\\[()\[\]]")


class MathScan(html.parser.HTMLParser):
    """The arithmatex elements of a page: for each, whether it holds an mjx-container, and its
    text outside MathJax's output (where raw delimiters would show); and the page's scripts."""

    def __init__(self):
        super().__init__()
        self.scripts: list[str] = []
        self.elements: list[dict] = []
        self._stack: list[tuple[str, bool, bool]] = []  # (tag, opens an arithmatex element, inside mjx)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
        is_math = "arithmatex" in (attrs.get("class") or "").split()
        in_mjx = (bool(self._stack) and self._stack[-1][2]) or tag == "mjx-container"
        if is_math:
            self.elements.append({"typeset": False, "text": ""})
        if tag == "mjx-container" and self._open_math():
            self.elements[-1]["typeset"] = True
        if tag not in ("br", "img", "meta", "link", "input", "hr", "wbr"):
            self._stack.append((tag, is_math, in_mjx))

    def handle_endtag(self, tag):
        while self._stack:
            t, _, _ = self._stack.pop()
            if t == tag:
                break

    def handle_data(self, data):
        if self._open_math() and not (self._stack and self._stack[-1][2]):
            self.elements[-1]["text"] += data

    def _open_math(self) -> bool:
        return any(is_math for _, is_math, _ in self._stack)


def scan(text: str) -> MathScan:
    s = MathScan()
    s.feed(text)
    return s


def find_browser(name: str | None) -> str | None:
    for candidate in [name] if name else BROWSERS:
        path = shutil.which(candidate)
        if path:
            return path
    return None


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def rendered_dom(browser: str, url: str, timeout: float = 60.0) -> str:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
           "--virtual-time-budget=15000", "--run-all-compositor-stages-before-draw", "--dump-dom", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(f"{browser} failed on {url} (exit {out.returncode}): {out.stderr[-500:]}")
    return out.stdout


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("site", type=Path)
    ap.add_argument("--browser", default=None, help=f"browser executable (default: the first of {BROWSERS})")
    ap.add_argument("--pages", type=int, default=0, help="check at most this many pages with math (0: all)")
    args = ap.parse_args(argv)
    site = args.site.resolve()
    pages = sorted(p for p in site.rglob("*.html") if "arithmatex" in p.read_text(encoding="utf-8"))
    if not pages:
        print(f"check_math: no page of {site} has mathematics (arithmatex); nothing was built?")
        return 1
    problems = []
    # 1. MathJax comes from the site itself
    if not (site / LOCAL_MATHJAX).is_file():
        problems.append(f"{LOCAL_MATHJAX} is missing from the site (the mathjax_offline hook did not run)")
    for page in pages:
        scripts = scan(page.read_text(encoding="utf-8")).scripts
        remote = [s for s in scripts if "mathjax" in s.lower() and re.match(r"(https?:)?//", s)]
        if remote or not any(s.endswith(LOCAL_MATHJAX) for s in scripts):
            problems.append(f"{page.relative_to(site)}: MathJax is not loaded from the site (scripts {scripts})")
    # 2. typeset in a headless browser with no network
    browser = find_browser(args.browser)
    if browser is None:
        print(f"check_math: no browser found (tried {args.browser or BROWSERS}); apt-get install chromium")
        return 2
    server, port = serve(site)
    checked = pages if args.pages <= 0 else pages[: args.pages]
    n_math = 0
    try:
        for page in checked:
            rel = page.relative_to(site).as_posix()
            dom = scan(rendered_dom(browser, f"http://127.0.0.1:{port}/{rel}"))
            if not dom.elements:
                problems.append(f"{rel}: no arithmatex element in the rendered page")
            untypeset = [e for e in dom.elements if not e["typeset"]]
            raw = [e["text"].strip()[:60] for e in dom.elements if RAW.search(e["text"])]
            n_math += len(dom.elements)
            if untypeset:
                problems.append(f"{rel}: {len(untypeset)} of {len(dom.elements)} math elements not typeset")
            if raw:
                problems.append(f"{rel}: raw delimiters remain, e.g. {raw[:3]}")
    finally:
        server.shutdown()
    if problems:
        print("check_math: FAILED\n  " + "\n  ".join(problems[:20]))
        return 1
    print(f"check_math: {len(checked)} pages, {n_math} math elements typeset offline by MathJax in {Path(browser).name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
