"""The sub-VP SDE on scikit-learn's 8x8 digits, sampled four ways.

$dx = -\\tfrac12\\beta(t)x\\,dt + \\sqrt{\\beta(t)(1 - e^{-2\\int_0^t\\beta})}\\,dw$: the VP
SDE's mean with a smaller variance, $\\sigma_t = 1 - \\alpha_t^2$ (Song et al. 2021, eq. 12;
it gave their best likelihoods). A U-Net predicting the noise is trained with the
continuous-time eps-loss and sampled with the reverse SDE (Euler-Maruyama),
predictor-corrector (Langevin corrector), the probability-flow ODE (Heun) and
DPM-Solver++(3M). Run (a few minutes on a laptop CPU):

    python examples/subvp_sde.py --out out/subvp_sde

It writes `samples.png` and `loss.png`.

Reference: Song et al., *Score-Based Generative Modeling through Stochastic Differential
Equations*, ICLR 2021, section 3.4.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from scoresde import DPMSolverPP, DSMLoss, LangevinCorrector, PredictorCorrector, SubVPSDE  # noqa: E402
from scoresde.samplers import ProbabilityFlowSampler, ReverseSDESampler  # noqa: E402


def main(argv=None) -> dict:
    p = C.parser(__doc__.splitlines()[0], steps=2000, out="out/subvp_sde")
    args = p.parse_args(argv)
    sde = SubVPSDE(beta_min=0.1, beta_max=20.0)
    samplers = {
        "reverse SDE (Euler-Maruyama), 500 steps": (ReverseSDESampler(), 500, {}),
        "predictor-corrector, 250 steps": (PredictorCorrector(corrector=LangevinCorrector(norms="noise")), 250, {}),
        "probability flow (Heun), 50 steps": (ProbabilityFlowSampler(), 50, {}),
        "DPM-Solver++(3M), 20 steps": (DPMSolverPP(order=3), 20, {}),
    }
    return C.run_digits(args, sde, "sub-VP SDE", DSMLoss(), "eps", samplers)


if __name__ == "__main__":
    main()
