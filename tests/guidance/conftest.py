r"""Fixtures for the guidance tests: labelled Gaussian mixtures under every SDE, in float64.

On a mixture whose components carry labels, every term of guidance is closed-form: the
noised score, the conditional score (the mixture of one label's components) and the
exact noisy classifier $p_t(y\mid x) = \sum_{k:\ell_k = y} p_t(k\mid x)$.
"""

import torch

from scoresde import GaussianMixture

# One list of SDEs for all tests, and the same float64 default.
from ..core.conftest import SDE_FACTORIES, _float64, make_sde, sde_names  # noqa: F401

#: Six components on a ring, three labels, unequal weights: p(y) = (5, 7, 9) / 21.
LABELS = [0, 1, 2, 0, 1, 2]
WEIGHTS = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def labelled_ring(dim: int = 2) -> GaussianMixture:
    return GaussianMixture.ring(6, radius=3.0, std=0.4, dim=dim, weights=WEIGHTS, labels=LABELS)


def points(seed: int, n: int = 16, dim: int = 2, scale: float = 3.0) -> torch.Tensor:
    """Query points spread over the data and its surroundings (drawn from a seed hypothesis picks)."""
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, dim, generator=g, dtype=torch.float64)
