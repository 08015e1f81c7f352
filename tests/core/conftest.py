"""Fixtures and strategies for the core tests: every SDE, in float64."""

import pytest
import torch
from hypothesis import strategies as st

import math

from scoresde import EDM, VESDE, VPSDE, DDPMSchedule, LinearSDE, RectifiedFlow, SubVPSDE


def _trig_interpolant():
    # alpha = cos(pi t / 2), sigma = sin(pi t / 2) (a VP path, Nichol & Dhariwal's cosine without
    # its offset), through LinearSDE's autograd derivatives and bisection inverse.
    return LinearSDE(lambda t: torch.cos(0.5 * math.pi * t), lambda t: torch.sin(0.5 * math.pi * t), T=0.9, prior_std=1.0)


SDE_FACTORIES = {
    "vp": lambda: VPSDE(),
    "vp-cosine": lambda: VPSDE(schedule="cosine"),
    "vp-T2": lambda: VPSDE(beta_min=0.5, beta_max=12.0, T=2.0),
    "vp-interpolated": lambda: DDPMSchedule.cosine(200).to_sde(),
    "subvp": lambda: SubVPSDE(),
    "subvp-cosine": lambda: SubVPSDE(schedule="cosine"),
    "ve": lambda: VESDE(),
    "ve-small": lambda: VESDE(sigma_min=0.05, sigma_max=3.0, T=0.5),
    # Horizons kept away from rectified flow's singular end so that the Euler-Maruyama
    # checks below stay in their asymptotic regime (f = -1/(1-t)); the default T = 0.999
    # is tested in test_linear_sde.py.
    "rectified-flow": lambda: RectifiedFlow(T=0.9),
    "edm": lambda: EDM(sigma_max=5.0),
    "linear-trig": _trig_interpolant,
}


@pytest.fixture(params=sorted(SDE_FACTORIES))
def sde(request):
    return SDE_FACTORIES[request.param]()


sde_names = st.sampled_from(sorted(SDE_FACTORIES))


def make_sde(name):
    return SDE_FACTORIES[name]()


@pytest.fixture(autouse=True)
def _float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
