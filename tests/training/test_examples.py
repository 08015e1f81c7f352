"""Every training example runs end to end in its --smoke mode and writes its pictures.

The examples are launched together as subprocesses (one intra-op thread each), so their
interpreter start-ups overlap; each test then checks one example's exit status and outputs.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
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


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    procs = {}
    for name in OUTPUTS:
        out = root / name.removesuffix(".py")
        cmd = [sys.executable, str(EXAMPLES / name), "--smoke", "--device", "cpu", "--out", str(out)]
        procs[name] = (subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env), out)
    results = {}
    for name, (proc, out) in procs.items():
        try:
            log, _ = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            log, _ = proc.communicate()
        results[name] = (proc.returncode, log.decode(errors="replace"), out)
    return results


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_example_help(name):
    """Every example documents its options (--help exits 0 and lists --device, --steps, --out, --smoke)."""
    cmd = [sys.executable, str(EXAMPLES / name), "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
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
