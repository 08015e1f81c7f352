"""Fixtures and strategies for the core tests: every SDE, in float64."""

import pytest
import torch
from hypothesis import strategies as st

from ..sde_zoo import sdes

SDE_FACTORIES = sdes("core")


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
