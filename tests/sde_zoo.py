"""One list of SDEs for the whole suite: a new SDE is under every test folder's contract by one line.

Each entry names the SDE, builds it, and says which folders run it: `core` (the SDE's own
identities, moment equations, chains and guidance algebra, in float64, with parameters that
exercise the edge cases), `sampling` (every sampler, final step, likelihood, imputation:
one representative per forward process, with a short VE range so that few steps suffice) and
`training` (the losses and recipes, whose closed forms are cheapest on a short VE range).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from scoresde import EDM, VESDE, VPSDE, DDPMSchedule, LinearSDE, RectifiedFlow, SubVPSDE


def _trig_interpolant():
    # alpha = cos(pi t / 2), sigma = sin(pi t / 2) (a VP path, Nichol & Dhariwal's cosine without
    # its offset), through LinearSDE's autograd derivatives and bisection inverse.
    return LinearSDE(lambda t: torch.cos(0.5 * math.pi * t), lambda t: torch.sin(0.5 * math.pi * t), T=0.9, prior_std=1.0)


# (name, factory, the folders that run it)
ENTRIES: list[tuple[str, Callable[[], object], str]] = [
    ("vp", lambda: VPSDE(), "core sampling training"),
    ("vp-cosine", lambda: VPSDE(schedule="cosine"), "core"),
    ("vp-T2", lambda: VPSDE(beta_min=0.5, beta_max=12.0, T=2.0), "core"),
    ("vp-interpolated", lambda: DDPMSchedule.cosine(200).to_sde(), "core"),
    ("subvp", lambda: SubVPSDE(), "core sampling training"),
    ("subvp-cosine", lambda: SubVPSDE(schedule="cosine"), "core"),
    ("ve", lambda: VESDE(), "core"),
    ("ve", lambda: VESDE(sigma_min=0.01, sigma_max=20.0), "sampling"),
    ("ve", lambda: VESDE(sigma_min=0.01, sigma_max=5.0), "training"),
    ("ve-small", lambda: VESDE(sigma_min=0.05, sigma_max=3.0, T=0.5), "core"),
    # Horizons kept away from rectified flow's singular end so that the Euler-Maruyama checks
    # of the core tests stay in their asymptotic regime (f = -1/(1-t)); the default T = 0.999
    # is tested in tests/core/test_linear_sde.py.
    ("rectified-flow", lambda: RectifiedFlow(T=0.9), "core"),
    ("rectified-flow", lambda: RectifiedFlow(), "sampling training"),
    ("edm", lambda: EDM(sigma_max=5.0), "core training"),
    ("edm", lambda: EDM(sigma_max=20.0), "sampling"),
    ("linear-trig", _trig_interpolant, "core"),
]


def sdes(use: str) -> dict[str, Callable[[], object]]:
    """The factories of the SDEs that the folder `use` ("core", "sampling", "training") runs, by name."""
    chosen = {name: make for name, make, uses in ENTRIES if use in uses.split()}
    if not chosen:
        raise ValueError(f"use: expected 'core', 'sampling' or 'training', got {use!r}")
    return chosen
