"""Shared setup of the sampler tests: float64, one thread, the SDEs and exact-score targets."""

import pytest
import torch

from scoresde import GaussianMixture

from ..sde_zoo import sdes

SDES = sdes("sampling")


@pytest.fixture(autouse=True, scope="module")
def _float64_single_thread():
    """float64 for exact comparisons; one intra-op thread: on shared CI machines with few cores,
    threads only add contention for tensors of this size (module scope, so that module-scoped
    fixtures run under it too)."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


@pytest.fixture(params=sorted(SDES))
def sde(request):
    return SDES[request.param]()


def ring(dim: int = 2) -> GaussianMixture:
    """Eight unequal-weight components on a circle of radius 4, std 0.25 (well separated: 12 std apart)."""
    return GaussianMixture.ring(8, radius=4.0, std=0.25, dim=dim, weights=[1, 2, 1, 3, 1, 2, 1, 3])
