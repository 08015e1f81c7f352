"""Guidance of flow-matching networks: predictions of the velocity u = alpha' x0 + sigma' eps.

The velocity is affine in the score with a condition-free offset, so classifier-free guidance
of velocities is guidance of scores: on a labelled mixture (exact scores) both give the same
guided score to rounding, with and without the rescale, on the VP SDE and rectified flow.
"""

import pytest
import torch

from scoresde import RectifiedFlow, VPSDE, guided_score
from scoresde import flow

from .conftest import labelled_ring, points


def _velocity(score, sde):
    def u(x, t):
        alpha, sigma = sde.marginal(t)
        d_alpha, d_sigma = flow.marginal_derivatives(sde, t)
        return flow.to_flow(score(x, t), x, alpha, sigma, d_alpha, d_sigma, source="score")

    return u


@pytest.mark.parametrize("make", [VPSDE, RectifiedFlow], ids=["vp", "rectified-flow"])
@pytest.mark.parametrize("rescale", [0.0, 0.7])
def test_flow_guidance_is_score_guidance(make, rescale):
    sde = make()
    mix = labelled_ring(dim=3)
    p = mix.diffused(sde)
    p1 = p.conditional(1)
    x = points(0, n=16, dim=3)
    for t in (0.2, 0.6, 0.9):
        tt = torch.full((16,), t, dtype=torch.float64)
        by_score = guided_score(p.score, p1.score, 3.0, sde=sde, rescale=rescale)(x, tt)
        by_flow = guided_score(_velocity(p.score, sde), _velocity(p1.score, sde), 3.0, sde=sde,
                               prediction="flow", rescale=rescale)(x, tt)
        torch.testing.assert_close(by_flow, by_score, rtol=1e-9, atol=1e-9)


def test_flow_prediction_needs_the_sde():
    with pytest.raises(ValueError, match="sde: needed to convert prediction='flow' to a score"):
        guided_score(lambda x, t: x, lambda x, t: x, 2.0, prediction="flow")
