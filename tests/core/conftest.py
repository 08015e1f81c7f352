"""Fixtures and strategies for the core tests: every SDE, in float64."""

import pytest
import torch
from hypothesis import strategies as st

from scoresde import VESDE, VPSDE, DDPMSchedule, SubVPSDE

SDE_FACTORIES = {
    "vp": lambda: VPSDE(),
    "vp-cosine": lambda: VPSDE(schedule="cosine"),
    "vp-T2": lambda: VPSDE(beta_min=0.5, beta_max=12.0, T=2.0),
    "vp-interpolated": lambda: DDPMSchedule.cosine(200).to_sde(),
    "subvp": lambda: SubVPSDE(),
    "subvp-cosine": lambda: SubVPSDE(schedule="cosine"),
    "ve": lambda: VESDE(),
    "ve-small": lambda: VESDE(sigma_min=0.05, sigma_max=3.0, T=0.5),
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
