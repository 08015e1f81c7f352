"""Rectified flow (the straight interpolant $x_t = (1-t)x_0 + t\\varepsilon$) on scikit-learn's digits.

`RectifiedFlow()` is the linear SDE with $\\alpha_t = 1 - t$, $\\sigma_t = t$ on
$[0, 0.999]$ (Liu et al.'s code stops $10^{-3}$ short of the singular end, where
$\\alpha = 0$; sampling starts there from $\\mathcal N(0, I)$). Its probability-flow velocity
is the flow-matching target $u = \\varepsilon - x_0$.

Training is flow matching, $\\mathbb E\\,\\|\\hat u(x_t, t) - (\\varepsilon - x_0)\\|^2$ with $t$
uniform, written with the package's denoising loss: the network predicts
$v = \\alpha_t\\varepsilon - \\sigma_t x_0$ (`prediction="v"`), which for this path is
$(1-2t)\\,x_t + ((1-t)^2 + t^2)\\,u$, and `DSMLoss(weighting=flow_matching_weight)` with
$\\lambda(t) = \\sigma_t^2/\\alpha_t^2 = t^2/(1-t)^2$ in score space is exactly the
flow-matching loss (score error $\\times\\,t^2/(1-t)^2 = $ velocity error). Sampling: Liu
et al.'s Euler steps on the flow (`ProbabilityFlowSampler(solvers.Euler())`, uniform in $t$),
Heun, DPM-Solver++(2M) and the reverse SDE. Run (a few minutes on a laptop CPU):

    python examples/rectified_flow.py --out out/rectified_flow

It writes `samples.png` and `loss.png`.

References: Liu, Gong, Liu, *Flow Straight and Fast*, ICLR 2023; Lipman et al., *Flow
Matching for Generative Modeling*, ICLR 2023.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import solvers  # noqa: E402
import torch  # noqa: E402

import _common as C  # noqa: E402
from scoresde import DPMSolverPP, DSMLoss, RectifiedFlow  # noqa: E402
from scoresde.samplers import ProbabilityFlowSampler, ReverseSDESampler  # noqa: E402
from scoresde.time_grids import UniformLogSNR  # noqa: E402


def flow_matching_weight(t: torch.Tensor) -> torch.Tensor:
    """lambda(t) = t^2 / (1 - t)^2: the score-space weighting whose loss is the flow-matching loss on 1 - t, t."""
    return (t / (1.0 - t)) ** 2


def main(argv=None) -> dict:
    p = C.parser(__doc__.splitlines()[0], steps=2000, out="out/rectified_flow")
    args = p.parse_args(argv)
    sde = RectifiedFlow()
    samplers = {
        "Euler on the flow (Liu et al.), 50 steps": (ProbabilityFlowSampler(solvers.Euler()), 50, {}),
        "Heun on the flow, 25 steps": (ProbabilityFlowSampler(solvers.Heun()), 25, {}),
        "DPM-Solver++(2M), 20 steps": (DPMSolverPP(order=2), 20, {}),
        # f = -1/(1-t) is stiff near T: the reverse SDE steps evenly in log-SNR, short there
        "reverse SDE, 500 steps (log-SNR grid)": (ReverseSDESampler(), 500, {"grid": UniformLogSNR()}),
    }
    return C.run_digits(args, sde, "rectified flow", DSMLoss(sde, weighting=flow_matching_weight), "v", samplers)


if __name__ == "__main__":
    main()
