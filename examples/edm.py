"""EDM's process ($\\alpha_t = 1$, $\\sigma_t = t$, $dx = \\sqrt{2t}\\,dw$) on scikit-learn's digits.

`EDM()` is Karras et al.'s VE process whose time is its noise level, on
$[0, \\sigma_{\\max} = 80]$. A U-Net predicting the clean digit ($D_\\theta$, with the input
scaled by EDM's $c_{\\text{in}} = 1/\\sqrt{\\sigma^2 + \\sigma_{\\text{data}}^2}$) is trained
with EDM's loss weight $\\lambda(\\sigma) = (\\sigma^2 + \\sigma_{\\text{data}}^2)/(\\sigma\\sigma_{\\text{data}})^2$
on $\\|D_\\theta - x_0\\|^2$, with $\\sigma$ drawn log-uniformly (the package's log-SNR
importance sampling; EDM's own log-normal proposal and preconditioning are training
recipes of their own). Sampling stops at $\\sigma_{\\min} = 0.002$: EDM's Heun sampler on its
$\\rho = 7$ grid (18 levels, 35 evaluations, as in the paper), its stochastic variant
($S_{\\text{churn}}$), DPM-Solver++(2M) and the reverse SDE. Run (a few minutes on a laptop CPU):

    python examples/edm.py --out out/edm

It writes `samples.png` and `loss.png`.

Reference: Karras, Aittala, Aila, Laine, *Elucidating the Design Space of Diffusion-Based
Generative Models*, NeurIPS 2022, table 1 and Algorithms 1-2.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import _common as C  # noqa: E402
from scoresde import EDM, DPMSolverPP, DSMLoss, EDMHeun, ReverseSDESampler  # noqa: E402
from scoresde.time_grids import KarrasGrid  # noqa: E402

SIGMA_DATA = 0.5  # EDM's sigma_data; the digits in [-1, 1] have per-pixel std about 0.6


def edm_weight(t: torch.Tensor) -> torch.Tensor:
    r"""Score-space weighting that, with log-uniform sigma (importance weights proportional to t),
    puts EDM's lambda(sigma) on the x0 error: lambda_score / w_x0 * iw = c (s^2 + sd^2) / (s sd)^2
    with w_x0 = s^4 and iw proportional to s, so lambda_score is proportional to s (s^2 + sd^2) / sd^2."""
    return t * (t * t + SIGMA_DATA**2) / SIGMA_DATA**2


def main(argv=None) -> dict:
    p = C.parser(__doc__.splitlines()[0], steps=2000, out="out/edm")
    args = p.parse_args(argv)
    sde = EDM(sigma_max=80.0, sigma_min=0.002)
    end = {"t_end": sde.sigma_min}
    samplers = {
        "EDM Heun, 18 levels (35 NFE)": (EDMHeun(), 17, end),
        "EDM stochastic Heun, churn 40": (EDMHeun(churn=40.0), 17, end),
        "DPM-Solver++(2M), 20 steps": (DPMSolverPP(order=2), 20, end),
        "reverse SDE, 500 steps (rho = 7 grid)": (ReverseSDESampler(), 500, {**end, "grid": KarrasGrid(7.0)}),
    }
    loss = DSMLoss(sde, weighting=edm_weight, importance_sampling=True, t_eps=sde.sigma_min / 4)
    return C.run_digits(args, sde, "EDM", loss, "x0", samplers)


if __name__ == "__main__":
    main()
