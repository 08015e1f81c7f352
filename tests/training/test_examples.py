"""Every training example runs end to end in its --smoke mode and writes its pictures.

The examples run as subprocesses (one intra-op thread each, a few at a time), so their
interpreter start-ups overlap; each test then checks one example's exit status and outputs.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# The examples import the scoresde of this tree, not whichever one is installed.
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg",
           PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
OUTPUTS = {
    "train_2d.py": ["samples.png", "loss.png"],
    "train_digits.py": ["samples.png", "loss.png"],
    "conditional_digits.py": ["cfg.png", "loss.png"],
    "vp_sde.py": ["samples.png", "loss.png"],
    "subvp_sde.py": ["samples.png", "loss.png"],
    "ve_sde.py": ["samples.png", "loss.png"],
    "rectified_flow.py": ["samples.png", "loss.png"],
    "edm.py": ["samples.png", "loss.png"],
}
PNG = b"\x89PNG\r\n\x1a\n"


TIMEOUT = 300  # seconds per smoke run, counted from its own start
PARALLEL = max(2, min(4, os.cpu_count() or 2))  # runs at a time: start-ups overlap, CPUs are not oversubscribed


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    pending, running, results = list(OUTPUTS), {}, {}
    while pending or running:
        while pending and len(running) < PARALLEL:
            name = pending.pop(0)
            out = root / name.removesuffix(".py")
            log = open(root / f"{name}.log", "wb")
            cmd = [sys.executable, str(EXAMPLES / name), "--smoke", "--device", "cpu", "--out", str(out)]
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV)
            running[name] = (proc, out, log, time.monotonic())
        for name, (proc, out, log, start) in list(running.items()):
            if proc.poll() is None and time.monotonic() - start > TIMEOUT:
                proc.kill()
                proc.wait()
            if proc.poll() is not None:
                log.close()
                text = (root / f"{name}.log").read_bytes().decode(errors="replace")
                results[name] = (proc.returncode, text, out)
                del running[name]
        time.sleep(0.1)
    return results


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_example_help(name):
    """Every example documents its options (--help exits 0 and lists --device, --steps, --out, --smoke)."""
    cmd = [sys.executable, str(EXAMPLES / name), "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=ENV)
    assert out.returncode == 0, out.stderr[-2000:]
    for option in ("--device", "--steps", "--out", "--smoke"):
        assert option in out.stdout, f"{name} --help does not list {option}"


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_example_smoke_run(runs, name):
    code, log, out = runs[name]
    assert code == 0, log[-3000:]
    for file in OUTPUTS[name]:
        path = out / file
        assert path.is_file(), f"{name} did not write {file}:\n{log[-2000:]}"
        assert path.read_bytes()[:8] == PNG
